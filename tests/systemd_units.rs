//! The systemd and D-Bus files under `systemd/`, judged by systemd's own
//! tools: `systemd-analyze verify` accepts the unit, `systemd-analyze security
//! --offline=true` scores it at most 1.5, the D-Bus policy is well-formed XML
//! of the busconfig DTD's shape, and the packaged configuration passes
//! `edgeseg check-config`.

use std::path::PathBuf;
use std::process::Command;

use crate::util::{edgeseg, root, s, text};

fn unit_with_binary(dir: &std::path::Path) -> PathBuf {
    // verify checks that ExecStart= binaries exist: point them at the built one.
    let unit = std::fs::read_to_string(root().join("systemd/edgeseg.service")).expect("unit");
    let unit = unit.replace("/usr/bin/edgeseg", env!("CARGO_BIN_EXE_edgeseg"));
    let p = dir.join("edgeseg.service");
    std::fs::write(&p, unit).expect("write unit");
    p
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    assert!(have("systemd-analyze"), "systemd-analyze missing (Debian package systemd)");
    let d = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_binary(d.path());
    let o = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    let (out, err) = text(&o);
    assert!(o.status.success(), "verify failed:\n{out}\n{err}");
    assert!(!err.contains("edgeseg.service:"), "verify complained:\n{err}");
    // A broken unit is caught (the check can fail).
    let bad = d.path().join("bad.service");
    std::fs::write(&bad, "[Service]\nType=notify\nExecStart=relative/path\nProtectSystem=maybe\n").expect("write");
    let o = Command::new("systemd-analyze").arg("verify").arg(&bad).output().expect("systemd-analyze");
    assert!(!o.status.success() || !o.stderr.is_empty(), "a broken unit must be reported");
}

#[test]
fn unit_security_exposure_at_most_1_5() {
    assert!(have("systemd-analyze"), "systemd-analyze missing (Debian package systemd)");
    let d = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_binary(d.path());
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let (out, err) = text(&o);
    let line = out
        .lines()
        .chain(err.lines())
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line:\n{out}\n{err}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{out}");
    for key in ["Type=notify", "WatchdogSec=", "DevicePolicy=closed", "NoNewPrivileges=yes", "ProtectSystem=strict"] {
        assert!(std::fs::read_to_string(&unit).expect("unit").contains(key), "{key} missing");
    }
}

#[test]
fn dbus_policy_is_well_formed() {
    let p = root().join("systemd/org.edgeseg.Daemon1.conf");
    let xml = std::fs::read_to_string(&p).expect("policy");
    if have("xmllint") {
        let o = Command::new("xmllint").args(["--noout", s(&p)]).output().expect("xmllint");
        assert!(o.status.success(), "{}", text(&o).1);
    }
    // dbus-daemon parses the policy as part of a bus configuration.
    if Command::new("dbus-daemon").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let d = tempfile::tempdir().expect("tempdir");
        let conf = d.path().join("bus.conf");
        let sock = d.path().join("bus.sock");
        std::fs::write(
            &conf,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type>\
                 <listen>unix:path={}</listen><include>{}</include>\
                 <policy context=\"default\"><allow user=\"*\"/></policy></busconfig>",
                sock.display(),
                p.display()
            ),
        )
        .expect("conf");
        let mut child = Command::new("dbus-daemon")
            .args(["--nofork", "--print-address", &format!("--config-file={}", conf.display())])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = child.kill();
        let o = child.wait_with_output().expect("wait");
        assert!(line.starts_with("unix:"), "dbus-daemon refused the policy: {}", String::from_utf8_lossy(&o.stderr));
    }
    for needle in [
        "<allow own=\"org.edgeseg.Daemon1\"/>",
        "policy user=\"edgeseg\"",
        "policy group=\"edgeseg\"",
        "policy group=\"edgeseg-admin\"",
        "policy user=\"root\"",
        "<deny send_destination=\"org.edgeseg.Daemon1\"/>",
        "<deny receive_sender=\"org.edgeseg.Daemon1\" receive_type=\"signal\"/>",
    ] {
        assert!(xml.contains(needle), "{needle} missing");
    }
}

