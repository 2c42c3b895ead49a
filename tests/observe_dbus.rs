//! The D-Bus service on a private `dbus-daemon` started by the test, judged by
//! `busctl` and `gdbus` (systemd's and GLib's clients): introspection, method
//! calls arriving as commands, argument checks, properties, the
//! PropertiesChanged and StudyFinished signals, the name released on drop and
//! not stolen by a second daemon; and `edgeseg status` reading it all back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use edgeseg::observe::{BusKind, Command as DaemonCommand, DaemonState, start_dbus};

use crate::observe_http::{observer, run_timeout};

/// A private message bus; killed on drop.
pub(crate) struct PrivateBus {
    child: Child,
    /// The bus address (unix:path=...).
    pub(crate) address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts a private bus.
    pub(crate) fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().join("bus").display()
            ),
        )
        .expect("bus config written");
        let (child, address) = crate::observe_dbus::spawn_dbus_daemon(&conf);
        PrivateBus { child, address, _dir: dir }
    }
}

/// Starts dbus-daemon with the configuration `conf` and returns it with the
/// address it printed (the private and the system-style test buses).
pub(crate) fn spawn_dbus_daemon(conf: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(l) if !l.trim().is_empty() => (child, l.trim().to_string()),
        other => {
            let _ = child.kill();
            panic!("dbus-daemon printed no address: {other:?}");
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn busctl(bus: &PrivateBus, args: &[&str]) -> Output {
    run_timeout(
        Command::new("busctl").arg(format!("--address={}", bus.address)).arg("--timeout=10").args(args),
        None,
        Duration::from_secs(20),
    )
}

fn gdbus_call(bus: &PrivateBus, method: &str, args: &[&str]) -> Output {
    run_timeout(
        Command::new("gdbus")
            .args(["call", "--address", &bus.address, "--timeout", "10"])
            .args(["--dest", "org.edgeseg.Daemon1", "--object-path", "/org/edgeseg/Daemon1"])
            .args(["--method", &format!("org.edgeseg.Daemon1.{method}")])
            .args(args),
        None,
        Duration::from_secs(20),
    )
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "failed: {out}{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn next(rx: &Receiver<DaemonCommand>) -> DaemonCommand {
    rx.recv_timeout(Duration::from_secs(10)).expect("a command from D-Bus")
}

/// `gdbus monitor` on the daemon's object, its lines on a channel.
pub(crate) struct Monitor {
    child: Child,
    lines: Receiver<String>,
}

impl Monitor {
    /// Starts monitoring the daemon's object.
    pub(crate) fn start(bus: &PrivateBus) -> Monitor {
        let mut child = Command::new("gdbus")
            .args(["monitor", "--address", &bus.address, "--dest", "org.edgeseg.Daemon1"])
            .args(["--object-path", "/org/edgeseg/Daemon1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gdbus monitor starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Waits (at most `limit`) for a line containing `needle`.
    pub(crate) fn wait_for(&self, needle: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon1_on_a_private_bus() {
    let bus = PrivateBus::start();
    let (tx, rx) = channel();
    let obs = observer();
    let handle = start_dbus(BusKind::Address(bus.address.clone()), obs.clone(), tx).unwrap().expect("a handle");
    assert!(handle.unique_name().starts_with(':'));

    // Introspection (busctl).
    let intro = ok(&busctl(&bus, &["introspect", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1"]));
    for member in [
        ".Pause ",
        ".Resume ",
        ".ReloadConfig ",
        ".StudyFinished ",
        ".State ",
        ".QueueDepth ",
        ".CurrentStudy ",
        ".ModelName ",
        ".ModelSha256 ",
        ".Provider ",
    ] {
        assert!(intro.contains(member), "{member} missing:\n{intro}");
    }
    let line = |m: &str| {
        intro.lines().find(|l| l.starts_with(m)).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert!(line(".Reprocess ").starts_with(".Reprocess method s -"), "{}", line(".Reprocess "));
    assert!(line(".Enqueue ").starts_with(".Enqueue method s -"));
    assert!(line(".StudyFinished ").starts_with(".StudyFinished signal sss -"), "{}", line(".StudyFinished "));
    assert!(line(".QueueDepth ").starts_with(".QueueDepth property t"), "{}", line(".QueueDepth "));
    assert!(line(".State ").starts_with(".State property s"));
    assert!(line(".ModelSha256 ").contains("const"), "{}", line(".ModelSha256 "));

    // Methods become commands.
    ok(&busctl(&bus, &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Pause"]));
    assert_eq!(next(&rx), DaemonCommand::Pause);
    ok(&busctl(&bus, &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Resume"]));
    assert_eq!(next(&rx), DaemonCommand::Resume);
    ok(&gdbus_call(&bus, "Reprocess", &["1.2.3"]));
    assert_eq!(next(&rx), DaemonCommand::Reprocess("1.2.3".into()));
    ok(&gdbus_call(&bus, "ReloadConfig", &[]));
    assert_eq!(next(&rx), DaemonCommand::ReloadConfig);
    let folder = tempfile::tempdir().unwrap();
    let folder_s = folder.path().to_str().unwrap();
    ok(&busctl(
        &bus,
        &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Enqueue", "s", folder_s],
    ));
    assert_eq!(next(&rx), DaemonCommand::Enqueue(folder.path().to_path_buf()));

    // Bad arguments: InvalidArgs, and no command.
    for (method, arg) in
        [("Reprocess", "1.2.x"), ("Reprocess", "1..2"), ("Enqueue", "relative/dir"), ("Enqueue", "/no/such/dir")]
    {
        let o = busctl(
            &bus,
            &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", method, "s", arg],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{method}({arg}) accepted");
        assert!(err.contains(arg) || err.contains("not"), "{method}({arg}): {err}");
    }
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a bad call still sent a command");

    // Properties (busctl get-property, gdbus Properties.GetAll).
    obs.set_state(DaemonState::Idle);
    obs.set_status_line("idle");
    obs.set_queue_depth(4);
    obs.set_current_study(Some("1.2.840.99"));
    obs.set_quarantined(2);
    let props = ok(&busctl(
        &bus,
        &[
            "get-property",
            "org.edgeseg.Daemon1",
            "/org/edgeseg/Daemon1",
            "org.edgeseg.Daemon1",
            "State",
            "QueueDepth",
            "Quarantined",
            "CurrentStudy",
            "ModelSha256",
            "Provider",
        ],
    ));
    assert_eq!(
        props.lines().collect::<Vec<_>>(),
        ["s \"idle\"", "t 4", "t 2", "s \"1.2.840.99\"", &format!("s \"{}\"", "ab".repeat(32)), "s \"cpu\""]
    );
    let all = ok(&run_timeout(
        Command::new("gdbus").args(["call", "--address", &bus.address, "--timeout", "10"]).args([
            "--dest",
            "org.edgeseg.Daemon1",
            "--object-path",
            "/org/edgeseg/Daemon1",
            "--method",
            "org.freedesktop.DBus.Properties.GetAll",
            "org.edgeseg.Daemon1",
        ]),
        None,
        Duration::from_secs(20),
    ));
    assert!(all.contains("'ModelName': <'demo-petct'>") && all.contains("'QueueDepth': <uint64 4>"), "{all}");

    // edgeseg status reads the same.
    let st = crate::util::text(&crate::util::edgeseg(&["status", "--address", &bus.address]));
    assert!(st.0.contains("State:         idle") && st.0.contains("Queue depth:   4"), "{st:?}");
    assert!(st.0.contains("Current study: 1.2.840.99") && st.0.contains("Provider:      cpu"), "{st:?}");
    let o = crate::util::edgeseg(&["status", "--json", "--address", &bus.address]);
    assert!(o.status.success(), "{:?}", crate::util::text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "idle");
    assert_eq!(j["queue_depth"], 4);
    assert_eq!(j["quarantined"], 2);
    assert_eq!(j["current_study"], "1.2.840.99");
    assert_eq!(j["model_name"], "demo-petct");
    assert_eq!(j["model_sha256"], "ab".repeat(32));
    assert_eq!(j["status"], "idle");

    // Signals (gdbus monitor): PropertiesChanged, then StudyFinished.
    let mon = Monitor::start(&bus);
    // Subscription is asynchronous: change QueueDepth until the monitor shows it.
    let mut seen = None;
    for n in 10..60 {
        obs.set_queue_depth(n);
        if let Some(l) = mon.wait_for("PropertiesChanged", Duration::from_millis(300)) {
            seen = Some(l);
            break;
        }
    }
    let changed = seen.expect("PropertiesChanged seen by gdbus monitor");
    assert!(changed.contains("'QueueDepth': <uint64 "), "{changed}");
    obs.set_state(DaemonState::Running);
    let l = mon.wait_for("'State'", Duration::from_secs(5)).expect("State change");
    assert!(l.contains("<'running'>"), "{l}");
    obs.set_current_study(None);
    let l = mon.wait_for("'CurrentStudy'", Duration::from_secs(5)).expect("CurrentStudy change");
    assert!(l.contains("'CurrentStudy': <''>"), "{l}");
    obs.set_quarantined(3);
    let l = mon.wait_for("'Quarantined'", Duration::from_secs(5)).expect("Quarantined change");
    assert!(l.contains("'Quarantined': <uint64 3>"), "{l}");
    obs.set_status_line("study 1 of 2: inference fold 3/5");
    let l = mon.wait_for("'Status'", Duration::from_secs(5)).expect("Status change");
    assert!(l.contains("<'study 1 of 2: inference fold 3/5'>"), "{l}");
    obs.study_finished("1.2.840.99", "done", Some(Path::new("/var/lib/edgeseg/results/1.2.840.99")));
    let l = mon.wait_for("StudyFinished", Duration::from_secs(5)).expect("StudyFinished seen by gdbus monitor");
    assert!(l.contains("('1.2.840.99', 'done', '/var/lib/edgeseg/results/1.2.840.99')"), "{l}");
    obs.study_finished("1.2.840.98", "quarantined", None);
    let l = mon.wait_for("StudyFinished", Duration::from_secs(5)).expect("second StudyFinished");
    assert!(l.contains("('1.2.840.98', 'quarantined', '')"), "{l}");
    drop(mon);

    // A second daemon on the same bus does not steal the name.
    let (tx2, _rx2) = channel();
    let err = match start_dbus(BusKind::Address(bus.address.clone()), observer(), tx2) {
        Ok(_) => panic!("a second daemon took the name"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("org.edgeseg.Daemon1"), "{err}");
    let o = busctl(&bus, &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Pause"]);
    ok(&o);
    assert_eq!(next(&rx), DaemonCommand::Pause, "the first daemon still serves");

    // When the service loop is gone, a call fails cleanly.
    drop(rx);
    let o = busctl(&bus, &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Pause"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopping"), "{}", String::from_utf8_lossy(&o.stderr));

    // Dropping the handle releases the name; status then says the daemon is not running.
    drop(handle);
    let names = ok(&busctl(&bus, &["list", "--no-legend"]));
    assert!(!names.contains("org.edgeseg.Daemon1"), "{names}");
    let o = crate::util::edgeseg(&["status", "--address", &bus.address]);
    let (_, err) = crate::util::text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("not running") && err.contains("org.edgeseg.Daemon1"), "{err}");
    // Events after the drop go nowhere, without error.
    obs.set_queue_depth(1);
    obs.study_finished("1.2.3", "done", None);
}

#[test]
fn bus_off_and_unreachable_bus() {
    let (tx, _rx) = channel();
    assert!(start_dbus(BusKind::Off, observer(), tx.clone()).unwrap().is_none());
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:path={}", dir.path().join("nobus").display());
    let err = match start_dbus(BusKind::Address(addr.clone()), observer(), tx) {
        Ok(_) => panic!("connected to no bus"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("D-Bus"), "{err}");
    let o = crate::util::edgeseg(&["status", "--address", &addr]);
    let (_, err) = crate::util::text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("connecting"), "{err}");
    assert_eq!(BusKind::parse("system"), Some(BusKind::System));
    assert_eq!(BusKind::parse("session"), Some(BusKind::Session));
    assert_eq!(BusKind::parse("off"), Some(BusKind::Off));
    assert_eq!(BusKind::parse("unix:path=/x"), Some(BusKind::Address("unix:path=/x".into())));
    assert_eq!(BusKind::parse("sytem"), None);
}

#[test]
fn a_stalled_bus_never_blocks_the_observer() {
    let mut bus = PrivateBus::start();
    let (tx, _rx) = channel();
    let obs = observer();
    let handle = start_dbus(BusKind::Address(bus.address.clone()), obs.clone(), tx).unwrap().expect("a handle");
    // Freeze the bus: the D-Bus thread's writes fill the socket and it stalls.
    let pid = bus.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    for n in 0..20_000u64 {
        obs.set_queue_depth(n);
        obs.study_finished("1.2.3", "done", None);
    }
    let dropped: u64 = obs
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("edgeseg_observe_dropped_events_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0, "40000 events to a frozen bus and none dropped");
    assert!(obs.render().lines().any(|l| l == "edgeseg_studies_total{outcome=\"done\"} 20000"));
    // Thawed, the bus drains and the handle shuts down cleanly.
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    drop(handle);
    let names = ok(&busctl(&bus, &["list", "--no-legend"]));
    assert!(!names.contains("org.edgeseg.Daemon1"), "{names}");
    let _ = bus.child.kill();
}
