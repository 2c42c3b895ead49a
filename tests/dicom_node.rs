//! The DICOM node against real peers, all on loopback: dcmtk's storescu and
//! echoscu as scanners, Debian's Orthanc (with its DICOMweb plugin) as the
//! PACS, started by the tests on free ports with their own configuration and
//! storage folders; bad callers written with dicom-ul and raw sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgeseg::dicom_node::dimse::{self, CommandSet};
use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, files_under, signal, study, wait_exit, wait_for};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const SEG: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const RTSTRUCT: &str = "1.2.840.10008.5.1.4.1.1.481.3";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A private Orthanc: DICOM and HTTP on free loopback ports, its own storage.
pub struct Orthanc {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// DICOM port.
    pub dicom: u16,
    /// HTTP port (REST and DICOMweb).
    pub http: u16,
}

impl Orthanc {
    pub fn start() -> Self {
        let base = crate::util::root().join("target/test-daemon");
        std::fs::create_dir_all(&base).expect("base");
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let mut o = Self { dir, child: None, dicom: free_port(), http: free_port() };
        o.run();
        o
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let config = serde_json::json!({
            "Name": "edgeseg-test",
            "StorageDirectory": d.join("storage"),
            "IndexDirectory": d.join("storage"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "ORTHANC",
            "HttpBindAddress": "127.0.0.1",
            "DicomBindAddress": "127.0.0.1",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowStore": true,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "DicomModalities": {},
            "OverwriteInstances": true
        });
        let cfg = d.join("orthanc.json");
        std::fs::write(&cfg, config.to_string()).expect("orthanc config");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("orthanc.log")).expect("log");
        let child = Command::new("Orthanc")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Orthanc starts (apt-get install orthanc orthanc-dicomweb)");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || self.get("/system").map(|_| ()));
        assert!(
            up.is_some(),
            "Orthanc did not start: {}",
            std::fs::read_to_string(d.join("orthanc.log")).unwrap_or_default()
        );
    }

