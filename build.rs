//! Build script: stamps the binary with its git revision (used by `--version`
//! and, later, the `edgeseg_build_info` metric) and, with the `cuda` feature,
//! compiles the CUDA kernels of `kernels/` to PTX.
//!
//! CUDA (feature `cuda` only): each `kernels/*.cu`, with its local
//! `#include "x.cuh"` lines inlined, is written to `$OUT_DIR/kernels/` and
//! compiled to PTX for every architecture of `EDGESEG_CUDA_ARCHS` (default
//! 72,80,86,87,89,90) that the compiler supports. The generated
//! `$OUT_DIR/edgeseg_kernels.rs` embeds the flattened sources and the PTX;
//! `daemon/gpu/ptx.rs` includes it.
//!
//! The compiler: a driver loads PTX up to its own CUDA version's ISA, so the
//! embedded PTX is written by an NVRTC as old as the oldest CUDA the README
//! promises (CUDA 12.0, PTX ISA 8.0): `$EDGESEG_PTX_NVRTC` (a libnvrtc path;
//! `none` skips this step), else the venv's `nvidia-cuda-nvrtc-cu12` wheel
//! (`.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12`,
//! pinned to 12.0 in requirements/test.txt), dlopened through
//! `daemon/gpu/ptx/nvrtc.rs`. Without one, nvcc, with a warning when its ISA
//! is newer than 8.0: `$NVCC` (a path or a name on PATH; any other value,
//! e.g. `none`, means no nvcc), `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`,
//! on `PATH`, in the project venv (`nvidia/cu*/bin/nvcc`, the
//! `nvidia-cuda-nvcc` wheel) and at `/usr/local/cuda/bin/nvcc`. Without
//! either only the sources are embedded and the kernels are compiled by NVRTC
//! on first use.

use std::process::Command;

#[cfg(feature = "cuda")]
#[path = "daemon/gpu/ptx/nvrtc.rs"]
#[allow(dead_code)]
mod nvrtc;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // HEAD names a branch; the branch's ref file changes on every commit.
    if let Some(r) =
        std::fs::read_to_string(".git/HEAD").ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!("cargo:rerun-if-changed=.git/{r}");
        println!("cargo:rerun-if-changed=.git/packed-refs");
    }
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EDGESEG_GIT_REV={rev}");

    #[cfg(feature = "cuda")]
    cuda::build();
    if std::env::var_os("CARGO_FEATURE_EMULATION").is_some() {
        emulation::build();
    }
}

