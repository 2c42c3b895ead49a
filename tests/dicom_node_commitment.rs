//! Storage Commitment (push model) against Debian's Orthanc, which implements
//! the Storage Commitment SCP (since 1.6) and sends its N-EVENT-REPORT on an
//! association of its own to the requesting modality, looked up by AE title
//! in its modalities: edgeseg's SCP must take it. dcmtk has no Storage
//! Commitment tool, so Orthanc is the only peer here; storescu plays the
//! scanner as in `dicom_node.rs`, whose Orthanc harness this reuses.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, files_under, signal, study, wait_exit, wait_for};
use crate::dicom_node::Orthanc;

const SEG: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const RTSTRUCT: &str = "1.2.840.10008.5.1.4.1.1.481.3";

fn scp_addr_after(d: &Deployment, from: usize) -> SocketAddr {
    wait_for(Duration::from_secs(120), || {
        let text = d.log_text();
        let text = text.get(from..)?;
        let at = text.rfind("listening on ")? + "listening on ".len();
        text[at..].split_whitespace().next()?.parse().ok()
    })
    .unwrap_or_else(|| panic!("no SCP address in the log:\n{}", d.log_text()))
}

fn config(pacs: &Orthanc, timeout_seconds: u32) -> String {
    format!(
        "\n[dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"EDGESEG\"\ntimeout_seconds = 10\n\
         allowed_callers = [{{ ae_title = \"CT01\" }}]\n\
         \n[[destination]]\nname = \"pacs\"\nkind = \"dicom\"\nhost = \"127.0.0.1\"\nport = {}\ncalled_ae = \"ORTHANC\"\n\
         calling_ae = \"EDGESEG\"\nsend = [\"seg\", \"rtstruct\"]\nmax_attempts = 100\nretry_seconds = 1\n\
         storage_commitment = true\ncommitment_timeout_seconds = {timeout_seconds}\n",
        pacs.dicom
    )
}

/// Starts the daemon with a private session bus (for `edgeseg status`).
fn spawn(d: &Deployment, bus: &crate::observe_dbus::PrivateBus) -> std::process::Child {
    let cfg = std::fs::read_to_string(&d.config).expect("config").replace("bus = \"off\"", "bus = \"session\"");
    std::fs::write(&d.config, cfg).expect("config");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log()).expect("log");
    Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .args(["daemon", "--config", d.config.to_str().expect("utf-8 path")])
        .env("EDGESEG_LOG", "info")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env_remove("JOURNAL_STREAM")
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("edgeseg daemon starts")
}

/// (object, state, attempts) of the study's rows, by object name.
fn rows(d: &Deployment, uid: &str) -> Vec<(String, String, u32)> {
    let mut r: Vec<_> = edgeseg::dicom_node::outbox::Outbox::connect(&d.state.join("journal.sqlite"), &d.state, &[])
        .and_then(|o| o.rows(uid))
        .unwrap_or_default()
        .into_iter()
        .map(|(_, object, state, attempts)| (object, state, attempts))
        .collect();
    r.sort();
    r
}

fn sop_instance(path: &std::path::Path) -> String {
    let obj = dicom_object::open_file(path).expect("a result file");
    obj.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        .expect("SOPInstanceUID")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_string()
}

/// Orthanc's REST API: a modality added, an instance deleted.
fn orthanc_put_modality(o: &Orthanc, name: &str, aet: &str, port: u16) {
    let body = serde_json::json!({ "AET": aet, "Host": "127.0.0.1", "Port": port }).to_string();
    let r = minreq::put(format!("http://127.0.0.1:{}/modalities/{name}", o.http))
        .with_body(body)
        .with_timeout(10)
        .send()
        .expect("PUT /modalities");
    assert_eq!(r.status_code, 200, "PUT /modalities: {}", r.as_str().unwrap_or_default());
}

fn orthanc_delete_instance(o: &Orthanc, sop_instance_uid: &str) {
    let r = minreq::post(format!("http://127.0.0.1:{}/tools/lookup", o.http))
        .with_body(sop_instance_uid)
        .with_timeout(10)
        .send()
        .expect("POST /tools/lookup");
    let found: serde_json::Value = serde_json::from_slice(r.as_bytes()).expect("lookup answer");
    let id = found
        .as_array()
        .and_then(|a| a.iter().find(|e| e["Type"] == "Instance"))
        .and_then(|e| e["ID"].as_str())
        .unwrap_or_else(|| panic!("Orthanc does not hold {sop_instance_uid}: {found}"))
        .to_string();
    let r = minreq::delete(format!("http://127.0.0.1:{}/instances/{id}", o.http))
        .with_timeout(10)
        .send()
        .expect("DELETE /instances");
    assert_eq!(r.status_code, 200, "DELETE /instances/{id}");
}

