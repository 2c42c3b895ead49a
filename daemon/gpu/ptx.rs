//! The kernels' device code: PTX that build.rs embedded (nvcc, one per
//! compute capability), else the embedded sources compiled by NVRTC for the
//! device at hand, with the result cached on disk.
//!
//! Embedded PTX for compute_XX runs on every device of compute capability
//! XX or above (the driver JIT-compiles it), provided the driver knows the
//! PTX ISA version of the nvcc that wrote it (nvcc 13.0 writes ISA 9.0, which
//! needs a CUDA 13 driver, r580+). So NVRTC steps in for devices older than
//! every embedded arch (sm_72 Xavier with a CUDA 13 nvcc), for drivers older
//! than the PTX (JetPack 5/6, or a CUDA 12 driver on a workstation), and for
//! builds without nvcc. NVRTC writes PTX of its own ISA version, so the
//! NVRTC of the device's CUDA installation is the right one.
//!
//! Cache: `$EDGESEG_KERNEL_CACHE`, else `$XDG_CACHE_HOME/edgeseg/kernels`,
//! else `~/.cache/edgeseg/kernels`; files `<kernel>-compute_XX-<hash>.ptx`,
//! the hash over source, options, target and NVRTC version. Any cache I/O
//! failure only skips the cache.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};
use sha2::{Digest, Sha256};

use crate::gpu::GpuError;

/// One kernel file of `kernels/`.
pub(crate) struct KernelFile {
    /// File stem (`label`, `stats`, `suv`).
    pub(crate) name: &'static str,
    /// The source with its local includes inlined (what nvcc compiled).
    pub(crate) source: &'static str,
    /// PTX per compute capability (e.g. 87 for compute_87), ascending.
    pub(crate) ptx: &'static [(u32, &'static str)],
}

include!(concat!(env!("OUT_DIR"), "/edgeseg_kernels.rs"));

/// NVRTC options besides the target (the same as nvcc's: no contraction).
const NVRTC_FLAGS: &[&str] = &["--fmad=false"];

/// Compute capabilities NVRTC is asked for when it does not know the
/// device's own (an NVRTC older than the device): the next lower one that
/// it accepts, newest first.
const KNOWN_ARCHS: &[u32] = &[121, 120, 110, 103, 100, 90, 89, 88, 87, 86, 80, 75, 72, 70, 62, 61, 60, 53, 52, 50];

/// The kernel file called `name`.
pub(crate) fn file(name: &str) -> Result<&'static KernelFile, GpuError> {
    KERNEL_FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| GpuError::Cuda(format!("kernels/{name}.cu is not embedded in this build")))
}

/// The nvcc that built the embedded PTX, if any.
pub(crate) fn nvcc_version() -> Option<&'static str> {
    (!NVCC_VERSION.is_empty()).then_some(NVCC_VERSION)
}

/// Loads `file` into `ctx` for a device of compute capability `arch`
/// (e.g. 87): the embedded PTX of the highest arch ≤ `arch` where the driver
/// takes it, else NVRTC. Returns the module and how it was obtained.
pub(crate) fn load(
    ctx: &Arc<CudaContext>,
    file: &KernelFile,
    arch: u32,
) -> Result<(Arc<CudaModule>, String), GpuError> {
    let why = match embedded_choice(file, arch, force_nvrtc()) {
        Err(why) => why,
        Ok((a, ptx)) => match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => return Ok((module, format!("embedded PTX compute_{a} ({NVCC_VERSION}, {NVCC_FLAGS:?})"))),
            Err(e) => format!("the embedded PTX compute_{a} does not load ({e})"),
        },
    };
    tracing::info!("kernels/{}.cu: {why}; compiling with NVRTC", file.name);
    nvrtc_load(ctx, file, arch, &why)
}

/// `EDGESEG_FORCE_NVRTC=1`: compile with NVRTC even where the embedded PTX
/// would load (to check the NVRTC path on a machine whose driver takes the
/// embedded PTX, e.g. by scripts/gpu-check.sh).
pub(crate) fn force_nvrtc() -> bool {
    std::env::var("EDGESEG_FORCE_NVRTC").is_ok_and(|v| v.trim() == "1")
}

