//! Crash test: while 10 studies are exported into the watched folder and
//! processed, the daemon is killed with SIGKILL at random moments (at least
//! 10 times while studies are unfinished) and restarted each time. At the end every study is done exactly
//! once in the journal with one complete output folder, no staging or
//! half-swapped folder exists, and every input file is still there, byte for
//! byte. Figures go to target/test-daemon/crash-figures.json (RELIABILITY.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgeseg::queue::StudyState;
use sha2::{Digest, Sha256};

use crate::daemon_util::{
    Deployment, assert_output_complete, export_study, files_under, names, signal, study, wait_exit,
};

/// A small deterministic generator (xorshift) for the kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi) milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn digest(files: &[std::path::PathBuf], base: &std::path::Path) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(base).expect("under base").to_string_lossy().into_owned();
            let h: String =
                Sha256::digest(std::fs::read(f).expect("read")).iter().map(|b| format!("{b:02x}")).collect();
            (rel, h)
        })
        .collect()
}

#[test]
fn daemon_crash_sigkill_during_a_stream_of_10_studies() {
    let studies: Vec<_> = (41..51).map(study).collect();
    let seed = std::env::var("EDGESEG_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    println!("crash test seed {seed} (EDGESEG_CRASH_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let d = Deployment::new("");
    // The scanner: studies one after another, file by file.
    let export = d.export.clone();
    let srcs: Vec<_> = studies.iter().map(|(p, _)| p.clone()).collect();
    // Kills while the scanner still writes count as kills with work: a fast
    // machine may process each study before the next kill, but never before
    // its files have arrived.
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = streaming.clone();
    let streamer = std::thread::spawn(move || {
        for (i, src) in srcs.iter().enumerate() {
            export_study(src, &export, &format!("study{i:02}"), Duration::from_millis(40));
        }
        still.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    let t0 = Instant::now();
    let mut child = d.spawn();
    let (mut kills, mut restarts, mut kills_with_work) = (0u32, 0u32, 0u32);
    let mut kill_states: Vec<BTreeMap<&'static str, usize>> = Vec::new();
    let deadline = Duration::from_secs(600);
    loop {
        let entries = d.entries();
        let all_done = entries.len() == studies.len() && entries.iter().all(|e| e.state == StudyState::Done);
        if kills_with_work >= 10 && all_done {
            break;
        }
        assert!(t0.elapsed() < deadline, "not finished in {deadline:?}: {kills} kills\n{}", d.log_text());
        if kills_with_work >= 10 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        // Random moment: 0.2 to 3 s after the (re)start (a study takes about
        // 1 s here, so kills land in every stage: startup, load, inference, write).
        std::thread::sleep(rng.ms(200, 3000));
        let mut states = BTreeMap::new();
        let entries = d.entries();
        for e in &entries {
            *states.entry(e.state.as_str()).or_insert(0) += 1;
        }
        let work_left = streaming.load(std::sync::atomic::Ordering::SeqCst)
            || entries.len() < studies.len()
            || entries.iter().any(|e| e.state != StudyState::Done);
        signal(&child, 9);
        wait_exit(&mut child, Duration::from_secs(10)).expect("SIGKILL ends it");
        kills += 1;
        kills_with_work += u32::from(work_left);
        kill_states.push(states);
        child = d.spawn();
        restarts += 1;
    }
    streamer.join().expect("streamer");
    let elapsed = t0.elapsed().as_secs_f64();
    signal(&child, 15);
    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("stops");
    assert!(status.success(), "{}", d.log_text());

    // Every study done exactly once; one complete output folder each; nothing partial.
    let entries = d.entries();
    assert_eq!(entries.len(), studies.len(), "one journal entry per study");
    let mut expected: Vec<String> = studies.iter().map(|(_, u)| u.clone()).collect();
    expected.sort();
    assert_eq!(names(&d.out), expected, "exactly the studies' folders: no staging, no replaced leftovers");
    let mut attempts = BTreeMap::new();
    for e in &entries {
        assert_eq!(e.state, StudyState::Done, "{} {:?}", e.hash, e.last_error);
        assert_eq!(e.completions, 1, "study {} recorded done more than once", e.hash);
        assert_eq!(e.files.len(), 72, "all PET and CT files");
        *attempts.entry(e.attempts).or_insert(0) += 1;
        assert_output_complete(&d.out, &e.uid);
        for f in names(&d.out.join(&e.uid)) {
            // `.edgeseg/` is the folder's own record (what the DICOM outputs
            // reference, the edit history), written in the staging folder too.
            assert!(!f.starts_with('.') || f == ".edgeseg", "no temporary file inside an output folder: {f}");
        }
        assert!(d.out.join(&e.uid).join(".edgeseg/dicom-source.json").is_file(), "study {}", e.hash);
    }
    // Nothing of the input lost or changed.
    for (i, (src, _)) in studies.iter().enumerate() {
        let copy = d.export.join(format!("study{i:02}"));
        assert_eq!(digest(&files_under(src), src), digest(&files_under(&copy), &copy), "input of study {i}");
    }
    let figures = serde_json::json!({
        "seed": seed,
        "studies": studies.len(),
        "kills": kills,
        "kills_while_studies_unfinished": kills_with_work,
        "restarts": restarts,
        "seconds": elapsed,
        "attempts_histogram": attempts.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "journal_states_at_kills": kill_states,
    });
    println!("{figures}");
    let _ = std::fs::write(
        crate::util::root().join("target/test-daemon/crash-figures.json"),
        serde_json::to_vec_pretty(&figures).unwrap_or_default(),
    );
}
