//! The shipped D-Bus policy (systemd/org.edgeseg.Daemon1.conf) on a private
//! bus configured as the system bus is (system.conf's default policy, then
//! the policy file), judged as different local users through `setpriv`:
//! `nobody` (no group) may only introspect; a member of `edgeseg` reads the
//! properties (CurrentStudy, the study UID, among them) and receives the
//! signals but may call no method; a member of `edgeseg-admin` and root call
//! every method, the quarantine ones included (`edgeseg quarantine`).
//!
//! Needs root (it creates the groups and two test users when missing, and
//! runs the clients as them); it fails, saying so, when not root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use edgeseg::observe::{BusKind, Command as DaemonCommand, start_dbus};
use edgeseg::quarantine::{Record, RecordKind};

use crate::observe_http::{observer, run_timeout};
use crate::util::root;

const VIEWER: &str = "edgeseg-test-viewer";
const ADMIN: &str = "edgeseg-test-admin";

fn sh(cmd: &str) -> Output {
    run_timeout(Command::new("sh").args(["-c", cmd]), None, Duration::from_secs(30))
}

/// The groups edgeseg and edgeseg-admin and one user in each (created when missing).
fn users() {
    let id = sh("id -u");
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "the D-Bus policy test runs clients as other users: run it as root"
    );
    for (what, cmd) in [
        ("group edgeseg", "getent group edgeseg >/dev/null || groupadd --system edgeseg"),
        ("group edgeseg-admin", "getent group edgeseg-admin >/dev/null || groupadd --system edgeseg-admin"),
        (
            "viewer user",
            "id edgeseg-test-viewer >/dev/null 2>&1 || useradd --system --no-create-home -s /usr/sbin/nologin -G edgeseg edgeseg-test-viewer",
        ),
        (
            "admin user",
            "id edgeseg-test-admin >/dev/null 2>&1 || useradd --system --no-create-home -s /usr/sbin/nologin -G edgeseg-admin edgeseg-test-admin",
        ),
    ] {
        let o = sh(cmd);
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let groups = |u: &str| String::from_utf8_lossy(&sh(&format!("id -nG {u}")).stdout).into_owned();
    assert!(groups(VIEWER).split_whitespace().any(|g| g == "edgeseg"), "{VIEWER} not in edgeseg");
    assert!(!groups(VIEWER).split_whitespace().any(|g| g == "edgeseg-admin"), "{VIEWER} in edgeseg-admin");
    assert!(groups(ADMIN).split_whitespace().any(|g| g == "edgeseg-admin"), "{ADMIN} not in edgeseg-admin");
    assert!(!groups(ADMIN).split_whitespace().any(|g| g == "edgeseg"), "{ADMIN} in edgeseg");
}

/// A dbus-daemon with system.conf's default policy and the shipped policy file.
struct SystemStyleBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl SystemStyleBus {
    fn start() -> SystemStyleBus {
        let dir = tempfile::tempdir().expect("temp dir");
        // Other users reach the socket through this folder.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("the bus folder opened to the test users");
        let conf = dir.path().join("system.conf");
        let policy = root().join("systemd/org.edgeseg.Daemon1.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <!-- /usr/share/dbus-1/system.conf's default policy -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
  <!-- The test's daemon runs as root, not as the edgeseg user: it may own the name here. -->
  <policy user="root"><allow own="org.edgeseg.Daemon1"/></policy>
</busconfig>
"#,
                sock = dir.path().join("bus").display(),
                policy = policy.display()
            ),
        )
        .expect("bus config written");
        let (child, address) = crate::observe_dbus::spawn_dbus_daemon(&conf);
        SystemStyleBus { child, address, _dir: dir }
    }
}