/// The embedded PTX to try for a device of compute capability `arch`: the
/// highest arch ≤ `arch`; Err(why not) where NVRTC must compile instead.
fn embedded_choice(file: &KernelFile, arch: u32, force_nvrtc: bool) -> Result<(u32, &'static str), String> {
    if force_nvrtc {
        return Err("EDGESEG_FORCE_NVRTC=1".to_string());
    }
    match file.ptx.iter().rev().find(|(a, _)| *a <= arch) {
        Some(&(a, ptx)) => Ok((a, ptx)),
        None if file.ptx.is_empty() => Err("this build embeds no PTX (no nvcc at build time)".to_string()),
        None => Err(format!("no embedded PTX for compute_{arch} or below")),
    }
}

fn nvrtc_load(
    ctx: &Arc<CudaContext>,
    file: &KernelFile,
    arch: u32,
    why: &str,
) -> Result<(Arc<CudaModule>, String), GpuError> {
    // SAFETY: only probes whether a libnvrtc can be dlopen'ed; without this,
    // the first NVRTC call would panic where there is none.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::NoDriver(format!(
            "kernels/{}.cu: {why}, and no NVRTC library (libnvrtc.so) is on the library path to compile it for \
             compute_{arch}",
            file.name
        )));
    }
    let version = nvrtc_version();
    let cache = cache_dir();
    let mut last_err = String::new();
    let first = KNOWN_ARCHS.iter().position(|&a| a <= arch).unwrap_or(KNOWN_ARCHS.len());
    let targets = std::iter::once(arch).chain(KNOWN_ARCHS[first..].iter().copied().filter(|&a| a != arch));
    for target in targets {
        let key = cache_key(file.source, target, version);
        let cached = cache.as_ref().map(|d| d.join(format!("{}-compute_{target}-{key}.ptx", file.name)));
        if let Some(path) = &cached
            && let Some(module) = load_cached(ctx, path)
        {
            return Ok((module, format!("NVRTC compute_{target} (cached at {})", path.display())));
        }
        let text = match nvrtc_compile(file, target, version)? {
            Ok(text) => text,
            Err(log) => {
                // This NVRTC does not know compute_{target}: try the next lower one.
                last_err = log;
                continue;
            }
        };
        if let Some(path) = &cached {
            store_cached(path, &text);
        }
        let module = ctx.load_module(Ptx::from_src(text)).map_err(|e| {
            GpuError::Cuda(format!(
                "kernels/{}.cu compiled by NVRTC {}.{} for compute_{target} does not load: {e} ({why})",
                file.name, version.0, version.1
            ))
        })?;
        return Ok((module, format!("NVRTC {}.{} compute_{target}", version.0, version.1)));
    }
    Err(GpuError::Cuda(format!(
        "NVRTC {}.{} accepts no architecture at or below compute_{arch} for kernels/{}.cu: {last_err}",
        version.0, version.1, file.name
    )))
}

/// PTX of `file` for compute_`target`; Ok(Err(log)) where this NVRTC does
/// not know that architecture.
fn nvrtc_compile(file: &KernelFile, target: u32, version: (i32, i32)) -> Result<Result<String, String>, GpuError> {
    let mut options: Vec<String> = NVRTC_FLAGS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{target}"));
    let opts = CompileOptions { options, name: Some(format!("{}.cu", file.name)), ..Default::default() };
    match compile_ptx_with_opts(file.source, opts) {
        Ok(ptx) => Ok(Ok(ptx.to_src())),
        Err(CompileError::CompileError { nvrtc, log, .. })
            if nvrtc.0 == cudarc::nvrtc::sys::nvrtcResult::NVRTC_ERROR_INVALID_OPTION =>
        {
            Ok(Err(log.to_string_lossy().into_owned()))
        }
        Err(CompileError::CompileError { nvrtc, log, .. }) => Err(GpuError::Cuda(format!(
            "NVRTC {}.{} compiling kernels/{}.cu for compute_{target}: {nvrtc:?}\n{}",
            version.0,
            version.1,
            file.name,
            log.to_string_lossy()
        ))),
        Err(e) => Err(GpuError::Cuda(format!("NVRTC compiling kernels/{}.cu: {e}", file.name))),
    }
}

fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints through valid pointers; the
    // library is present (checked by the caller). Exists in every NVRTC.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return (0, 0);
    }
    (major, minor)
}

fn cache_key(source: &str, target: u32, version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    for f in NVRTC_FLAGS {
        h.update(f.as_bytes());
        h.update([0]);
    }
    h.update(format!("compute_{target}\0nvrtc {}.{}", version.0, version.1).as_bytes());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The cache folder (not created here), or None where no location is known.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = nonempty("EDGESEG_KERNEL_CACHE") {
        return Some(dir);
    }
    if let Some(dir) = nonempty("XDG_CACHE_HOME") {
        return Some(dir.join("edgeseg/kernels"));
    }
    nonempty("HOME").map(|h| h.join(".cache/edgeseg/kernels"))
}

fn load_cached(ctx: &Arc<CudaContext>, path: &Path) -> Option<Arc<CudaModule>> {
    let text = std::fs::read_to_string(path).ok()?;
    // A NUL would make the driver wrapper panic; PTX never holds one.
    if text.contains('\0') || !text.contains(".version") {
        return None;
    }
    match ctx.load_module(Ptx::from_src(text)) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("cached kernel {} does not load ({e}); recompiling", path.display());
            None
        }
    }
}

fn store_cached(path: &Path, text: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        tracing::debug!("kernel cache {} not written: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_embedded_with_ascending_ptx() {
        for name in ["label", "stats", "suv"] {
            let f = file(name).expect("embedded");
            assert!(f.source.contains("extern \"C\" __global__"), "{name}");
            assert!(!f.source.lines().any(|l| l.trim_start().starts_with("#include")), "{name}: includes are inlined");
            assert!(f.ptx.windows(2).all(|w| w[0].0 < w[1].0), "{name}");
            for (arch, ptx) in f.ptx {
                assert!(ptx.contains(&format!(".target sm_{arch}")), "{name} compute_{arch}");
            }
        }
    }

    #[test]
    fn nvrtc_compiles_every_kernel_where_there_is_one() {
        // SAFETY: a dlopen probe only.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            // scripts/test.sh runs this with EDGESEG_FORCE_NVRTC=1 and the
            // venv's NVRTC: there, the NVRTC path must work.
            assert!(!force_nvrtc(), "EDGESEG_FORCE_NVRTC=1 but no libnvrtc on the library path");
            eprintln!("no libnvrtc on the library path: NVRTC compile test skipped");
            return;
        }
        let version = nvrtc_version();
        for name in ["label", "stats", "suv"] {
            let f = file(name).expect("embedded");
            let ptx = nvrtc_compile(f, 80, version).expect("compiles").expect("NVRTC knows compute_80");
            assert!(ptx.contains(".target sm_80") && ptx.contains(".entry"), "{name}");
            assert!(nvrtc_compile(f, 1, version).expect("an unknown arch is not an error").is_err());
        }
    }

    #[test]
    fn forced_nvrtc_skips_the_embedded_ptx() {
        let f = file("label").expect("embedded");
        assert!(embedded_choice(f, 90, true).is_err_and(|why| why.contains("EDGESEG_FORCE_NVRTC")));
        match embedded_choice(f, 90, false) {
            Ok((a, ptx)) => assert!(a <= 90 && ptx.contains(".entry")),
            Err(why) => assert!(f.ptx.iter().all(|(a, _)| *a > 90) || f.ptx.is_empty(), "{why}"),
        }
        assert!(embedded_choice(f, 10, false).is_err());
    }

    #[test]
    fn cache_key_depends_on_target_and_version() {
        let a = cache_key("src", 87, (12, 6));
        assert_eq!(a.len(), 16);
        assert_ne!(a, cache_key("src", 72, (12, 6)));
        assert_ne!(a, cache_key("src", 87, (11, 4)));
        assert_ne!(a, cache_key("src2", 87, (12, 6)));
    }
}
