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
