//! The sd_notify protocol, written directly on a Unix datagram socket (what
//! libsystemd's `sd_notify` does): one datagram of newline-separated
//! `KEY=value` assignments to the socket named by `NOTIFY_SOCKET`, a path or an
//! abstract name (`@...`). Done here rather than through the `systemd` crate
//! because that one reads only the process environment (tests would have to
//! change it, which needs `unsafe` in edition 2024), panics on a NUL byte in a
//! status line, and links libsystemd for one `sendmsg`.
//!
//! Sending never fails the caller: a daemon not under systemd has no socket,
//! and a failed send is logged. The socket has a one-second send timeout so a
//! stuck manager cannot hold up the pipeline.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use super::ObserveError;

/// The longest STATUS= text sent (longer lines are cut at a character boundary).
pub const MAX_STATUS_BYTES: usize = 400;

/// Where sd_notify messages go: the socket systemd gave in `NOTIFY_SOCKET`, or
/// nowhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(SocketAddr, UnixDatagram)>,
    describe: String,
}

impl Notifier {
    /// Messages go nowhere (not under systemd).
    pub fn disabled() -> Self {
        Notifier { target: None, describe: "none".to_string() }
    }

    /// From the process environment (`NOTIFY_SOCKET`); disabled when unset or
    /// unusable (logged).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// From an environment given as a lookup function (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        match lookup("NOTIFY_SOCKET") {
            None => Self::disabled(),
            Some(v) if v.is_empty() => Self::disabled(),
            Some(v) => match Self::for_address(&v.to_string_lossy()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "sd_notify disabled: {e}");
                    Self::disabled()
                }
            },
        }
    }

    /// For a `NOTIFY_SOCKET` value: an absolute path or `@abstract-name`.
    pub fn for_address(addr: &str) -> Result<Self, ObserveError> {
        let sock_addr = if let Some(name) = addr.strip_prefix('@') {
            abstract_addr(name.as_bytes())?
        } else if addr.starts_with('/') {
            SocketAddr::from_pathname(Path::new(addr))
                .map_err(|e| ObserveError::Notify(format!("NOTIFY_SOCKET={addr}: {e}")))?
        } else {
            return Err(ObserveError::Notify(format!(
                "NOTIFY_SOCKET={addr}: only a path or an abstract (@) socket is supported"
            )));
        };
        let sock = UnixDatagram::unbound().map_err(|e| ObserveError::Notify(format!("socket: {e}")))?;
        sock.set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| ObserveError::Notify(format!("socket timeout: {e}")))?;
        Ok(Notifier { target: Some((sock_addr, sock)), describe: addr.to_string() })
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`KEY=value` lines); returns whether it was sent.
    /// Errors are logged, never returned: notification is best effort.
    pub fn send(&self, message: &str) -> bool {
        let Some((addr, sock)) = &self.target else {
            return false;
        };
        match sock.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(socket = %self.describe, error = %e, "sd_notify send to {} failed: {e}", self.describe);
                false
            }
        }
    }

    /// `STATUS=line` (made safe by [`sanitize_status`]).
    pub fn status(&self, line: &str) -> bool {
        self.send(&format!("STATUS={}", sanitize_status(line)))
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> Result<SocketAddr, ObserveError> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name).map_err(|e| ObserveError::Notify(format!("abstract socket: {e}")))
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> Result<SocketAddr, ObserveError> {
    Err(ObserveError::Notify("abstract sockets exist only on Linux".to_string()))
}

/// A status line fit for `STATUS=`: one line (a newline would start another
/// assignment, such as `READY=1`), no NUL or control characters, at most
/// [`MAX_STATUS_BYTES`] bytes.
pub fn sanitize_status(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_STATUS_BYTES));
    for c in line.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_STATUS_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`, for
/// this process when `WATCHDOG_PID` is set); `None` when there is no watchdog.
/// Ping at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(|k| std::env::var_os(k), std::process::id())
}

/// [`watchdog_interval`] from an environment given as a lookup function, for
/// the process `pid`.
pub fn watchdog_interval_from(lookup: impl Fn(&str) -> Option<OsString>, pid: u32) -> Option<Duration> {
    let usec: u64 = lookup("WATCHDOG_USEC")?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(p) = lookup("WATCHDOG_PID") {
        let p: u32 = p.to_str()?.trim().parse().ok()?;
        if p != pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}
