//! `[output] seg_kind` (issue 14: seg.dcm as Label Map Segmentation Storage,
//! 1.2.840.10008.5.1.4.1.1.66.7): the key parses, an unknown value is an
//! error naming the choices, `check-config` shows what seg.dcm will be; the
//! daemon writes the label map the configuration asks for and delivers it
//! unchanged, proposing its own SOP class, to dcmtk's storescp (C-STORE) and
//! to Debian's Orthanc (STOW-RS). highdicom's and pydicom's reading of the
//! file is in tests/peers/test_outputs_labelmap.py.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use dicom_dictionary_std::tags;
use edgeseg::export::seg::SegKind;
use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, files_under, signal, study, wait_exit, wait_for};
use crate::util::{edgeseg, s, text};

const LABELMAP: &str = "1.2.840.10008.5.1.4.1.1.66.7";

#[test]
fn seg_kind_parses_defaults_to_binary_and_names_the_choices_when_unknown() {
    let p = Path::new("c.toml");
    let (c, d) = edgeseg::config::check(p, "[output]\nfolder = \"/srv/results\"\nseg_kind = \"labelmap\"\n");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(c.expect("parsed").output.seg_kind, SegKind::Labelmap);
    let (c, d) = edgeseg::config::check(p, "[output]\nseg_kind = \"binary\"\n");
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(c.expect("parsed").output.seg_kind, SegKind::Binary);
    assert_eq!(edgeseg::config::Config::default().output.seg_kind, SegKind::Binary, "today's output by default");
    assert_eq!(SegKind::Labelmap.sop_class_uid(), LABELMAP);

    let (_, d) = edgeseg::config::check(p, "[output]\nfolder = \"/srv/results\"\nseg_kind = \"bitmap\"\n");
    assert_eq!(d.len(), 1, "{d:?}");
    let line = d[0].to_string();
    assert_eq!((d[0].line, d[0].column), (Some(3), Some(12)), "{line}");
    for needle in ["[output] seg_kind", "bitmap", "\"binary\"", "\"labelmap\""] {
        assert!(line.contains(needle), "{needle} missing in: {line}");
    }
    assert!(!line.contains("Labelmap") && !line.contains("Binary"), "no Rust names: {line}");

    // check-config: the place of the error; for a valid file, what seg.dcm will be.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("edgeseg.toml");
    std::fs::write(&f, "[output]\nseg_kind = \"LABELMAP\"\n").expect("write");
    let o = edgeseg(&["check-config", "--offline", s(&f)]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains(&format!("{}:2:12: [output] seg_kind:", f.display())) && err.contains("\"labelmap\""),
        "{err}"
    );
    std::fs::write(&f, "[output]\nseg_kind = \"labelmap\"\n").expect("write");
    let o = edgeseg(&["check-config", "--offline", s(&f)]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("seg_kind = \"labelmap\"") && out.contains("Label Map Segmentation Storage"), "{out}");
    assert!(out.contains(LABELMAP), "{out}");
    std::fs::write(&f, "[output]\n").expect("write");
    let (out, _) = text(&edgeseg(&["check-config", "--offline", s(&f)]));
    assert!(out.contains("seg_kind = \"binary\"") && out.contains("1.2.840.10008.5.1.4.1.1.66.4"), "{out}");

    // `edgeseg process --seg-kind` takes the same words.
    let o = edgeseg(&["process", "/nonexistent", "--model", "/nonexistent", "--out", "/tmp/x", "--seg-kind", "bitmap"]);
    let (_, err) = text(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(err.contains("\"binary\"") && err.contains("\"labelmap\""), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// dcmtk's storescp in promiscuous mode (it accepts SOP classes its dcmtk
/// does not know, as 3.6.7 does not know the label map), with its debug log.
struct StoreScp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl StoreScp {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("in")).expect("in");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("storescp.log")).expect("log");
        let child = Command::new("storescp")
            .args(["-d", "-pm", "-aet", "STORESCP", "-od", s(&dir.path().join("in")), &port.to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("storescp (dcmtk) installed");
        let up = wait_for(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        assert!(up.is_some(), "storescp did not start");
        Self { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("storescp.log")).unwrap_or_default()
    }

    fn received(&self) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("in"))
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Part-10 file's data set bytes (after the file meta group).
fn data_set_bytes(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).expect("read");
    assert_eq!(&b[128..132], b"DICM", "{}", path.display());
    // (0002,0000) UL 4: the meta group's length, right after the preamble.
    assert_eq!(&b[132..136], &[2, 0, 0, 0], "{}: meta group length first", path.display());
    let len = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
    b[144 + len..].to_vec()
}

/// An element's value bytes.
fn element_bytes(path: &Path, tag: dicom_core::Tag) -> Vec<u8> {
    let obj = dicom_object::open_file(path).expect("DICOM");
    obj.element(tag).expect("element").to_bytes().expect("bytes").into_owned()
}

fn sop_class(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("DICOM");
    obj.element(tags::SOP_CLASS_UID).expect("SOPClassUID").to_str().expect("str").trim_end_matches('\0').to_string()
}

#[test]
fn the_daemon_writes_the_label_map_its_configuration_asks_for_and_delivers_it_unchanged() {
    let scp = StoreScp::start();
    let web = crate::dicom_node::Orthanc::start();
    let destinations = format!(
        "\n[[destination]]\nname = \"scp\"\nkind = \"dicom\"\nhost = \"127.0.0.1\"\nport = {}\ncalled_ae = \"STORESCP\"\n\
         calling_ae = \"EDGESEG\"\nsend = [\"seg\"]\nmax_attempts = 100\nretry_seconds = 1\n\
         \n[[destination]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"http://127.0.0.1:{}/dicom-web\"\nsend = [\"seg\"]\nretry_seconds = 1\n",
        scp.port, web.http
    );
    let d = Deployment::new(&destinations);
    // [output] seg_kind in the deployment's own [output] table.
    let config = std::fs::read_to_string(&d.config).expect("config");
    assert!(config.contains("[output]\n"));
    std::fs::write(&d.config, config.replacen("[output]\n", "[output]\nseg_kind = \"labelmap\"\n", 1)).expect("config");
    let mut child = d.spawn();
    let (src, uid) = study(64);
    for f in files_under(&src) {
        let to = d.export.join(f.strip_prefix(&src).expect("under"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &to).expect("copy");
    }
    let done = wait_for(Duration::from_secs(300), || d.entry(&uid).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "the study is processed: {}", d.log_text());
    let seg = d.out.join(&uid).join("seg.dcm");
    assert_eq!(sop_class(&seg), LABELMAP, "seg.dcm is the label map [output] seg_kind asks for");
    let mine = data_set_bytes(&seg);

    // C-STORE: the association proposes the label map's SOP class; storescp stores it byte for byte.
    let got = wait_for(Duration::from_secs(120), || scp.received().into_iter().next());
    let got = got.unwrap_or_else(|| panic!("storescp received nothing:\n{}\n{}", scp.log(), d.log_text()));
    assert_eq!(sop_class(&got), LABELMAP);
    let log = scp.log();
    assert!(
        log.lines().any(|l| l.contains("Abstract Syntax") && l.contains(LABELMAP)),
        "the association proposed {LABELMAP}:\n{log}"
    );
    assert!(!log.contains("1.2.840.10008.5.1.4.1.1.66.4"), "the binary SEG class was not proposed:\n{log}");
    // dcmtk writes the data set again in its own way: the same instance and pixels.
    for tag in [tags::SOP_INSTANCE_UID, tags::NUMBER_OF_FRAMES, tags::SEGMENTATION_TYPE, tags::PIXEL_DATA] {
        assert_eq!(element_bytes(&got, tag), element_bytes(&seg, tag), "{tag}");
    }

    // STOW-RS: Orthanc holds it with its SOP class, the data set unchanged.
    let id = wait_for(Duration::from_secs(120), || {
        let ids = web.get("/instances")?;
        ids.as_array()?.iter().filter_map(|v| v.as_str().map(str::to_string)).find(|id| {
            web.get(&format!("/instances/{id}/simplified-tags"))
                .is_some_and(|t| t["SOPClassUID"] == LABELMAP && t["StudyInstanceUID"] == uid.as_str())
        })
    })
    .unwrap_or_else(|| panic!("Orthanc did not get the label map:\n{}", d.log_text()));
    let r = minreq::get(format!("http://127.0.0.1:{}/instances/{id}/file", web.http))
        .with_timeout(30)
        .send()
        .expect("GET file");
    assert_eq!(r.status_code, 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = dir.path().join("orthanc.dcm");
    std::fs::write(&stored, r.as_bytes()).expect("write");
    assert!(data_set_bytes(&stored) == mine, "the data set Orthanc stored is seg.dcm's");

    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some());
}
