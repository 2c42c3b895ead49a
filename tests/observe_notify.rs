//! sd_notify through a fake NOTIFY_SOCKET (a datagram socket bound in a temp
//! folder, or an abstract one): the exact datagrams, compared with what
//! systemd's own `systemd-notify` sends; the watchdog interval from
//! WATCHDOG_USEC / WATCHDOG_PID.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use edgeseg::observe::notify::watchdog_interval_from;
use edgeseg::observe::{BuildAndModelInfo, DaemonState, Notifier, Observer};

use crate::observe_http::run_timeout;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).expect("a datagram within the timeout");
    String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram")
}

fn env_with(socket: &str) -> impl Fn(&str) -> Option<OsString> {
    let socket = socket.to_string();
    move |k| (k == "NOTIFY_SOCKET").then(|| OsString::from(&socket))
}

fn bound() -> (tempfile::TempDir, UnixDatagram, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the fake NOTIFY_SOCKET");
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    (dir, sock, path.to_str().expect("UTF-8 path").to_string())
}

#[test]
fn observer_sends_the_exact_datagrams() {
    let (_dir, sock, path) = bound();
    let notifier = Notifier::from_lookup(env_with(&path));
    assert!(notifier.is_enabled());
    let obs = Observer::with_notifier(BuildAndModelInfo::this_build("m", "1", "00", "cpu"), notifier);

    obs.set_status_line("idle");
    assert_eq!(recv(&sock), "STATUS=idle");
    obs.notify_ready();
    assert_eq!(recv(&sock), "READY=1\nSTATUS=idle");
    obs.notify_watchdog();
    assert_eq!(recv(&sock), "WATCHDOG=1");
    obs.set_state(DaemonState::Running);
    obs.set_status_line("study 3 of 5: inference fold 2/5");
    assert_eq!(recv(&sock), "STATUS=study 3 of 5: inference fold 2/5");
    // A newline cannot smuggle another assignment in.
    obs.set_status_line("bad\nREADY=1\0x");
    assert_eq!(recv(&sock), "STATUS=bad READY=1 x");
    obs.set_status_line(&"é".repeat(1000));
    let long = recv(&sock);
    assert!(long.len() <= "STATUS=".len() + 400 && long.starts_with("STATUS=éé"), "{}", long.len());
    obs.notify_stopping();
    assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=stopping");
    assert_eq!(obs.state(), DaemonState::Stopping);
}

#[test]
fn same_datagram_as_systemd_notify() {
    // systemd's own client, as the peer: `systemd-notify --no-block --ready --status=idle`
    // (--no-block: no BARRIER=1 round trip, which needs a real manager).
    let (_dir, sock, path) = bound();
    let out = run_timeout(
        Command::new("systemd-notify").args(["--no-block", "--ready", "--status=idle"]).env("NOTIFY_SOCKET", &path),
        None,
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs = recv(&sock);

    let obs = Observer::with_notifier(BuildAndModelInfo::default(), Notifier::for_address(&path).unwrap());
    obs.set_status_line("idle");
    assert_eq!(recv(&sock), "STATUS=idle");
    obs.notify_ready();
    assert_eq!(recv(&sock), theirs, "systemd-notify sent {theirs:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_socket_names_work() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!("edgeseg-test-notify-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = Notifier::from_lookup(env_with(&format!("@{name}")));
    assert!(n.send("WATCHDOG=1"));
    assert_eq!(recv(&sock), "WATCHDOG=1");
}

#[test]
fn no_or_unusable_socket_disables_quietly() {
    assert!(!Notifier::from_lookup(|_| None).is_enabled());
    assert!(!Notifier::from_lookup(env_with("")).is_enabled());
    assert!(!Notifier::from_lookup(env_with("relative/sock")).is_enabled());
    assert!(!Notifier::from_lookup(env_with("vsock:2:1234")).is_enabled());
    assert!(!Notifier::disabled().send("READY=1"));
    // A socket path nobody listens on: the send fails, reported as not sent, no panic.
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::for_address(dir.path().join("nobody").to_str().unwrap()).unwrap();
    assert!(n.is_enabled());
    assert!(!n.send("READY=1"));
    let obs = Observer::with_notifier(BuildAndModelInfo::default(), n);
    obs.notify_ready();
    obs.notify_watchdog();
}

#[test]
fn watchdog_interval_from_the_environment() {
    let env = |usec: Option<&str>, pid: Option<&str>| {
        let usec = usec.map(OsString::from);
        let pid = pid.map(OsString::from);
        move |k: &str| match k {
            "WATCHDOG_USEC" => usec.clone(),
            "WATCHDOG_PID" => pid.clone(),
            _ => None,
        }
    };
    assert_eq!(watchdog_interval_from(env(Some("30000000"), Some("4242")), 4242), Some(Duration::from_secs(30)));
    assert_eq!(watchdog_interval_from(env(Some("30000000"), None), 4242), Some(Duration::from_secs(30)));
    assert_eq!(watchdog_interval_from(env(Some("30000000"), Some("1")), 4242), None, "another process's watchdog");
    assert_eq!(watchdog_interval_from(env(Some("0"), None), 4242), None);
    assert_eq!(watchdog_interval_from(env(Some("soon"), None), 4242), None);
    assert_eq!(watchdog_interval_from(env(None, Some("4242")), 4242), None);
}

#[test]
fn journal_stream_is_matched_by_device_and_inode() {
    use edgeseg::observe::logging::journal_stream_matches;
    assert!(journal_stream_matches("8:1234", 8, 1234));
    assert!(journal_stream_matches("8:1234\n", 8, 1234));
    assert!(!journal_stream_matches("8:1235", 8, 1234));
    assert!(!journal_stream_matches("9:1234", 8, 1234));
    assert!(!journal_stream_matches("", 8, 1234));
    assert!(!journal_stream_matches("8", 8, 1234));
    assert!(!journal_stream_matches("x:y", 8, 1234));
}

#[test]
fn logs_go_to_the_journal_only_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let journald = std::path::Path::new("/run/systemd/journal/socket").exists();
    // stderr is a file whose device and inode JOURNAL_STREAM names (as systemd
    // would for its journal socket), or some other stream.
    for matching in [true, false] {
        let path = dir.path().join(format!("stderr-{matching}"));
        let file = std::fs::File::create(&path).unwrap();
        let m = file.metadata().unwrap();
        let stream = if matching { format!("{}:{}", m.dev(), m.ino()) } else { format!("{}:{}", m.dev(), m.ino() + 1) };
        let status = Command::new(env!("CARGO_BIN_EXE_edgeseg"))
            .args(["status", "--address", "unix:path=/nonexistent/edgeseg-bus"])
            .env("JOURNAL_STREAM", &stream)
            .env("EDGESEG_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
        let err = std::fs::read_to_string(&path).unwrap();
        assert!(err.contains("edgeseg: error:"), "{err}");
        let fell_back = err.contains("journal socket unreachable");
        if matching && !journald {
            assert!(fell_back, "{err}");
        } else {
            assert!(!fell_back, "{err}");
        }
        let debug_on_stderr = err.contains("reading the daemon's properties");
        assert_eq!(debug_on_stderr, !(matching && journald), "{err}");
    }
}