#[test]
fn dicom_node_storage_commitment_with_orthanc_commits_on_its_report_and_resends_what_it_lacks() {
    let pacs = Orthanc::start();
    let bus = crate::observe_dbus::PrivateBus::start();
    let status = || crate::util::text(&crate::util::edgeseg(&["status", "--address", &bus.address])).0;

    // Phase 1: Orthanc does not know EDGESEG yet, so it refuses the
    // commitment requests; after commitment_timeout_seconds (5) the results
    // are sent again. Nothing is committed meanwhile.
    let d = Deployment::new(&config(&pacs, 5));
    let mut child = spawn(&d, &bus);
    let addr = scp_addr_after(&d, 0);
    let (src, uid) = study(71);
    let out = Command::new("storescu")
        .args(["-aet", "CT01", "-aec", "EDGESEG", "-nh", &addr.ip().to_string(), &addr.port().to_string()])
        .args(files_under(&src))
        .output()
        .expect("storescu runs");
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let done = wait_for(Duration::from_secs(300), || d.entry(&uid).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "the received study is processed: {}", d.log_text());
    let resent = wait_for(Duration::from_secs(120), || {
        let r = rows(&d, &uid);
        assert!(r.iter().all(|r| r.1 != "committed"), "committed without a report: {r:?}");
        (r.len() == 2 && r.iter().all(|r| r.2 >= 2) && d.log_text().contains("not committed by pacs within 5 s"))
            .then_some(r)
    });
    assert!(resent.is_some(), "uncommitted results are sent again: {:?}\n{}", rows(&d, &uid), d.log_text());
    assert!(d.log_text().contains("storage commitment request to pacs failed"), "{}", d.log_text());

    // Phase 2: killed, restarted with a timeout of an hour: the journal keeps
    // every row, which waits (sent, not committed) while Orthanc refuses.
    signal(&child, 9);
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    d.write_config(&config(&pacs, 3600));
    let from = d.log_text().len();
    let mut child = spawn(&d, &bus);
    let addr = scp_addr_after(&d, from);
    let waiting = wait_for(Duration::from_secs(120), || {
        let r = rows(&d, &uid);
        let refused_again = d.log_text()[from..].matches("storage commitment request to pacs failed").count() >= 2;
        (r.len() == 2 && r.iter().all(|r| r.1 == "sent") && refused_again).then_some(r)
    })
    .unwrap_or_else(|| panic!("sent, awaiting commitment after the restart: {:?}\n{}", rows(&d, &uid), d.log_text()));
    let st = wait_for(Duration::from_secs(30), || {
        Some(status()).filter(|t| {
            t.contains("Delivery:      pacs: 0 queued, 2 sent, 0 failed, 0 committed, 2 awaiting commitment\n")
        })
    });
    assert!(st.is_some(), "edgeseg status shows the results awaiting commitment: {}", status());

    // Orthanc loses the SEG, then learns where EDGESEG is: its report commits
    // the RTSTRUCT and fails the SEG (no such object instance), which is sent
    // again (same SOP Instance UID) and then committed.
    let seg_uid = sop_instance(&d.out.join(&uid).join("seg.dcm"));
    orthanc_delete_instance(&pacs, &seg_uid);
    orthanc_put_modality(&pacs, "edgeseg", "EDGESEG", addr.port());
    let committed = wait_for(Duration::from_secs(120), || {
        let r = rows(&d, &uid);
        r.iter().all(|r| r.1 == "committed").then_some(r)
    })
    .unwrap_or_else(|| panic!("committed after Orthanc's reports: {:?}\n{}", rows(&d, &uid), d.log_text()));
    let before: Vec<u32> = waiting.iter().map(|r| r.2).collect();
    let after: Vec<u32> = committed.iter().map(|r| r.2).collect();
    // rows() sorts by object: rtstruct, seg.
    assert_eq!(after, vec![before[0], before[1] + 1], "the SEG alone sent once more: {waiting:?} → {committed:?}");
    let log = d.log_text()[from..].to_string();
    assert!(log.contains("pacs did not commit a result (no such object instance): sent again"), "{log}");
    assert!(log.contains("pacs committed 1 result(s) (report on an association from ORTHANC)"), "{log}");
    assert_eq!(log.matches("pacs committed 1 result(s)").count(), 2, "two reports, one result each: {log}");

    let all = pacs.instances();
    let of = |class: &str| {
        all.iter()
            .filter(|(c, _, t)| c == class && t["StudyInstanceUID"] == uid)
            .map(|i| i.1.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(SEG), vec![seg_uid], "one SEG in Orthanc, with the SOP Instance UID it had");
    assert_eq!(of(RTSTRUCT).len(), 1, "one RTSTRUCT in Orthanc");
    assert!(
        wait_for(Duration::from_secs(10), || files_under(&d.state.join("outbox")).is_empty().then_some(())).is_some(),
        "the outbox copies are removed once committed: {:?}",
        files_under(&d.state.join("outbox"))
    );
    let st = wait_for(Duration::from_secs(30), || {
        Some(status()).filter(|t| {
            t.contains("Delivery:      pacs: 0 queued, 2 sent, 0 failed, 2 committed, 0 awaiting commitment\n")
        })
    });
    assert!(st.is_some(), "edgeseg status shows them committed: {}", status());
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

/// The pynetdicom PACS of tests/peers/stgcmt_scp.py: its report lines as they come.
struct SameAssociationPeer {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    port: u16,
}

impl SameAssociationPeer {
    fn start() -> Self {
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut child = Command::new(crate::util::python())
            .arg(crate::util::root().join("tests/peers/stgcmt_scp.py"))
            .args([&port.to_string(), "PACS", "--lose-first-seg"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the pynetdicom peer starts");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "listening" {
                    let _ = tx.send(());
                } else if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().expect("lines").push(v);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("the pynetdicom peer listens");
        Self { child, lines, port }
    }

    fn reports(&self) -> Vec<serde_json::Value> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for SameAssociationPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dicom_node_storage_commitment_reported_on_the_same_association_by_pynetdicom() {
    let peer = SameAssociationPeer::start();
    let d = Deployment::new(&format!(
        "\n[dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"EDGESEG\"\nallowed_callers = [{{ ae_title = \"CT01\" }}]\n\
         \n[[destination]]\nname = \"pacs\"\nkind = \"dicom\"\nhost = \"127.0.0.1\"\nport = {}\ncalled_ae = \"PACS\"\n\
         send = [\"seg\", \"rtstruct\"]\nmax_attempts = 100\nretry_seconds = 1\nstorage_commitment = true\n",
        peer.port
    ));
    let mut child = d.spawn();
    let addr = scp_addr_after(&d, 0);
    let (src, uid) = study(72);
    let out = Command::new("storescu")
        .args(["-aet", "CT01", "-aec", "EDGESEG", "-nh", &addr.ip().to_string(), &addr.port().to_string()])
        .args(files_under(&src))
        .output()
        .expect("storescu runs");
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let committed = wait_for(Duration::from_secs(300), || {
        let r = rows(&d, &uid);
        (r.len() == 2 && r.iter().all(|r| r.1 == "committed")).then_some(r)
    })
    .unwrap_or_else(|| panic!("committed: {:?} {:?}\n{}", rows(&d, &uid), peer.reports(), d.log_text()));
    // The peer lost the first SEG: its first report fails it (event type 2),
    // edgeseg sends it again and the second report commits it (event type 1).
    let seg_uid = sop_instance(&d.out.join(&uid).join("seg.dcm"));
    let rt_uid = sop_instance(&d.out.join(&uid).join("rtstruct.dcm"));
    assert_eq!(committed, vec![("rtstruct".into(), "committed".into(), 1), ("seg".into(), "committed".into(), 2)]);
    let reports = peer.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["event_type"], 2);
    assert_eq!(reports[0]["committed"], serde_json::json!([rt_uid]));
    assert_eq!(reports[0]["failed"], serde_json::json!([seg_uid]));
    assert_eq!(reports[1]["event_type"], 1);
    assert_eq!(reports[1]["committed"], serde_json::json!([seg_uid]));
    assert_ne!(reports[0]["transaction"], reports[1]["transaction"], "one Transaction UID per request");
    for r in &reports {
        assert_eq!(r["status"], 0, "edgeseg answered the report with success: {r}");
        assert!(r["transaction"].as_str().is_some_and(|t| t.starts_with("2.25.")), "{r}");
    }
    let log = d.log_text();
    assert_eq!(log.matches("(report on the same association)").count(), 2, "{log}");
    assert!(log.contains("pacs did not commit a result (no such object instance): sent again"), "{log}");
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}
