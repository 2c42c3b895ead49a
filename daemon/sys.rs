//! Operating-system calls the standard library does not offer, and the one
//! change to the process environment. With the GPU launch module, the only
//! places `unsafe` is allowed.
#![allow(unsafe_code)]

/// Asks the kernel to back a large buffer with transparent huge pages before
/// it is first written. A 600 MiB volume then takes ~300 page faults instead
/// of ~150,000, which is most of the cost of filling it. Advice only: on
/// failure (or where THP is off) nothing changes.
pub fn advise_huge_pages<T>(buf: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let aligned_start = start.div_ceil(HUGE) * HUGE;
    let aligned_end = end / HUGE * HUGE;
    if aligned_end <= aligned_start {
        return;
    }
    // SAFETY: the range lies inside `buf`, which we borrow mutably, so it is
    // mapped memory owned by this process; madvise(MADV_HUGEPAGE) changes no
    // contents and no mapping, only how future faults are served.
    let rc =
        unsafe { libc::madvise(aligned_start as *mut libc::c_void, aligned_end - aligned_start, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!("madvise(MADV_HUGEPAGE) refused: {}", std::io::Error::last_os_error());
    }
}

/// Takes the page faults of the memory from `addr` to `addr + len` now
/// (madvise MADV_POPULATE_WRITE, Linux 5.14+), so that the thread which
/// then writes a large fresh buffer does not stop at each first touch: run
/// on another core, before or while that thread writes. Changes no byte of
/// memory. Advice only: on failure (an older kernel, memory no longer
/// mapped) nothing changes.
pub fn prefault_writable(addr: usize, len: usize) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = addr.div_ceil(page) * page;
    let end = addr.saturating_add(len) / page * page;
    if end <= start {
        return;
    }
    // SAFETY: MADV_POPULATE_WRITE only faults pages in (breaking copy-on-
    // write where needed) as a write would, without writing: no byte of any
    // mapping changes, whoever owns the range and whatever other threads do
    // with it meanwhile (concurrent writes meet an ordinary page fault). A
    // range no longer mapped, or mapped read-only, makes the call fail with
    // no effect.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) };
    if rc != 0 {
        tracing::debug!("madvise(MADV_POPULATE_WRITE) refused: {}", std::io::Error::last_os_error());
    }
}

/// Free space available to this (unprivileged) process on the file system
/// holding `path`, in bytes (statvfs: f_bavail × f_frsize).
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated string that outlives the call and `st`
    // points to writable memory of the size of `struct statvfs`, which the
    // kernel fills; it is read only when the call reports success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Sets `ORT_DISABLE_TELEMETRY=1` for ONNX Runtime, which reads it when its
/// environment is created: without it the library writes a device id and an
/// event database under `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`
/// before the API's DisableTelemetryEvents (called too, by
/// `infer::onnx::environment`) could switch the events off. The binary calls
/// this first thing in `main`, while it is the only thread; a program that
/// embeds the library must do the same before it starts threads.
pub fn disable_onnxruntime_telemetry() {
    // SAFETY: called at the start of `main`, before any thread is spawned (the
    // logger, D-Bus, HTTP and worker threads all start later), so no other
    // thread can read or write the environment concurrently.
    unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
}

/// Registers one CPU arena allocator in ONNX Runtime's environment
/// (`CreateAndRegisterAllocator`, default arena settings), which sessions
/// built with `session.use_env_allocators` share instead of each growing
/// an arena of its own: the folds, run one after the other, then need one
/// arena's peak rather than one per fold. Err: ONNX Runtime's message.
pub fn share_cpu_arena(env: &ort::environment::Environment) -> Result<(), String> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .map_err(|e| e.to_string())?;
    let api = ort::api();
    // SAFETY: `env` and `info` are live ONNX Runtime objects, borrowed for
    // the whole call; a null OrtArenaCfg asks for the default arena
    // (onnxruntime_c_api.h); the environment owns the allocator it creates
    // and copies what it needs from `info`.
    let status = unsafe { (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null()) };
    if status.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status returned above is an OrtStatus this function
    // owns; its message is a NUL-terminated string valid until the status is
    // released, which happens once, after the message was copied.
    let message = unsafe {
        let m = (api.GetErrorMessage)(status.0);
        let text = if m.is_null() { String::new() } else { std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned() };
        (api.ReleaseStatus)(status.0);
        text
    };
    Err(message)
}