/// Feature `emulation` (tests only): the host emulation driver of the CUDA
/// kernels, `kernels/emulation/driver.cpp` (which includes `kernels/*.cu`
/// with `cuda_host.h`), built with `$CXX` (default g++) into
/// `$OUT_DIR/edgeseg-kernel-emu`; its path is `EDGESEG_KERNEL_EMU` at compile
/// time (daemon/gpu/emulation.rs).
mod emulation {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    pub(super) fn build() {
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        println!("cargo:rerun-if-changed=kernels");
        println!("cargo:rerun-if-changed=kernels/emulation");
        println!("cargo:rerun-if-env-changed=CXX");
        let cxx = env::var("CXX").ok().filter(|c| !c.trim().is_empty()).unwrap_or_else(|| "g++".to_string());
        let exe = out.join("edgeseg-kernel-emu");
        let status = Command::new(&cxx)
            .args(["-std=c++20", "-O2", "-g", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Werror"])
            .args(["-Wno-unknown-pragmas", "-Wno-unused-parameter"])
            .arg("-o")
            .arg(&exe)
            .arg(manifest.join("kernels/emulation/driver.cpp"))
            .status()
            .unwrap_or_else(|e| panic!("running {cxx} for the kernel emulation (feature `emulation`): {e}"));
        if !status.success() {
            panic!("{cxx} failed to build kernels/emulation/driver.cpp ({status})");
        }
        println!("cargo:rustc-env=EDGESEG_KERNEL_EMU={}", exe.display());
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::nvrtc::{Nvrtc, ptx_isa};
    use std::env;
    use std::fmt::Write as _;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Architectures wanted by default: Jetson Xavier (72) and Orin (87),
    /// A100 (80), RTX 30xx/A-series (86), RTX 40xx/L4/L40 (89), H100/H200 (90).
    const DEFAULT_ARCHS: [u32; 6] = [72, 80, 86, 87, 89, 90];

    /// nvcc options; NVRTC gets the same ones at run time (daemon/gpu/ptx.rs).
    const NVCC_FLAGS: [&str; 3] = ["--ptx", "-fmad=false", "--allow-unsupported-compiler"];

    /// NVRTC options besides the target (as nvcc's: no contraction); the
    /// same as daemon/gpu/ptx.rs's run-time ones.
    const NVRTC_FLAGS: [&str; 1] = ["--fmad=false"];

    /// The PTX ISA of the oldest CUDA the README promises (12.0): an nvcc
    /// newer than that writes PTX older drivers refuse (a warning).
    const OLDEST_ISA: (u32, u32) = (8, 0);

    struct Kernel {
        name: String,
        flat: PathBuf,
        ptx: Vec<(u32, PathBuf)>,
    }

    pub(super) fn build() {
        let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let kernel_dir = manifest.join("kernels");
        println!("cargo:rerun-if-changed=kernels");
        for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "EDGESEG_CUDA_ARCHS"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let venv_stamp = manifest.join(".venv/.req-hash");
        if venv_stamp.is_file() {
            println!("cargo:rerun-if-changed=.venv/.req-hash");
        }

        let flat_dir = out.join("kernels");
        fs::create_dir_all(&flat_dir).unwrap_or_else(|e| panic!("creating {}: {e}", flat_dir.display()));
        let mut kernels = Vec::new();
        for src in list_kernels(&kernel_dir) {
            let name = src.file_stem().and_then(|s| s.to_str()).expect("kernel file names are UTF-8").to_string();
            let text = flatten(&src, &kernel_dir, &mut Vec::new());
            let flat = flat_dir.join(format!("{name}.cu"));
            write_if_changed(&flat, &text);
            kernels.push(Kernel { name, flat, ptx: Vec::new() });
        }

        let mut compiler = String::new();
        let mut flags: Vec<&str> = Vec::new();
        let archs = wanted_archs();
        if let Some(nvrtc) = find_nvrtc(&manifest) {
            compiler = format!("NVRTC {}.{} ({})", nvrtc.version().0, nvrtc.version().1, nvrtc.path());
            flags = NVRTC_FLAGS.to_vec();
            let supported = nvrtc.supported_archs().unwrap_or_else(|e| panic!("{compiler}: {e}"));
            let (build, dropped): (Vec<u32>, Vec<u32>) = archs.iter().partition(|a| supported.contains(a));
            warn_dropped(&compiler, &dropped);
            compile_all_nvrtc(&nvrtc, &mut kernels, &build, &flat_dir);
        } else {
            match find_nvcc(&manifest) {
                Ok(nvcc) => {
                    println!("cargo:rerun-if-changed={}", nvcc.display());
                    compiler = version_line(&nvcc);
                    flags = NVCC_FLAGS.to_vec();
                    let supported = supported_archs(&nvcc);
                    let (build, dropped): (Vec<u32>, Vec<u32>) =
                        archs.iter().partition(|a| supported.as_ref().is_none_or(|s| s.contains(a)));
                    warn_dropped(&compiler, &dropped);
                    compile_all(&nvcc, &mut kernels, &build, &flat_dir);
                }
                Err(why) => {
                    println!(
                        "cargo:warning=no NVRTC 12 for build-time PTX and no nvcc ({why}): embedding the CUDA kernel \
                         sources only; they are compiled by NVRTC at first use (run scripts/venv.sh, or set \
                         EDGESEG_PTX_NVRTC to a CUDA 12.0 libnvrtc.so.12)"
                    );
                }
            }
        }
        let isa = kernels
            .iter()
            .flat_map(|k| &k.ptx)
            .map(|(arch, path)| {
                let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                ptx_isa(&text).unwrap_or_else(|| panic!("{}: no .version line (compute_{arch})", path.display()))
            })
            .max();
        if let Some(isa) = isa.filter(|&isa| isa > OLDEST_ISA) {
            println!(
                "cargo:warning=the embedded PTX ({compiler}) is ISA {}.{}: drivers older than that CUDA version \
                 (the README promises CUDA 12.0, ISA {}.{}) fall back to NVRTC at run time; build with the venv's \
                 nvidia-cuda-nvrtc-cu12 (scripts/venv.sh) or EDGESEG_PTX_NVRTC",
                isa.0, isa.1, OLDEST_ISA.0, OLDEST_ISA.1
            );
        }
        write_module(&out, &kernels, &compiler, &flags, isa);
    }

    /// The build-time NVRTC: `$EDGESEG_PTX_NVRTC` (a library path; `none`:
    /// none), else the venv's CUDA 12 NVRTC wheel. A set path that does not
    /// open fails the build; the venv's only warns.
    fn find_nvrtc(manifest: &Path) -> Option<Nvrtc> {
        println!("cargo:rerun-if-env-changed=EDGESEG_PTX_NVRTC");
        if let Some(v) = env::var("EDGESEG_PTX_NVRTC").ok().filter(|v| !v.trim().is_empty()) {
            if v.trim() == "none" {
                return None;
            }
            println!("cargo:rerun-if-changed={v}");
            return Some(Nvrtc::open(&v).unwrap_or_else(|e| panic!("EDGESEG_PTX_NVRTC: {e}")));
        }
        let libs = fs::read_dir(manifest.join(".venv/lib")).ok()?;
        let mut found: Vec<PathBuf> = libs
            .filter_map(Result::ok)
            .map(|l| l.path().join("site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        let path = found.pop()?;
        println!("cargo:rerun-if-changed={}", path.display());
        match Nvrtc::open(&path.display().to_string()) {
            Ok(n) => Some(n),
            Err(e) => {
                println!("cargo:warning={e}; trying nvcc");
                None
            }
        }
    }

    fn warn_dropped(compiler: &str, dropped: &[u32]) {
        if !dropped.is_empty() {
            println!(
                "cargo:warning={compiler} cannot target compute_{}: devices of {} use NVRTC at run time",
                join(dropped, ",compute_"),
                if dropped.len() == 1 { "that architecture" } else { "those architectures" },
            );
        }
    }

    fn compile_all_nvrtc(nvrtc: &Nvrtc, kernels: &mut [Kernel], archs: &[u32], dir: &Path) {
        for k in kernels.iter_mut() {
            let source = fs::read_to_string(&k.flat).unwrap_or_else(|e| panic!("reading {}: {e}", k.flat.display()));
            for &arch in archs {
                let mut options: Vec<String> = NVRTC_FLAGS.iter().map(|f| f.to_string()).collect();
                options.push(format!("--gpu-architecture=compute_{arch}"));
                let ptx = nvrtc.compile(&format!("{}.cu", k.name), &source, &options).unwrap_or_else(|e| {
                    panic!(
                        "{nvrtc:?} on kernels/{}.cu for compute_{arch}: {e}\n(set EDGESEG_PTX_NVRTC=none to use nvcc)",
                        k.name
                    )
                });
                let path = dir.join(format!("{}.compute_{arch}.ptx", k.name));
                write_if_changed(&path, &ptx);
                k.ptx.push((arch, path));
            }
        }
    }

    fn list_kernels(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect();
        files.sort();
        files
    }

    /// The file with each `#include "local.cuh"` replaced by that file
    /// (once per translation unit; later includes of it become blank lines).
    fn flatten(path: &Path, dir: &Path, seen: &mut Vec<PathBuf>) -> String {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let include = line
                .trim()
                .strip_prefix("#include")
                .map(str::trim)
                .and_then(|rest| rest.strip_prefix('"'))
                .and_then(|rest| rest.split('"').next());
            match include {
                Some(name) => {
                    let inc = dir.join(name);
                    if !inc.is_file() {
                        panic!("{}: include \"{name}\" is not a file of kernels/", path.display());
                    }
                    if !seen.contains(&inc) {
                        seen.push(inc.clone());
                        let _ = writeln!(out, "// ---- begin {name} ----");
                        out.push_str(&flatten(&inc, dir, seen));
                        let _ = writeln!(out, "// ---- end {name} ----");
                    }
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    fn write_if_changed(path: &Path, text: &str) {
        if fs::read_to_string(path).ok().as_deref() != Some(text) {
            fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }

    fn find_nvcc(manifest: &Path) -> Result<PathBuf, String> {
        if let Some(v) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
            let p = PathBuf::from(&v);
            let found = if p.components().count() > 1 { Some(p.clone()) } else { on_path(&p) };
            return match found.filter(|p| works(p)) {
                Some(p) => Ok(p),
                None => Err(format!("NVCC={} is not a working nvcc", p.display())),
            };
        }
        let mut looked = Vec::new();
        let mut candidates = Vec::new();
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(home) = env::var_os(var).filter(|v| !v.is_empty()) {
                candidates.push(PathBuf::from(home).join("bin/nvcc"));
            }
        }
        candidates.extend(on_path(Path::new("nvcc")));
        candidates.extend(venv_nvcc(manifest));
        candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
        for c in candidates {
            if works(&c) {
                return Ok(c);
            }
            looked.push(c.display().to_string());
        }
        Err(format!("looked at {}", looked.join(", ")))
    }

    fn on_path(name: &Path) -> Option<PathBuf> {
        env::split_paths(&env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
    }

    /// `.venv/lib/python3*/site-packages/nvidia/{cu13,cu12,...,cuda_nvcc}/bin/nvcc`,
    /// newest CUDA first.
    fn venv_nvcc(manifest: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let Ok(libs) = fs::read_dir(manifest.join(".venv/lib")) else { return found };
        for lib in libs.filter_map(Result::ok) {
            let nvidia = lib.path().join("site-packages/nvidia");
            let Ok(dirs) = fs::read_dir(&nvidia) else { continue };
            for d in dirs.filter_map(Result::ok) {
                let nvcc = d.path().join("bin/nvcc");
                if nvcc.is_file() {
                    found.push(nvcc);
                }
            }
        }
        found.sort();
        found.reverse();
        found
    }

    fn works(nvcc: &Path) -> bool {
        nvcc.is_file() && Command::new(nvcc).arg("--version").output().is_ok_and(|o| o.status.success())
    }

    fn version_line(nvcc: &Path) -> String {
        Command::new(nvcc)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().find(|l| l.contains("release")).map(|l| l.trim().to_string()))
            .unwrap_or_else(|| "nvcc".to_string())
    }

    fn wanted_archs() -> Vec<u32> {
        match env::var("EDGESEG_CUDA_ARCHS") {
            Ok(list) if !list.trim().is_empty() => {
                let mut archs: Vec<u32> = list
                    .split(',')
                    .map(|a| {
                        let a = a.trim().trim_start_matches("sm_").trim_start_matches("compute_");
                        a.parse().unwrap_or_else(|_| panic!("EDGESEG_CUDA_ARCHS: {a:?} is not an architecture like 87"))
                    })
                    .collect();
                archs.sort_unstable();
                archs.dedup();
                archs
            }
            _ => DEFAULT_ARCHS.to_vec(),
        }
    }

    /// The `compute_XX` targets nvcc lists, or None when it cannot list them
    /// (nvcc before 11): then every wanted arch is tried.
    fn supported_archs(nvcc: &Path) -> Option<Vec<u32>> {
        let out = Command::new(nvcc).arg("--list-gpu-arch").output().ok().filter(|o| o.status.success())?;
        let text = String::from_utf8(out.stdout).ok()?;
        let archs: Vec<u32> =
            text.lines().filter_map(|l| l.trim().strip_prefix("compute_")).filter_map(|a| a.parse().ok()).collect();
        (!archs.is_empty()).then_some(archs)
    }

    fn compile_all(nvcc: &Path, kernels: &mut [Kernel], archs: &[u32], dir: &Path) {
        let jobs: Vec<(usize, u32)> = (0..kernels.len()).flat_map(|k| archs.iter().map(move |&a| (k, a))).collect();
        let results: Vec<(usize, u32, Result<PathBuf, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|&(k, arch)| {
                    let kernel = &kernels[k];
                    let ptx = dir.join(format!("{}.compute_{arch}.ptx", kernel.name));
                    let flat = kernel.flat.clone();
                    s.spawn(move || (k, arch, run_nvcc(nvcc, &flat, &ptx, arch).map(|()| ptx)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("nvcc thread does not panic")).collect()
        });
        for (k, arch, result) in results {
            match result {
                Ok(ptx) => kernels[k].ptx.push((arch, ptx)),
                Err(e) => {
                    let hint = if e.contains("Unsupported .version") {
                        "\nnvcc's cicc writes a newer PTX ISA than its ptxas reads: the nvidia-nvvm (and \
                         nvidia-cuda-crt) wheels must be the same version as nvidia-cuda-nvcc; pin them together."
                    } else {
                        ""
                    };
                    panic!(
                        "nvcc failed on kernels/{}.cu for compute_{arch}:\n{e}{hint}\n(set NVCC=none to build \
                         without nvcc; the kernels are then compiled by NVRTC at run time)",
                        kernels[k].name
                    )
                }
            }
        }
        for k in kernels.iter_mut() {
            k.ptx.sort_by_key(|(a, _)| *a);
        }
    }

    fn run_nvcc(nvcc: &Path, src: &Path, ptx: &Path, arch: u32) -> Result<(), String> {
        let out = Command::new(nvcc)
            .args(NVCC_FLAGS)
            .arg(format!("-arch=compute_{arch}"))
            .arg("-o")
            .arg(ptx)
            .arg(src)
            .output()
            .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
        if out.status.success() && ptx.is_file() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn join(v: &[u32], sep: &str) -> String {
        v.iter().map(u32::to_string).collect::<Vec<_>>().join(sep)
    }

    fn write_module(out: &Path, kernels: &[Kernel], compiler: &str, flags: &[&str], isa: Option<(u32, u32)>) {
        let mut rs = String::new();
        let _ = writeln!(rs, "// Generated by build.rs: the CUDA kernels of kernels/, flattened, and their PTX.");
        let _ = writeln!(rs, "/// The compiler that built the embedded PTX (empty: none, NVRTC at run time only).");
        let _ = writeln!(rs, "pub(crate) const PTX_COMPILER: &str = {compiler:?};");
        let _ = writeln!(rs, "/// The compiler options of the embedded PTX.");
        let _ = writeln!(rs, "pub(crate) const PTX_FLAGS: &[&str] = &{flags:?};");
        let _ = writeln!(rs, "/// The highest PTX ISA (`.version`) of the embedded PTX.");
        let _ = writeln!(rs, "pub(crate) const PTX_ISA: Option<(u32, u32)> = {isa:?};");
        let _ = writeln!(rs, "/// Every kernel file: name, flattened source, PTX per compute capability.");
        let _ = writeln!(rs, "pub(crate) const KERNEL_FILES: &[KernelFile] = &[");
        for k in kernels {
            let _ = writeln!(rs, "    KernelFile {{");
            let _ = writeln!(rs, "        name: {:?},", k.name);
            let _ = writeln!(rs, "        source: include_str!({:?}),", k.flat.display().to_string());
            let _ = writeln!(rs, "        ptx: &[");
            for (arch, ptx) in &k.ptx {
                let _ = writeln!(rs, "            ({arch}, include_str!({:?})),", ptx.display().to_string());
            }
            let _ = writeln!(rs, "        ],");
            let _ = writeln!(rs, "    }},");
        }
        let _ = writeln!(rs, "];");
        write_if_changed(&out.join("edgeseg_kernels.rs"), &rs);
    }
}
