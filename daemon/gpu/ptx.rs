//! The kernels' device code: PTX that build.rs embedded (one per compute
//! capability), else the embedded sources compiled by NVRTC for the device at
//! hand, with the result cached on disk.
//!
//! Embedded PTX for compute_XX runs on every device of compute capability
//! XX or above (the driver JIT-compiles it), provided the driver knows the
//! PTX ISA version (`.version`) of the compiler that wrote it: a CUDA 12.0
//! driver reads ISA 8.0, JetPack 6 (12.2) 8.2, CUDA 13.0 9.0. build.rs writes
//! it with NVRTC 12.0 (ISA 8.0, the oldest CUDA the README promises). NVRTC
//! steps in for devices older than every embedded arch, for drivers older
//! than the PTX (a build whose PTX came from a newer nvcc), for builds
//! without PTX, and with `EDGESEG_FORCE_NVRTC=1`. NVRTC writes PTX of its own
//! ISA, so the library is chosen for the driver (`cuDriverGetVersion`): the
//! newest NVRTC no newer than the driver among `$EDGESEG_NVRTC` (a path; then
//! the only candidate), `libnvrtc.so.<driver major>`, `libnvrtc.so`,
//! `libnvrtc.so.13`, `libnvrtc.so.12`, `libnvrtc.so.11` (cudarc would take the
//! first that opens, e.g. the venv's NVRTC 13 on a CUDA 12 driver).
//!
//! Cache: `$EDGESEG_KERNEL_CACHE`, else `$XDG_CACHE_HOME/edgeseg/kernels`,
//! else `~/.cache/edgeseg/kernels`; files `<kernel>-compute_XX-<hash>.ptx`,
//! the hash over source, options, target and NVRTC version. Any cache I/O
//! failure only skips the cache.
#![allow(unsafe_code)]

#[path = "ptx/nvrtc.rs"]
pub(crate) mod nvrtc;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;
use sha2::{Digest, Sha256};

use crate::gpu::GpuError;
use nvrtc::{Nvrtc, NvrtcError};

/// One kernel file of `kernels/`.
pub(crate) struct KernelFile {
    /// File stem (`label`, `stats`, `suv`).
    pub(crate) name: &'static str,
    /// The source with its local includes inlined (what was compiled).
    pub(crate) source: &'static str,
    /// PTX per compute capability (e.g. 87 for compute_87), ascending.
    pub(crate) ptx: &'static [(u32, &'static str)],
}

include!(concat!(env!("OUT_DIR"), "/edgeseg_kernels.rs"));

/// NVRTC options besides the target (the same as build.rs's: no contraction).
const NVRTC_FLAGS: &[&str] = &["--fmad=false"];

/// The oldest CUDA the README promises ("CUDA 12/13" on workstations,
/// JetPack 6 = 12.2 on Jetson): 12.0, whose driver reads PTX ISA 8.0 at most.
#[cfg(test)]
pub(crate) const OLDEST_PROMISED_CUDA: (i32, i32) = (12, 0);
/// The PTX ISA of [`OLDEST_PROMISED_CUDA`].
#[cfg(test)]
pub(crate) const OLDEST_PROMISED_ISA: (u32, u32) = (8, 0);

/// The kernel file called `name`.
pub(crate) fn file(name: &str) -> Result<&'static KernelFile, GpuError> {
    KERNEL_FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| GpuError::Cuda(format!("kernels/{name}.cu is not embedded in this build")))
}

/// The compiler that built the embedded PTX (e.g. "NVRTC 12.0 (path)"), if any.
pub(crate) fn ptx_compiler() -> Option<&'static str> {
    (!PTX_COMPILER.is_empty()).then_some(PTX_COMPILER)
}

/// Loads `file` into `ctx` for a device of compute capability `arch`
/// (e.g. 87) under a driver of CUDA version `driver` (`cuDriverGetVersion`,
/// e.g. 12020): the embedded PTX of the highest arch ≤ `arch` where the
/// driver takes it, else NVRTC. Returns the module and how it was obtained,
/// which is logged once per module.
pub(crate) fn load(
    ctx: &Arc<CudaContext>,
    file: &KernelFile,
    arch: u32,
    driver: i32,
) -> Result<(Arc<CudaModule>, String), GpuError> {
    let isa = PTX_ISA.map(|(a, b)| format!("ISA {a}.{b}")).unwrap_or_default();
    let why = match embedded_choice(file, arch, force_nvrtc()) {
        Err(why) => why,
        Ok((a, ptx)) => match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => {
                let origin = format!("embedded PTX compute_{a} ({PTX_COMPILER}, {isa}, {PTX_FLAGS:?})");
                tracing::info!("kernels/{}.cu: {origin}", file.name);
                return Ok((module, origin));
            }
            Err(e) => format!(
                "the embedded PTX compute_{a} ({isa}) does not load under driver CUDA {}.{} ({e})",
                driver / 1000,
                driver % 1000 / 10
            ),
        },
    };
    let (module, origin) = nvrtc_load(ctx, file, arch, driver, &why)?;
    tracing::info!("kernels/{}.cu: {why}; {origin}", file.name);
    Ok((module, origin))
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