/// The memory this process may use, as the machine and its cgroup say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryLimits {
    /// MemTotal of /proc/meminfo, bytes.
    pub total: Option<u64>,
    /// The lowest memory limit of the process's cgroup and its ancestors
    /// (cgroup v2 `memory.max`, as systemd's MemoryMax sets it; v1
    /// `memory.limit_in_bytes`); None: no limit or none readable.
    pub cgroup: Option<u64>,
}

impl MemoryLimits {
    /// Reads /proc/meminfo, /proc/self/cgroup and the cgroup's files.
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let total = read("/proc/meminfo").and_then(|t| meminfo_total(&t));
        let cgroup = read("/proc/self/cgroup").and_then(|t| cgroup_limit(&t, read));
        MemoryLimits { total, cgroup }
    }

    /// The smaller of the two (None when neither is known).
    pub fn smaller(&self) -> Option<u64> {
        match (self.total, self.cgroup) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        }
    }
}

/// MemTotal of /proc/meminfo's text, in bytes.
fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The lowest memory limit along the cgroup of /proc/self/cgroup's text and
/// its ancestors: cgroup v2 (`0::/path`, under /sys/fs/cgroup or, on a
/// hybrid system, /sys/fs/cgroup/unified) and v1 (`N:memory:/path`). "max"
/// and v1's page-rounded i64::MAX are no limit. `read` reads a file.
fn cgroup_limit(proc_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    let mut consider = |base: &str, rel: &str, file: &str| {
        let mut dir = std::path::PathBuf::from(rel.trim());
        loop {
            let p = format!("{base}{}/{file}", dir.display().to_string().trim_end_matches('/'));
            let v = read(&p).and_then(|t| t.trim().parse::<u64>().ok()).filter(|&v| v < (1u64 << 62));
            if let Some(v) = v {
                lowest = Some(lowest.map_or(v, |l| l.min(v)));
            }
            if !dir.pop() {
                break;
            }
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            consider("/sys/fs/cgroup", path, "memory.max");
            consider("/sys/fs/cgroup/unified", path, "memory.max");
        } else if controllers.split(',').any(|c| c == "memory") {
            consider("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes");
        }
    }
    lowest
}

#[cfg(test)]
mod memory_tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let t = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total(t), Some(24_576_000 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total("MemTotal: lots kB\n"), None);
    }

    /// The service's own cgroup (systemd's MemoryMax) and a slice above it
    /// with a lower limit: the lowest counts; "max" and v1's "unlimited" do not.
    #[test]
    fn the_lowest_cgroup_limit_along_the_path_counts() {
        let files: HashMap<&str, &str> = [
            ("/sys/fs/cgroup/system.slice/edgeseg.service/memory.max", "3221225472\n"),
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
            ("/sys/fs/cgroup/memory.max", "max\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        assert_eq!(cgroup_limit("0::/system.slice/edgeseg.service\n", read), Some(3 << 30));

        let files: HashMap<&str, &str> = [
            ("/sys/fs/cgroup/a.slice/b.service/memory.max", "8589934592\n"),
            ("/sys/fs/cgroup/a.slice/memory.max", "4294967296\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        assert_eq!(cgroup_limit("0::/a.slice/b.service\n", read), Some(4 << 30));

        // cgroup v1 (hybrid): the memory controller's line; unlimited is i64::MAX rounded to pages.
        let files: HashMap<&str, &str> = [
            ("/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "2147483648\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        assert_eq!(cgroup_limit("4:memory:/x\n1:cpu:/\n0::/\n", read), Some(2 << 30));
        assert_eq!(cgroup_limit("4:memory:/\n0::/\n", |p| files.get(p).map(|s| s.to_string())), None);
        assert_eq!(cgroup_limit("garbage", |_| None), None);
    }

    #[test]
    fn the_smaller_of_machine_and_cgroup() {
        let l = MemoryLimits { total: Some(16 << 30), cgroup: Some(3 << 30) };
        assert_eq!(l.smaller(), Some(3 << 30));
        assert_eq!(MemoryLimits { total: Some(16 << 30), cgroup: None }.smaller(), Some(16 << 30));
        assert_eq!(MemoryLimits::default().smaller(), None);
        // This machine: something, and never above its memory.
        let here = MemoryLimits::read();
        assert!(here.total.is_some());
        assert!(here.smaller() <= here.total);
    }
}