impl Drop for SystemStyleBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program args` as `user` (root: as is), with the user's groups.
fn as_user(user: &str, program: &str) -> Command {
    if user == "root" {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    let uid = String::from_utf8_lossy(&sh(&format!("id -u {user}")).stdout).trim().to_string();
    let gid = String::from_utf8_lossy(&sh(&format!("id -g {user}")).stdout).trim().to_string();
    c.args([format!("--reuid={uid}"), format!("--regid={gid}"), "--init-groups".into(), "--".into(), program.into()]);
    c
}

fn busctl(bus: &SystemStyleBus, user: &str, args: &[&str]) -> Output {
    run_timeout(
        as_user(user, "busctl").arg(format!("--address={}", bus.address)).arg("--timeout=10").args(args),
        None,
        Duration::from_secs(20),
    )
}

const OBJ: [&str; 2] = ["org.edgeseg.Daemon1", "/org/edgeseg/Daemon1"];

fn get(bus: &SystemStyleBus, user: &str, prop: &str) -> Output {
    busctl(bus, user, &["get-property", OBJ[0], OBJ[1], "org.edgeseg.Daemon1", prop])
}

fn call(bus: &SystemStyleBus, user: &str, method: &str, args: &[&str]) -> Output {
    let mut a = vec!["call", OBJ[0], OBJ[1], "org.edgeseg.Daemon1", method];
    a.extend_from_slice(args);
    busctl(bus, user, &a)
}

fn allowed(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{what} refused: {out}{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn denied(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what} allowed: {}", String::from_utf8_lossy(&o.stdout));
    assert!(err.to_lowercase().contains("access denied") || err.contains("AccessDenied"), "{what}: {err}");
}

/// `gdbus monitor` on the daemon's object as `user`.
struct Monitor {
    child: Child,
    lines: Receiver<String>,
}

impl Monitor {
    fn start(bus: &SystemStyleBus, user: &str) -> Monitor {
        let mut child = as_user(user, "gdbus")
            .args(["monitor", "--address", &bus.address, "--dest", OBJ[0], "--object-path", OBJ[1]])
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

    fn wait_for(&self, needle: &str, limit: Duration) -> Option<String> {
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

    /// Stops it; every line it printed that was not read yet.
    fn finish(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.try_iter().collect()
    }
}

fn next(rx: &Receiver<DaemonCommand>) -> DaemonCommand {
    rx.recv_timeout(Duration::from_secs(10)).expect("a command from D-Bus")
}

#[test]
fn shipped_policy_separates_reading_from_control_for_real_users() {
    users();
    let bus = SystemStyleBus::start();
    let (tx, rx) = channel();
    let obs = observer();
    let _handle = start_dbus(BusKind::Address(bus.address.clone()), obs.clone(), tx).unwrap().expect("a handle");
    let uid = "1.2.826.0.1.3680043.8.498.4242";
    obs.set_current_study(Some(uid));
    obs.set_quarantine_records(vec![Record {
        name: "0123456789ab".into(),
        kind: RecordKind::Study,
        since: "2026-12-05T10:00:00Z".into(),
        reason: "3 files could not be read".into(),
        study_uid: Some("1.2.3.4.5".into()),
        files: vec!["/srv/export/a.dcm".into()],
    }]);

    // Anyone: introspection; nothing else.
    let xml = allowed(&busctl(&bus, "nobody", &["--xml-interface", "introspect", OBJ[0], OBJ[1]]), "nobody introspect");
    assert!(xml.contains("name=\"CurrentStudy\"") && xml.contains("name=\"ListQuarantine\""), "{xml}");
    // busctl's table needs the values (GetAll): refused.
    denied(&busctl(&bus, "nobody", &["introspect", OBJ[0], OBJ[1]]), "nobody reading the values");
    for prop in ["CurrentStudy", "State", "QueueDepth"] {
        denied(&get(&bus, "nobody", prop), &format!("nobody reading {prop}"));
    }
    denied(
        &busctl(
            &bus,
            "nobody",
            &["call", OBJ[0], OBJ[1], "org.freedesktop.DBus.Properties", "GetAll", "s", "org.edgeseg.Daemon1"],
        ),
        "nobody GetAll",
    );
    denied(&call(&bus, "nobody", "Pause", &[]), "nobody Pause");
    let o = run_timeout(
        as_user("nobody", env!("CARGO_BIN_EXE_edgeseg")).args(["status", "--address", &bus.address]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("GetAll: access denied") && err.contains("the edgeseg group"), "{err}");
    let o = run_timeout(
        as_user(VIEWER, env!("CARGO_BIN_EXE_edgeseg")).args(["status", "--json", "--address", &bus.address]),
        None,
        Duration::from_secs(30),
    );
    let j: serde_json::Value = serde_json::from_str(&allowed(&o, "viewer edgeseg status")).expect("JSON");
    assert_eq!(j["current_study"], uid);

    // Group edgeseg: reads, never controls.
    let cur = allowed(&get(&bus, VIEWER, "CurrentStudy"), "viewer reading CurrentStudy");
    assert!(cur.contains(uid), "{cur}");
    allowed(&get(&bus, VIEWER, "State"), "viewer reading State");
    for (m, args) in [
        ("Pause", vec![]),
        ("Resume", vec![]),
        ("ReloadConfig", vec![]),
        ("Reprocess", vec!["s", "1.2.3"]),
        ("Enqueue", vec!["s", "/tmp"]),
        ("ListQuarantine", vec![]),
        ("ShowQuarantine", vec!["s", "0123456789ab"]),
        ("RetryQuarantine", vec!["s", "0123456789ab"]),
        ("ClearQuarantine", vec!["s", "0123456789ab"]),
    ] {
        denied(&call(&bus, VIEWER, m, &args), &format!("viewer calling {m}"));
    }

    // Group edgeseg-admin and root: control.
    allowed(&call(&bus, ADMIN, "Pause", &[]), "admin Pause");
    assert_eq!(next(&rx), DaemonCommand::Pause);
    allowed(&call(&bus, "root", "Pause", &[]), "root Pause");
    assert_eq!(next(&rx), DaemonCommand::Pause);
    allowed(&call(&bus, "root", "Resume", &[]), "root Resume");
    assert_eq!(next(&rx), DaemonCommand::Resume);
    let list = allowed(&call(&bus, ADMIN, "ListQuarantine", &[]), "admin ListQuarantine");
    assert!(list.contains("0123456789ab") && list.contains("3 files could not be read"), "{list}");
    allowed(&call(&bus, ADMIN, "RetryQuarantine", &["s", "0123456789ab"]), "admin RetryQuarantine");
    assert_eq!(next(&rx), DaemonCommand::RetryQuarantine("0123456789ab".into()));
    allowed(&get(&bus, ADMIN, "CurrentStudy"), "admin reading CurrentStudy");

    // `edgeseg quarantine` is that client: root lists, shows, clears; a viewer is refused.
    let edgeseg = |user: &str, args: &[&str]| {
        run_timeout(
            as_user(user, env!("CARGO_BIN_EXE_edgeseg")).arg("quarantine").args(args).args(["--address", &bus.address]),
            None,
            Duration::from_secs(30),
        )
    };
    let o = edgeseg("root", &["list"]);
    let out = allowed(&o, "edgeseg quarantine list as root");
    assert!(
        out.contains("0123456789ab") && out.contains("study") && out.contains("3 files could not be read"),
        "{out}"
    );
    let out = allowed(&edgeseg(ADMIN, &["show", "0123456789ab", "--json"]), "edgeseg quarantine show as admin");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["study_uid"], "1.2.3.4.5");
    assert_eq!(j["files"][0], "/srv/export/a.dcm");
    allowed(&edgeseg("root", &["clear", "0123456789ab"]), "edgeseg quarantine clear as root");
    assert_eq!(next(&rx), DaemonCommand::ClearQuarantine("0123456789ab".into()));
    let o = edgeseg("root", &["retry", "file-ffffffffffff"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no quarantine record file-ffffffffffff") && !err.contains("Some("), "{err}");
    assert_eq!(err.matches("no quarantine record").count(), 1, "the cause once: {err}");
    let o = edgeseg(VIEWER, &["list"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ListQuarantine: access denied") && err.contains("edgeseg-admin"), "{err}");
    assert_eq!(err.matches("access denied").count(), 1, "the cause once: {err}");

    // Signals: a viewer receives StudyFinished and PropertiesChanged; nobody neither.
    let outsider = Monitor::start(&bus, "nobody");
    outsider.wait_for("is owned by", Duration::from_secs(10)).expect("nobody's monitor found the daemon");
    let viewer = Monitor::start(&bus, VIEWER);
    viewer.wait_for("is owned by", Duration::from_secs(10)).expect("the viewer's monitor found the daemon");
    // Subscriptions are asynchronous: change QueueDepth until the viewer's
    // monitor (started after nobody's) shows it.
    let mut seen = false;
    for n in 10..60 {
        obs.set_queue_depth(n);
        if viewer.wait_for("PropertiesChanged", Duration::from_millis(300)).is_some() {
            seen = true;
            break;
        }
    }
    assert!(seen, "the viewer receives PropertiesChanged");
    obs.study_finished(uid, "done", Some(Path::new("/var/lib/edgeseg/results/x")));
    let l = viewer.wait_for("StudyFinished", Duration::from_secs(10)).expect("the viewer receives StudyFinished");
    assert!(l.contains(uid), "{l}");
    obs.set_current_study(None);
    viewer.wait_for("'CurrentStudy'", Duration::from_secs(10)).expect("the viewer receives PropertiesChanged");
    // The bus has dealt both signals out to every subscriber by now.
    let seen = outsider.finish();
    assert!(
        !seen.iter().any(|l| l.contains("StudyFinished") || l.contains(uid) || l.contains("PropertiesChanged")),
        "nobody received a signal: {seen:?}"
    );
}