/// The NVRTC library for a driver of CUDA version `driver`, opened once per
/// process (see the module comment); Err(what was tried) where none opens.
fn nvrtc_for(driver: i32) -> Result<&'static Nvrtc, String> {
    static CHOSEN: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    CHOSEN.get_or_init(|| choose_nvrtc(&nvrtc_candidates(driver), driver)).as_ref().map_err(String::clone)
}

/// The library names tried, in order, for a driver of CUDA version `driver`.
fn nvrtc_candidates(driver: i32) -> Vec<String> {
    if let Some(path) = std::env::var("EDGESEG_NVRTC").ok().filter(|p| !p.trim().is_empty()) {
        return vec![path];
    }
    let mut names = vec![format!("libnvrtc.so.{}", driver / 1000)];
    for n in ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11"] {
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    names
}

/// Opens every candidate and keeps the one [`pick_nvrtc`] picks.
fn choose_nvrtc(candidates: &[String], driver: i32) -> Result<Nvrtc, String> {
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for c in candidates {
        match Nvrtc::open(c) {
            Ok(n) => opened.push(n),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let versions: Vec<(i32, i32)> = opened.iter().map(Nvrtc::version).collect();
    match pick_nvrtc(&versions, driver) {
        Some(i) => {
            let n = opened.swap_remove(i);
            if cuda_version(n.version()) > driver {
                tracing::warn!(
                    "{n:?} is newer than the driver (CUDA {}.{}): its PTX may not load; install the NVRTC of the \
                     driver's CUDA or set EDGESEG_NVRTC",
                    driver / 1000,
                    driver % 1000 / 10
                );
            }
            Ok(n)
        }
        None => Err(format!("no NVRTC library opens ({})", failed.join("; "))),
    }
}

fn cuda_version((major, minor): (i32, i32)) -> i32 {
    major * 1000 + minor * 10
}

/// Of the NVRTC versions found, the newest no newer than the driver's CUDA
/// version (its PTX ISA is one the driver reads); where all are newer, the
/// oldest (its PTX may still load: a try rather than nothing).
fn pick_nvrtc(versions: &[(i32, i32)], driver: i32) -> Option<usize> {
    let fits = (0..versions.len())
        .filter(|&i| cuda_version(versions[i]) <= driver)
        .max_by_key(|&i| (versions[i], std::cmp::Reverse(i)));
    fits.or_else(|| (0..versions.len()).min_by_key(|&i| (versions[i], i)))
}

fn nvrtc_load(
    ctx: &Arc<CudaContext>,
    file: &KernelFile,
    arch: u32,
    driver: i32,
    why: &str,
) -> Result<(Arc<CudaModule>, String), GpuError> {
    let nvrtc = nvrtc_for(driver).map_err(|e| {
        GpuError::NoDriver(format!("kernels/{}.cu: {why}, and {e} to compile it for compute_{arch}", file.name))
    })?;
    let supported = nvrtc.supported_archs().map_err(|e| GpuError::Cuda(format!("{nvrtc:?}: {e}")))?;
    let Some(target) = supported.iter().rev().copied().find(|&a| a <= arch) else {
        return Err(GpuError::Cuda(format!(
            "{nvrtc:?} targets none of compute_{arch} or below (it knows {supported:?}) for kernels/{}.cu",
            file.name
        )));
    };
    let version = nvrtc.version();
    let cache = cache_dir();
    let key = cache_key(file.source, target, version);
    let cached = cache.as_ref().map(|d| d.join(format!("{}-compute_{target}-{key}.ptx", file.name)));
    let origin = format!("NVRTC {}.{} ({}) compute_{target}", version.0, version.1, nvrtc.path());
    if let Some(path) = &cached
        && let Some(module) = load_cached(ctx, path)
    {
        return Ok((module, format!("{origin}, cached at {}", path.display())));
    }
    let text = nvrtc_compile(nvrtc, file, target)?;
    if let Some(path) = &cached {
        store_cached(path, &text);
    }
    let origin = match nvrtc::ptx_isa(&text) {
        Some((a, b)) => format!("{origin}, ISA {a}.{b}"),
        None => origin,
    };
    let module = ctx.load_module(Ptx::from_src(text)).map_err(|e| {
        GpuError::Cuda(format!("kernels/{}.cu compiled by {origin} does not load: {e} ({why})", file.name))
    })?;
    Ok((module, origin))
}

/// PTX of `file` for compute_`target`.
fn nvrtc_compile(nvrtc: &Nvrtc, file: &KernelFile, target: u32) -> Result<String, GpuError> {
    let mut options: Vec<String> = NVRTC_FLAGS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{target}"));
    nvrtc.compile(&format!("{}.cu", file.name), file.source, &options).map_err(|e: NvrtcError| {
        GpuError::Cuda(format!("{nvrtc:?} compiling kernels/{}.cu for compute_{target}: {e}", file.name))
    })
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
    fn embedded_ptx_loads_on_the_oldest_promised_driver() {
        // A driver JIT-compiles PTX only up to its own CUDA version's ISA.
        assert_eq!(OLDEST_PROMISED_ISA, (8, 0), "CUDA 12.0 reads PTX ISA 8.0");
        for name in ["label", "stats", "suv"] {
            let f = file(name).expect("embedded");
            assert!(
                !f.ptx.is_empty(),
                "{name}: no embedded PTX (build with the venv's nvidia-cuda-nvrtc-cu12, scripts/venv.sh)"
            );
            for (arch, ptx) in f.ptx {
                let isa = nvrtc::ptx_isa(ptx).expect(".version line");
                assert!(
                    isa <= OLDEST_PROMISED_ISA,
                    "{name} compute_{arch}: PTX ISA {isa:?} ({PTX_COMPILER}) is newer than CUDA {OLDEST_PROMISED_CUDA:?} drivers read"
                );
                assert!(Some(isa) <= PTX_ISA);
            }
        }
        assert_eq!(nvrtc::ptx_isa("//x\n.version 9.0\n.target sm_90"), Some((9, 0)));
        assert_eq!(nvrtc::ptx_isa(".target sm_90"), None);
    }

    #[test]
    fn nvrtc_library_chosen_for_the_driver() {
        // found: 13.0, 12.0, 12.8; driver 12.2 -> 12.0; 12.9 -> 12.8; 13.0 -> 13.0
        let found = [(13, 0), (12, 0), (12, 8)];
        assert_eq!(pick_nvrtc(&found, 12020), Some(1));
        assert_eq!(pick_nvrtc(&found, 12090), Some(2));
        assert_eq!(pick_nvrtc(&found, 13000), Some(0));
        assert_eq!(pick_nvrtc(&found, 13010), Some(0));
        // all newer than the driver: the oldest is tried
        assert_eq!(pick_nvrtc(&[(13, 0), (12, 8)], 12000), Some(1));
        assert_eq!(pick_nvrtc(&[], 12000), None);
        // the driver's own major first, then the generic names
        let c = nvrtc_candidates(12020);
        if std::env::var_os("EDGESEG_NVRTC").is_none() {
            assert_eq!(c[0], "libnvrtc.so.12");
            assert!(
                c.contains(&"libnvrtc.so.13".to_string()) && c.iter().filter(|n| *n == "libnvrtc.so.12").count() == 1
            );
        }
    }

    #[test]
    fn nvrtc_compiles_every_kernel_where_there_is_one() {
        // scripts/test.sh puts the venv's NVRTC 13.0 and 12.0 on the library
        // path and runs this with EDGESEG_FORCE_NVRTC=1: there, both must be
        // found and a CUDA 12.0 driver must get PTX it reads.
        for (driver, isa_max) in [(12000, OLDEST_PROMISED_ISA), (13000, (9, 0))] {
            let nvrtc = match choose_nvrtc(&nvrtc_candidates(driver), driver) {
                Ok(n) => n,
                Err(e) => {
                    assert!(!force_nvrtc(), "EDGESEG_FORCE_NVRTC=1 but {e}");
                    eprintln!("{e}: NVRTC compile test skipped");
                    return;
                }
            };
            if force_nvrtc() {
                assert!(cuda_version(nvrtc.version()) <= driver, "driver {driver}: {nvrtc:?}");
            }
            let archs = nvrtc.supported_archs().expect("archs");
            assert!(archs.contains(&80), "{archs:?}");
            for name in ["label", "stats", "suv"] {
                let f = file(name).expect("embedded");
                let ptx = nvrtc_compile(&nvrtc, f, 80).expect("compiles");
                assert!(ptx.contains(".target sm_80") && ptx.contains(".entry"), "{name}");
                if cuda_version(nvrtc.version()) <= driver {
                    let isa = nvrtc::ptx_isa(&ptx).expect(".version");
                    assert!(isa <= isa_max, "{nvrtc:?} wrote ISA {isa:?} for driver {driver}");
                }
                let bad = nvrtc.compile("x.cu", f.source, &["--gpu-architecture=compute_1".to_string()]);
                assert!(matches!(bad, Err(NvrtcError::Compile { invalid_option: true, .. })), "{bad:?}");
            }
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