#[test]
fn packaged_config_is_valid_and_lists_every_key() {
    // Offline: this machine has no /usr/lib/edgeseg model or library.
    let p = root().join("systemd/edgeseg.toml");
    let o = edgeseg(&["check-config", "--offline", s(&p)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    // Every key, uncommented, gives the defaults.
    let t = std::fs::read_to_string(&p).expect("toml");
    let uncommented: String = t
        .lines()
        .map(|l| if l.starts_with("#") && l.contains(" = ") && !l.starts_with("# ") { &l[1..] } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let (c, d) = edgeseg::config::check(&p, &uncommented);
    assert!(d.is_empty(), "{d:?}");
    let mut expected = edgeseg::config::Config::default();
    expected.retention.move_to = Some(PathBuf::from("/srv/edgeseg-archive"));
    assert_eq!(c, Some(expected), "the file's commented values are the defaults");
    let tmpfiles = std::fs::read_to_string(root().join("systemd/edgeseg.tmpfiles")).expect("tmpfiles");
    for dir in ["/var/lib/edgeseg ", "/var/lib/edgeseg/results ", "/var/lib/edgeseg/quarantine "] {
        assert!(tmpfiles.lines().any(|l| l.starts_with("d ") && l.contains(dir) && l.contains("0750")), "{dir}");
    }
    let sysusers = std::fs::read_to_string(root().join("systemd/edgeseg.sysusers")).expect("sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u edgeseg ")));
    assert!(sysusers.lines().any(|l| l.starts_with("g edgeseg-admin ")), "sysusers creates edgeseg-admin");
}

#[test]
fn check_config_reports_every_error_with_place() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("bad.toml");
    std::fs::write(
        &p,
        "[watch]\nfolders = [\"relative\"]\nsettle_seconds = 0\nsettle = 5\n\n[metrics]\nlisten = \"nowhere\"\n[dbus]\nbus = \"both\"\n",
    )
    .expect("write");
    let o = edgeseg(&["check-config", s(&p)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let f = s(&p);
    for (line, col, what) in [
        (4, 1, "unknown field `settle`"),
        (7, 10, "listen"),
        (9, 7, "both"),
        (2, 1, "absolute"),
        (3, 1, "greater than 0"),
    ] {
        let prefix = format!("{f}:{line}:{col}: ");
        assert!(err.lines().any(|l| l.starts_with(&prefix) && l.contains(what)), "{prefix}{what} missing in:\n{err}");
    }
    // Syntax error: one, with its place.
    std::fs::write(&p, "[watch]\nsettle_seconds = = 3\n").expect("write");
    let o = edgeseg(&["check-config", s(&p)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.lines().any(|l| l.starts_with(&format!("{f}:2:"))), "{err}");
    // Unreadable file: exit 1 like other unusable arguments.
    let o = edgeseg(&["check-config", "/nonexistent/edgeseg.toml"]);
    assert_eq!(o.status.code(), Some(1));
}

/// `systemctl reload` runs the ExecReload= lines in order and fails at the
/// first that fails: check-config on the file the daemon runs with comes
/// first, so a broken file fails the reload (and never reaches the daemon).
#[test]
fn reload_checks_the_configuration_before_signalling() {
    let unit = std::fs::read_to_string(root().join("systemd/edgeseg.service")).expect("unit");
    let value = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).collect()
    };
    let start = value("ExecStart=");
    let config = start[0].rsplit(' ').next().expect("ExecStart names the configuration").to_string();
    let reload = value("ExecReload=");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert_eq!(reload[0], format!("/usr/bin/edgeseg check-config {config}"), "{reload:?}");
    assert!(reload[1].contains("kill -HUP $MAINPID"), "{reload:?}");

    // The first line's command, run as systemd would: a broken file fails it.
    let d = tempfile::tempdir().expect("tempdir");
    let bad = d.path().join("edgeseg.toml");
    std::fs::write(&bad, "[watch]\nfolders = [\"relative\"]\nsettle_seconds = -1\n").expect("write");
    let o = edgeseg(&["check-config", s(&bad)]);
    assert!(!o.status.success(), "check-config accepted a broken file: {}", text(&o).0);
    let good = root().join("systemd/edgeseg.toml");
    let o = edgeseg(&["check-config", "--offline", s(&good)]);
    assert!(o.status.success(), "the packaged configuration fails check-config: {:?}", text(&o));
}

/// A configuration for this machine: the test model and ONNX Runtime, or
/// the given replacements.
fn machine_config(
    dir: &std::path::Path,
    model: &std::path::Path,
    ort: &std::path::Path,
    watch: &std::path::Path,
) -> PathBuf {
    let p = dir.join("edgeseg.toml");
    std::fs::write(
        &p,
        format!(
            "[watch]\nfolders = [\"{}\"]\n[model]\npath = \"{}\"\nonnxruntime = \"{}\"\nprovider = \"cpu\"\n\
             [output]\nfolder = \"{}\"\n[state]\nfolder = \"{}\"\n[metrics]\nlisten = \"localhost:0\"\n[dbus]\nbus = \"off\"\n",
            watch.display(),
            model.display(),
            ort.display(),
            dir.join("results").display(),
            dir.join("state").display()
        ),
    )
    .expect("config");
    p
}

/// check-config looks at the machine: a missing model folder, a missing
/// ONNX Runtime library and a missing export folder are reported with their
/// places (the folder as a warning: the daemon waits for a share); a model
/// file that differs from model.toml's sha256 is an error; --offline checks
/// syntax and values only.
#[test]
fn check_config_checks_model_library_and_folders() {
    let d = tempfile::tempdir().expect("tempdir");
    let export = d.path().join("export");
    std::fs::create_dir_all(&export).expect("export");
    let model = crate::daemon_util::petct_model();
    let ort = crate::util::ort_lib();
    // Everything there: valid.
    let p = machine_config(d.path(), &model, &ort, &export);
    let o = edgeseg(&["check-config", s(&p)]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.contains("valid"), "{:?}", text(&o));

    // Nothing there.
    let gone = d.path().join("nowhere");
    let p = machine_config(d.path(), &gone.join("model"), &gone.join("libonnxruntime.so"), &gone.join("export"));
    let o = edgeseg(&["check-config", s(&p)]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(!out.contains("valid"), "{out}");
    let f = s(&p);
    assert!(
        err.lines().any(|l| l.starts_with(&format!("{f}:4:1: [model] path:")) && l.contains("no such folder")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with(&format!("{f}:5:1: [model] onnxruntime:")) && l.contains("no such file")),
        "{err}"
    );
    assert!(err.lines().any(|l| l.starts_with(&format!("warning: {f}:2:1: [watch] folders:"))), "{err}");
    let o = edgeseg(&["check-config", "--offline", s(&p)]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.contains("valid (offline"), "{:?}", text(&o));

    // A model file changed after packaging: its sha256 differs.
    let copy = d.path().join("model-copy");
    std::fs::create_dir_all(&copy).expect("copy");
    let mut changed = None;
    for e in std::fs::read_dir(&model).expect("model").flatten() {
        let to = copy.join(e.file_name());
        std::fs::copy(e.path(), &to).expect("copy file");
        if to.extension().is_some_and(|x| x == "json") && changed.is_none() {
            changed = Some(to);
        }
    }
    let changed = changed.expect("a json file in the package");
    let mut bytes = std::fs::read(&changed).expect("read");
    bytes.push(b'\n');
    std::fs::write(&changed, bytes).expect("write");
    let p = machine_config(d.path(), &copy, &ort, &export);
    let o = edgeseg(&["check-config", s(&p)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("[model] path:") && err.contains("sha256"), "{err}");
}

/// The daemon with a missing model folder: one line that names the file
/// once and its cause once (anyhow's chain printed the cause twice).
#[test]
fn a_missing_model_is_reported_once() {
    let d = tempfile::tempdir().expect("tempdir");
    let export = d.path().join("export");
    std::fs::create_dir_all(&export).expect("export");
    let model = d.path().join("no-model");
    let p = machine_config(d.path(), &model, &crate::util::ort_lib(), &export);
    let o = Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .args(["daemon", "--config", s(&p)])
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("daemon");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("edgeseg: error:")).expect("an error line");
    let toml = model.join("model.toml").display().to_string();
    assert_eq!(line.matches(&toml).count(), 1, "{line}");
    assert_eq!(line.matches("No such file or directory").count(), 1, "{line}");
}
