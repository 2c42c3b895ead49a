//! Load and resource limits of `edgeseg daemon`: 30 studies dropped into the
//! export folder at once are all processed, with the daemon's peak resident
//! memory (VmHWM) under a stated bound; a full output disk pauses intake and
//! a write that runs out of space leaves no output, and both resume by
//! themselves when space returns (or through a reload lowering the threshold).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, assert_output_complete, export_study, names, signal, study, wait_exit, wait_for};

/// Peak resident memory the daemon may reach on a burst of tiny studies
/// (ONNX Runtime, the model, one study on the GPU worker, one loaded ahead).
const PEAK_RSS_BOUND_MIB: f64 = 256.0;

fn vm_hwm_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[test]
fn daemon_burst_of_30_studies_with_bounded_memory() {
    // Generate in two threads (the fixtures are cached per run).
    let seeds: Vec<u32> = (41..71).collect();
    let studies: Vec<(PathBuf, String)> = std::thread::scope(|s| {
        let (a, b) = seeds.split_at(seeds.len() / 2);
        let ha = s.spawn(|| a.iter().map(|&i| study(i)).collect::<Vec<_>>());
        let hb = s.spawn(|| b.iter().map(|&i| study(i)).collect::<Vec<_>>());
        let mut v = ha.join().expect("gen");
        v.extend(hb.join().expect("gen"));
        v
    });
    let d = Deployment::new("");
    let incoming = d.root.path().join("incoming");
    for (i, (src, _)) in studies.iter().enumerate() {
        export_study(src, &incoming, &format!("study{i:02}"), Duration::ZERO);
    }
    let mut child = d.spawn();
    d.wait_watching();
    // Dropped at once: each study folder renamed into the export folder.
    let t0 = Instant::now();
    for i in 0..studies.len() {
        let name = format!("study{i:02}");
        std::fs::rename(incoming.join(&name), d.export.join(&name)).expect("rename");
    }
    let all = wait_for(Duration::from_secs(900), || {
        let e = d.entries();
        (e.len() == studies.len() && e.iter().all(|e| e.state == StudyState::Done)).then_some(())
    });
    let seconds = t0.elapsed().as_secs_f64();
    let peak = vm_hwm_mib(child.id()).expect("VmHWM");
    assert!(
        all.is_some(),
        "not all done: {:?}\n{}",
        d.entries().iter().map(|e| e.state).collect::<Vec<_>>(),
        d.log_text()
    );
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).expect("stops").success());
    for (_, uid) in &studies {
        assert_output_complete(&d.out, uid);
        assert_eq!(d.entry(uid).map(|e| (e.attempts, e.completions)), Some((1, 1)));
    }
    assert_eq!(names(&d.out).len(), studies.len(), "no staging folder left");
    println!(
        "{}",
        serde_json::json!({"studies": studies.len(), "seconds": seconds, "per_study_s": seconds / studies.len() as f64,
            "peak_rss_mib": peak, "bound_mib": PEAK_RSS_BOUND_MIB})
    );
    let _ = std::fs::write(
        crate::util::root().join("target/test-daemon/burst-figures.json"),
        format!("{{\"studies\": {}, \"seconds\": {seconds:.1}, \"peak_rss_mib\": {peak:.1}}}\n", studies.len()),
    );
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB over the bound {PEAK_RSS_BOUND_MIB} MiB");
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "edgeseg-test", &at.to_string_lossy()])
            .output()
            .ok()?;
        if o.status.success() {
            Some(Self(at.to_path_buf()))
        } else {
            println!("mount -t tmpfs not permitted ({}): simulating", String::from_utf8_lossy(&o.stderr).trim());
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0xA5u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        match f.write_all(&chunk[..n]) {
            Ok(()) => left -= n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    f.sync_all()
}

#[test]
fn daemon_disk_full_pauses_intake_and_resumes() {
    let (a_src, a) = study(71);
    let (b_src, b) = study(72);
    let d = Deployment::new("");
    let fs_dir = d.root.path().join("small-disk");
    let Some(tmpfs) = Tmpfs::mount(&fs_dir, 24) else {
        return simulate_with_reload(&d, &a_src, &a);
    };
    let out = tmpfs.0.join("results");
    let with = |min_free: u32| {
        let text = std::fs::read_to_string(&d.config).expect("config");
        let text =
            text.replace(&format!("folder = \"{}\"", d.out.display()), &format!("folder = \"{}\"", out.display()));
        let text = text.split("[disk]").next().unwrap_or(&text).to_string();
        let text =
            text + &format!("[disk]\nmin_free_mb = {min_free}\n[queue]\nbackoff_seconds = 1\nmax_attempts = 20\n");
        std::fs::write(&d.config, text).expect("config");
    };
    with(8);
    let mut child = d.spawn();
    d.wait_watching();
    // 1. Free space under the threshold: intake pauses.
    let filler = tmpfs.0.join("filler");
    fill(&filler, 20 << 20).expect("fill");
    assert!(
        wait_for(Duration::from_secs(10), || d.log_text().contains("no new study is started").then_some(())).is_some(),
        "{}",
        d.log_text()
    );
    export_study(&a_src, &d.export, "a", Duration::ZERO);
    assert!(wait_for(Duration::from_secs(20), || (d.entry(&a)?.state == StudyState::Ready).then_some(())).is_some());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.entry(&a).map(|e| e.state), Some(StudyState::Ready), "not started while the disk is low");
    // Space returns: intake resumes by itself.
    std::fs::remove_file(&filler).expect("rm");
    let done = wait_for(Duration::from_secs(60), || d.entry(&a).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "{}", d.log_text());
    assert!(d.log_text().contains("intake resumes"));
    assert_output_complete(&out, &a);

    // 2. The disk fills during the write (threshold 0): the write fails, no
    //    output and no staging is left, the study retries and succeeds once
    //    space returns.
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).expect("stops").success());
    with(0);
    fill(&filler, 64 << 20).expect("fill to the brim");
    let mut child = d.spawn();
    export_study(&b_src, &d.export, "b", Duration::ZERO);
    let failed_once = wait_for(Duration::from_secs(60), || {
        d.entry(&b).filter(|e| e.last_error.as_deref().is_some_and(|m| m.contains("No space left")))
    });
    assert!(failed_once.is_some(), "{:?}\n{}", d.entry(&b), d.log_text());
    assert!(!out.join(&b).exists(), "no partial output");
    assert!(names(&out).iter().all(|n| !n.starts_with(".staging")), "{:?}", names(&out));
    std::fs::remove_file(&filler).expect("rm");
    let done = wait_for(Duration::from_secs(60), || d.entry(&b).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "{:?}\n{}", d.entry(&b), d.log_text());
    assert_output_complete(&out, &b);
    assert_output_complete(&out, &a);
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(names(&out), expected);
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).expect("stops").success());
}

/// Without mount permission: a threshold above the free space, lowered by SIGHUP.
fn simulate_with_reload(d: &Deployment, src: &Path, uid: &str) {
    d.write_config("[disk]\nmin_free_mb = 100000000\n");
    let mut child = d.spawn();
    assert!(
        wait_for(Duration::from_secs(60), || d.log_text().contains("no new study is started").then_some(())).is_some()
    );
    export_study(src, &d.export, "a", Duration::ZERO);
    assert!(wait_for(Duration::from_secs(20), || (d.entry(uid)?.state == StudyState::Ready).then_some(())).is_some());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.entry(uid).map(|e| e.state), Some(StudyState::Ready));
    d.write_config("[disk]\nmin_free_mb = 1\n");
    signal(&child, 1);
    assert!(wait_for(Duration::from_secs(60), || d.entry(uid).filter(|e| e.state == StudyState::Done)).is_some());
    assert_output_complete(&d.out, uid);
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).expect("stops").success());
}