    /// Stops Orthanc (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let r = minreq::get(format!("http://127.0.0.1:{}{path}", self.http)).with_timeout(10).send().ok()?;
        if r.status_code != 200 {
            return None;
        }
        serde_json::from_slice(r.as_bytes()).ok()
    }

    /// Every instance: (SOPClassUID, SOPInstanceUID, the instance's tags).
    pub fn instances(&self) -> Vec<(String, String, serde_json::Value)> {
        let ids = self.get("/instances").and_then(|v| v.as_array().cloned()).unwrap_or_default();
        ids.iter()
            .filter_map(|id| {
                let tags = self.get(&format!("/instances/{}/simplified-tags", id.as_str()?))?;
                Some((tags["SOPClassUID"].as_str()?.to_string(), tags["SOPInstanceUID"].as_str()?.to_string(), tags))
            })
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SCP's address from the daemon's log (after byte `from` of the log).
fn scp_addr_after(d: &Deployment, from: usize) -> SocketAddr {
    wait_for(Duration::from_secs(120), || {
        let text = d.log_text();
        let text = text.get(from..)?;
        let at = text.rfind("listening on ")? + "listening on ".len();
        text[at..].split_whitespace().next()?.parse().ok()
    })
    .unwrap_or_else(|| panic!("no SCP address in the log:\n{}", d.log_text()))
}

fn scp_addr(d: &Deployment) -> SocketAddr {
    scp_addr_after(d, 0)
}

fn dicom_section(extra: &str) -> String {
    format!(
        "\n[dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"EDGESEG\"\ntimeout_seconds = 3\nmax_associations = 8\n\
         allowed_callers = [{{ ae_title = \"CT01\" }}, {{ ae_title = \"CT02\", host = \"127.0.0.1\" }}, {{ ae_title = \"FAR\", host = \"10.9.9.9\" }}]\n{extra}"
    )
}

fn storescu(addr: SocketAddr, aet: &str, files: &[PathBuf]) -> std::process::Output {
    let mut c = Command::new("storescu");
    c.args(["-v", "-aet", aet, "-aec", "EDGESEG", "-nh", &addr.ip().to_string(), &addr.port().to_string()]);
    c.args(files);
    c.output().expect("storescu runs")
}

fn echoscu(addr: SocketAddr, aet: &str) -> bool {
    Command::new("echoscu")
        .args(["-aet", aet, "-aec", "EDGESEG", &addr.ip().to_string(), &addr.port().to_string()])
        .output()
        .expect("echoscu runs")
        .status
        .success()
}

/// One C-ECHO over dicom-ul: Ok(status) or Err(how the association failed).
fn echo_once(addr: SocketAddr) -> Result<u16, String> {
    let mut a = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CT01")
        .called_ae_title("EDGESEG")
        .with_abstract_syntax("1.2.840.10008.1.1")
        .read_timeout(Duration::from_secs(30))
        .establish(addr)
        .map_err(|e| match e {
            dicom_ul::association::Error::Rejected { association_rj, .. } => {
                format!("rejected {:?}", association_rj.source)
            }
            other => format!("failed {other}"),
        })?;
    let pc = a.presentation_contexts()[0].id;
    let cmd = CommandSet::default()
        .set_uid(dimse::AFFECTED_SOP_CLASS, "1.2.840.10008.1.1")
        .set_u16(dimse::COMMAND_FIELD, dimse::C_ECHO_RQ)
        .set_u16(dimse::MESSAGE_ID, 1)
        .set_u16(dimse::DATA_SET_TYPE, dimse::NO_DATA_SET);
    a.send(&dicom_ul::Pdu::PData {
        data: vec![dicom_ul::pdu::PDataValue {
            presentation_context_id: pc,
            value_type: dicom_ul::pdu::PDataValueType::Command,
            is_last: true,
            data: cmd.encode(),
        }],
    })
    .map_err(|e| e.to_string())?;
    let rsp = edgeseg::dicom_node::scu::receive_command(&mut a)?;
    let _ = a.release();
    rsp.u16(dimse::STATUS).ok_or_else(|| "no status".into())
}

/// Proposes one presentation context; Ok(accepted) or Err(association failure).
fn propose(addr: SocketAddr, sop_class: &str, ts: &str) -> bool {
    dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CT01")
        .called_ae_title("EDGESEG")
        .with_presentation_context(sop_class, vec![ts])
        .establish(addr)
        .map(|a| {
            let ok = a
                .presentation_contexts()
                .iter()
                .any(|p| p.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance);
            let _ = a.release();
            ok
        })
        .unwrap_or(false)
}

#[test]
fn dicom_node_refuses_bad_callers_with_the_right_status_and_keeps_serving() {
    let d = Deployment::new(&dicom_section(""));
    let mut child = d.spawn();
    let addr = scp_addr(&d);
    assert!(echoscu(addr, "CT01"), "an allowed AE title is served");
    assert!(echoscu(addr, "CT02"), "an allowed AE title from its address is served");
    assert!(!echoscu(addr, "NOPE"), "an unknown AE title is rejected");
    assert!(!echoscu(addr, "FAR"), "an allowed AE title from another address is rejected");
    let called_wrong = Command::new("echoscu")
        .args(["-aet", "CT01", "-aec", "OTHER", "127.0.0.1", &addr.port().to_string()])
        .output()
        .expect("echoscu");
    assert!(!called_wrong.status.success(), "another called AE title is rejected");
    assert!(d.log_text().contains("not in [dicom] allowed_callers"), "{}", d.log_text());

    // Presentation contexts: CT in Explicit VR LE yes; MR, or CT only in HTJ2K, no.
    assert!(propose(addr, CT, "1.2.840.10008.1.2.1"));
    assert!(!propose(addr, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1"), "MR Image Storage is not accepted");
    assert!(!propose(addr, CT, "1.2.840.10008.1.2.4.201"), "HTJ2K is not accepted");

    // A malformed PDU: an A-ASSOCIATE-RQ whose length runs past what is sent, then garbage.
    let mut raw = TcpStream::connect(addr).expect("connect");
    raw.write_all(&[0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .expect("write");
    raw.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    // An unknown PDU type.
    let mut raw = TcpStream::connect(addr).expect("connect");
    raw.write_all(&[0x09, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0xff]).expect("write");
    let _ = raw.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = raw.read_to_end(&mut buf);
    // A half-sent association (the first 10 bytes of a request, then silence).
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(&[0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00]).expect("write");
    assert!(echoscu(addr, "CT01"), "served while a caller hangs");
    half.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(
        wait_for(Duration::from_secs(30), || d.log_text().contains("timed out").then_some(())).is_some()
            || d.log_text().contains("refused"),
        "the half-sent association ends: {}",
        d.log_text()
    );

    // 100 associations at once: each answered, success or a transient local-limit rejection.
    let results: Vec<Result<u16, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..100).map(|_| sc.spawn(move || echo_once(addr))).collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ok = results.iter().filter(|r| **r == Ok(0)).count();
    let busy = results.iter().filter(|r| matches!(r, Err(e) if e.contains("LocalLimitExceeded"))).count();
    assert_eq!(ok + busy, 100, "every association answered: {results:?}");
    assert!(ok >= 8, "at least max_associations served: {ok}");
    assert!(echoscu(addr, "CT01"), "still serving after the burst");

    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some(), "stops");
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

#[test]
fn dicom_node_answers_a700_below_min_free_and_stores_nothing() {
    let d = Deployment::new(&format!("{}\n[disk]\nmin_free_mb = 100000000\n", dicom_section("")));
    let mut child = d.spawn();
    let addr = scp_addr(&d);
    let (src, _) = study(61);
    let files = files_under(&src);
    let out = storescu(addr, "CT01", &files[..2]);
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("Refused: OutOfResources").count(), 2, "storescu said: {text}");
    assert!(files_under(&d.state.join("spool")).is_empty(), "nothing stored");
    assert!(echoscu(addr, "CT01"), "still serving");
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}

fn dest_dicom(o: &Orthanc, name: &str) -> String {
    format!(
        "\n[[destination]]\nname = \"{name}\"\nkind = \"dicom\"\nhost = \"127.0.0.1\"\nport = {}\ncalled_ae = \"ORTHANC\"\n\
         calling_ae = \"EDGESEG\"\nsend = [\"seg\", \"rtstruct\"]\nmax_attempts = 100\nretry_seconds = 1\n",
        o.dicom
    )
}

fn dest_web(o: &Orthanc, name: &str) -> String {
    format!(
        "\n[[destination]]\nname = \"{name}\"\nkind = \"dicomweb\"\nurl = \"http://127.0.0.1:{}/dicom-web\"\nsend = [\"seg\", \"rtstruct\"]\nretry_seconds = 1\n",
        o.http
    )
}

/// Checks Orthanc holds one SEG and one RTSTRUCT of the study, each referencing the source series.
pub fn assert_results_in(o: &Orthanc, study_uid: &str, source: &Path, d: &Deployment) {
    let series: std::collections::BTreeSet<String> = files_under(source)
        .iter()
        .filter_map(|f| dicom_object::open_file(f).ok())
        .filter_map(|obj| {
            obj.element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
                .ok()?
                .to_str()
                .ok()
                .map(|s| s.trim_end_matches('\0').to_string())
        })
        .collect();
    let got = wait_for(Duration::from_secs(120), || {
        let all = o.instances();
        let of = |class: &str| all.iter().filter(|(c, _, t)| c == class && t["StudyInstanceUID"] == study_uid).count();
        (of(SEG) == 1 && of(RTSTRUCT) == 1).then_some(all)
    })
    .unwrap_or_else(|| {
        let log: Vec<String> = d
            .log_text()
            .lines()
            .filter(|l| l.contains("deliver") || l.contains("attempt") || l.contains("result"))
            .map(String::from)
            .collect();
        panic!(
            "SEG and RTSTRUCT did not arrive once: {:?}\n{}",
            o.instances().iter().map(|i| &i.0).collect::<Vec<_>>(),
            log.join("\n")
        )
    });
    for (class, _, tags) in
        got.iter().filter(|(c, _, t)| (c == SEG || c == RTSTRUCT) && t["StudyInstanceUID"] == study_uid)
    {
        let text = tags.to_string();
        assert!(
            series.iter().any(|s| text.contains(s.as_str())),
            "{class} of study {study_uid} references none of {series:?}"
        );
    }
}

#[test]
fn dicom_node_a_study_from_storescu_is_processed_and_its_results_reach_orthanc_by_c_store_and_stow() {
    let pacs = Orthanc::start();
    let web = Orthanc::start();
    let d = Deployment::new(&format!("{}{}{}", dicom_section(""), dest_dicom(&pacs, "pacs"), dest_web(&web, "web")));
    let mut child = d.spawn();
    let addr = scp_addr(&d);
    let (src, uid) = study(62);
    let out = storescu(addr, "CT01", &files_under(&src));
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let done = wait_for(Duration::from_secs(300), || d.entry(&uid).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "the received study is processed: {}", d.log_text());
    assert!(d.out.join(&uid).join("seg.dcm").is_file(), "seg.dcm written");
    assert_results_in(&pacs, &uid, &src, &d);
    assert_results_in(&web, &uid, &src, &d);
    assert!(
        wait_for(Duration::from_secs(30), || files_under(&d.state.join("spool")).is_empty().then_some(())).is_some(),
        "the spool is emptied once the study is done"
    );
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}

/// Rows of a study's outbox: (destination, object, state, attempts).
fn outbox_rows(d: &Deployment, uid: &str) -> Vec<(String, String, String, u32)> {
    edgeseg::dicom_node::outbox::Outbox::open(&d.state.join("journal.sqlite"), &d.state, &[])
        .and_then(|o| o.rows(uid))
        .unwrap_or_default()
}

#[test]
fn dicom_node_results_queue_while_orthanc_is_down_and_arrive_once_it_is_back() {
    let mut pacs = Orthanc::start();
    let d = Deployment::new(&format!("{}{}", dicom_section(""), dest_dicom(&pacs, "pacs")));
    let bus = crate::observe_dbus::PrivateBus::start();
    let cfg = std::fs::read_to_string(&d.config).expect("config").replace("bus = \"off\"", "bus = \"session\"");
    std::fs::write(&d.config, cfg).expect("config");
    let status = || crate::util::text(&crate::util::edgeseg(&["status", "--address", &bus.address])).0;
    pacs.stop();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log()).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeseg"))
        .args(["daemon", "--config", d.config.to_str().expect("utf-8 path")])
        .env("EDGESEG_LOG", "info")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env_remove("JOURNAL_STREAM")
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("edgeseg daemon starts");
    let addr = scp_addr(&d);
    let (src, uid) = study(63);
    let out = storescu(addr, "CT01", &files_under(&src));
    assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
    let failed_twice = wait_for(Duration::from_secs(300), || {
        let rows = outbox_rows(&d, &uid);
        (rows.len() == 2 && rows.iter().all(|r| r.2 == "queued" && r.3 >= 2)).then_some(rows)
    });
    assert!(
        failed_twice.is_some(),
        "queued and retried while the PACS is down: {:?}\n{}",
        outbox_rows(&d, &uid),
        d.log_text()
    );
    let st = wait_for(Duration::from_secs(30), || {
        Some(status()).filter(|t| t.contains("Delivery:      pacs: 2 queued, 0 sent, 0 failed (oldest waiting"))
    });
    assert!(st.is_some(), "edgeseg status shows the waiting results: {}", status());
    pacs.restart();
    assert_results_in(&pacs, &uid, &src, &d);
    let sent = wait_for(Duration::from_secs(60), || {
        let rows = outbox_rows(&d, &uid);
        rows.iter().all(|r| r.2 == "sent").then_some(rows)
    });
    assert!(sent.is_some(), "rows sent: {:?}", outbox_rows(&d, &uid));
    assert!(files_under(&d.state.join("outbox")).is_empty(), "the outbox copies are removed once sent");
    let st = wait_for(Duration::from_secs(30), || {
        Some(status()).filter(|t| t.contains("Delivery:      pacs: 0 queued, 2 sent, 0 failed\n"))
    });
    assert!(st.is_some(), "edgeseg status shows them sent: {}", status());
    // Resend over D-Bus: the same objects again (same SOP Instance UIDs: still one copy each).
    let o = crate::observe_dbus::busctl(
        &bus,
        &["call", "org.edgeseg.Daemon1", "/org/edgeseg/Daemon1", "org.edgeseg.Daemon1", "Resend", "s", &uid],
    );
    assert!(o.status.success(), "Resend: {:?}", crate::util::text(&o));
    let again = wait_for(Duration::from_secs(60), || {
        // Attempts start again from 0: 1 once sent again (it was 2 or more).
        d.log_text()
            .contains("resend of study")
            .then_some(())
            .filter(|_| outbox_rows(&d, &uid).iter().all(|r| r.2 == "sent" && r.3 == 1))
    });
    assert!(again.is_some(), "resent: {:?}\n{}", outbox_rows(&d, &uid), d.log_text());
    assert_results_in(&pacs, &uid, &src, &d);
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}

/// The files of `src` the spool lacks (by the spool's name for each SOP Instance UID).
fn missing_from_spool(d: &Deployment, src: &Path) -> Vec<PathBuf> {
    files_under(src)
        .into_iter()
        .filter(|f| {
            let uid = dicom_object::open_file(f)
                .ok()
                .and_then(|o| {
                    o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                        .ok()?
                        .to_str()
                        .ok()
                        .map(|s| s.trim_end_matches('\0').to_string())
                })
                .unwrap_or_default();
            !d.state.join("spool").join(format!("{}.dcm", edgeseg::dicom_node::spool::hex_hash(&uid))).exists()
        })
        .collect()
}

#[test]
fn dicom_node_sigkilled_22_times_during_receive_and_delivery_loses_nothing_and_sends_each_result_once() {
    let mut pacs = Orthanc::start();
    let d = Deployment::new(&format!("{}{}", dicom_section(""), dest_dicom(&pacs, "pacs")));
    let studies: Vec<(PathBuf, String)> = (81..85).map(study).collect();
    // A scanner that resends what did not arrive (never a study already done).
    let cut_sends = std::sync::atomic::AtomicUsize::new(0);
    let send_pending = |addr: SocketAddr| {
        for (src, uid) in &studies {
            if d.entry(uid).is_some_and(|e| e.state == StudyState::Done) {
                continue;
            }
            let missing = missing_from_spool(&d, src);
            if !missing.is_empty() && !storescu(addr, "CT01", &missing).status.success() {
                cut_sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    let mut cut_deliveries = 0;
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut kills = 0;
    while kills < 22 {
        let from = d.log_text().len();
        let mut child = d.spawn();
        let addr = scp_addr_after(&d, from);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kills 1-11 early (receive), 12-22 later (processing and delivery),
        // with the PACS down for kills 12-16 so results wait in the outbox.
        if kills == 11 {
            pacs.stop();
        }
        if kills == 16 {
            pacs.restart();
        }
        let after =
            if kills < 11 { Duration::from_millis(300 + rng % 2500) } else { Duration::from_millis(2000 + rng % 6000) };
        std::thread::scope(|sc| {
            sc.spawn(|| send_pending(addr));
            std::thread::sleep(after);
            signal(&child, 9);
        });
        let _ = wait_exit(&mut child, Duration::from_secs(30));
        kills += 1;
        if studies.iter().any(|(_, uid)| outbox_rows(&d, uid).iter().any(|r| r.2 == "queued" || r.2 == "sending")) {
            cut_deliveries += 1;
        }
    }
    // A last start, left running: everything completes.
    let from = d.log_text().len();
    let mut child = d.spawn();
    let addr = scp_addr_after(&d, from);
    let all_done = wait_for(Duration::from_secs(600), || {
        send_pending(addr);
        studies.iter().all(|(_, uid)| d.entry(uid).is_some_and(|e| e.state == StudyState::Done)).then_some(())
    });
    assert!(
        all_done.is_some(),
        "every study done after {kills} kills: {:?}",
        d.entries().iter().map(|e| e.state).collect::<Vec<_>>()
    );
    for (src, uid) in &studies {
        assert_results_in(&pacs, uid, src, &d);
    }
    assert!(
        wait_for(Duration::from_secs(60), || (files_under(&d.state.join("spool")).is_empty()
            && files_under(&d.state.join("spool.tmp")).is_empty())
        .then_some(()))
        .is_some(),
        "the spool is empty at the end: {:?}",
        files_under(&d.state.join("spool"))
    );
    let cut_sends = cut_sends.into_inner();
    assert!(cut_sends > 0 && cut_deliveries > 0, "kills cut {cut_sends} sends and {cut_deliveries} deliveries");
    eprintln!("{kills} kills: {cut_sends} storescu runs and {cut_deliveries} deliveries cut");
    let seg_count = pacs.instances().iter().filter(|i| i.0 == SEG).count();
    assert_eq!(seg_count, studies.len(), "one SEG per study in the PACS");
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}

fn vm_hwm_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Peak resident memory of the daemon on the network burst (as the folder
/// burst's bound: ONNX Runtime, the model, two studies; plus the SCP's
/// associations, one PDU each).
const BURST_PEAK_RSS_BOUND_MIB: f64 = 256.0;

#[test]
fn dicom_node_burst_of_20_studies_from_4_concurrent_storescu_with_bounded_memory() {
    let studies: Vec<(PathBuf, String)> = (101..121).map(study).collect();
    let d = Deployment::new(&dicom_section(""));
    let mut child = d.spawn();
    let addr = scp_addr(&d);
    let t0 = std::time::Instant::now();
    std::thread::scope(|sc| {
        for chunk in studies.chunks(5) {
            sc.spawn(move || {
                let files: Vec<PathBuf> = chunk.iter().flat_map(|(src, _)| files_under(src)).collect();
                let out = storescu(addr, "CT01", &files);
                assert!(out.status.success(), "storescu: {}", String::from_utf8_lossy(&out.stderr));
            });
        }
    });
    let all = wait_for(Duration::from_secs(900), || {
        studies.iter().all(|(_, uid)| d.entry(uid).is_some_and(|e| e.state == StudyState::Done)).then_some(())
    });
    let seconds = t0.elapsed().as_secs_f64();
    let peak = vm_hwm_mib(child.id()).expect("VmHWM");
    assert!(all.is_some(), "not all done: {:?}", d.entries().iter().map(|e| e.state).collect::<Vec<_>>());
    for (_, uid) in &studies {
        assert_eq!(d.entry(uid).map(|e| e.completions), Some(1), "each study once");
    }
    assert!(
        wait_for(Duration::from_secs(60), || files_under(&d.state.join("spool")).is_empty().then_some(())).is_some(),
        "the spool is emptied"
    );
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
    eprintln!(
        "{}",
        serde_json::json!({"studies": studies.len(), "seconds": seconds, "peak_rss_mib": peak, "bound_mib": BURST_PEAK_RSS_BOUND_MIB})
    );
    assert!(peak < BURST_PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB over {BURST_PEAK_RSS_BOUND_MIB} MiB");
}

/// (Device UID, purpose code, segment tracking (ID, UID) pairs, SOP Instance UID) of a written file.
type AirView = (String, String, Vec<(String, String)>, String);

fn air_of(path: &Path) -> AirView {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(path).expect("opens");
    let s = |o: &dicom_object::InMemDicomObject, t| {
        o.element(t)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    let eq = obj.element(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE).expect("Contributing Equipment Sequence");
    let eq = &eq.items().expect("items")[0];
    assert_eq!(s(eq, tags::MANUFACTURER), "edgeseg");
    assert!(!s(eq, tags::MANUFACTURER_MODEL_NAME).is_empty() && !s(eq, tags::SOFTWARE_VERSIONS).is_empty());
    let purpose = &eq.element(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE).expect("purpose").items().expect("items")[0];
    let code = format!(
        "{}|{}|{}",
        s(purpose, tags::CODE_VALUE),
        s(purpose, tags::CODING_SCHEME_DESIGNATOR),
        s(purpose, tags::CODE_MEANING)
    );
    let tracking = obj
        .element(tags::SEGMENT_SEQUENCE)
        .ok()
        .and_then(|e| {
            e.items().map(|i| i.iter().map(|seg| (s(seg, tags::TRACKING_ID), s(seg, tags::TRACKING_UID))).collect())
        })
        .unwrap_or_default();
    (s(eq, tags::DEVICE_UID), code, tracking, s(&obj, tags::SOP_INSTANCE_UID))
}

#[test]
fn dicom_node_air_attributes_are_on_seg_and_rtstruct_and_tracking_uids_stable_across_reruns() {
    let (src, uid) = study(64);
    let model = crate::daemon_util::petct_model();
    let run = || {
        let out = tempfile::tempdir().expect("tempdir");
        let o = crate::util::edgeseg(&[
            "process",
            src.to_str().expect("path"),
            "--model",
            model.to_str().expect("path"),
            "--out",
            out.path().to_str().expect("path"),
            "--onnxruntime",
            crate::util::ort_lib().to_str().expect("path"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", crate::util::text(&o).1);
        let dir = out.path().join(&uid);
        (air_of(&dir.join("seg.dcm")), air_of(&dir.join("rtstruct.dcm")), out)
    };
    let (seg1, rt1, _a) = run();
    let (seg2, rt2, _b) = run();
    assert_eq!(seg1.1, "Newcode1|99IHE|Processing Algorithm");
    assert_eq!(rt1.1, seg1.1);
    assert!(seg1.0.starts_with("2.25.") && seg1.0 == rt1.0 && seg1.0 == seg2.0, "one device UID per model package");
    assert_ne!(seg1.3, seg2.3, "each run writes new instances");
    assert_ne!(rt1.3, rt2.3);
    assert!(!seg1.2.is_empty(), "segments tracked");
    assert!(seg1.2.iter().all(|(id, u)| !id.is_empty() && u.starts_with("2.25.")), "{:?}", seg1.2);
    let distinct: std::collections::BTreeSet<_> = seg1.2.iter().map(|t| &t.1).collect();
    assert_eq!(distinct.len(), seg1.2.len(), "one tracking UID per segment");
    assert_eq!(seg1.2, seg2.2, "the same lesions keep their tracking IDs and UIDs across runs");
}
