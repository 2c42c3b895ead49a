//! A minimal NVRTC binding over `dlopen` (libloading) that, unlike cudarc's,
//! opens a chosen library: the build (build.rs includes this file with
//! `#[path]`) compiles the embedded PTX with an NVRTC as old as the oldest
//! promised driver, and the run-time fallback picks the NVRTC whose PTX the
//! driver found can load (`ptx.rs`). Depends on std and libloading only.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;

type Program = *mut c_void;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type NumArchsFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type ArchsFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type TextFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;

const NVRTC_SUCCESS: c_int = 0;
const NVRTC_ERROR_INVALID_OPTION: c_int = 5;

/// What went wrong with an NVRTC library or one compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvrtcError {
    /// The library does not open or lacks a function.
    Library {
        /// The library path or name.
        path: String,
        /// dlopen's or dlsym's message.
        reason: String,
    },
    /// An NVRTC call returned an error code.
    Call {
        /// The function.
        call: &'static str,
        /// Its `nvrtcResult`.
        code: i32,
    },
    /// The source or an option contains a NUL byte.
    Nul(&'static str),
    /// The compilation failed (the log; `invalid_option` where NVRTC refused
    /// an option such as an architecture it does not know).
    Compile {
        /// NVRTC_ERROR_INVALID_OPTION rather than a compile error.
        invalid_option: bool,
        /// The program log.
        log: String,
    },
}

impl fmt::Display for NvrtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Library { path, reason } => write!(f, "NVRTC library {path}: {reason}"),
            Self::Call { call, code } => write!(f, "{call} returned nvrtcResult {code}"),
            Self::Nul(what) => write!(f, "the {what} contains a NUL byte"),
            Self::Compile { invalid_option: true, log } => write!(f, "invalid NVRTC option: {log}"),
            Self::Compile { invalid_option: false, log } => write!(f, "compilation failed:\n{log}"),
        }
    }
}

impl std::error::Error for NvrtcError {}

/// One opened NVRTC library.
pub struct Nvrtc {
    lib: libloading::Library,
    path: String,
    version: (i32, i32),
}

impl fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NVRTC {}.{} ({})", self.version.0, self.version.1, self.path)
    }
}

impl Nvrtc {
    /// Opens `path` (a file path, or a soname the dynamic linker looks up).
    pub fn open(path: &str) -> Result<Self, NvrtcError> {
        let lib_err = |reason: String| NvrtcError::Library { path: path.to_string(), reason };
        // SAFETY: loading NVRTC runs only its (side-effect-free) initialisers;
        // the library stays loaded as long as `self`, which owns it.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| lib_err(e.to_string()))?;
        let mut n = Self { lib, path: path.to_string(), version: (0, 0) };
        let (mut major, mut minor) = (0, 0);
        let f: VersionFn = n.sym(b"nvrtcVersion\0")?;
        // SAFETY: nvrtcVersion writes two ints through valid pointers.
        let r = unsafe { f(&mut major, &mut minor) };
        if r != NVRTC_SUCCESS {
            return Err(NvrtcError::Call { call: "nvrtcVersion", code: r });
        }
        n.version = (major, minor);
        Ok(n)
    }

    /// The path or name it was opened by.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// (major, minor), e.g. (12, 0).
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    fn sym<T: Copy>(&self, name: &'static [u8]) -> Result<T, NvrtcError> {
        // SAFETY: every `T` used with this is the C signature of the NVRTC
        // function of that name (nvrtc.h, unchanged since CUDA 11.2); the
        // copied function pointer is used only while `self.lib` is loaded.
        let s = unsafe { self.lib.get::<T>(name) }.map_err(|e| NvrtcError::Library {
            path: self.path.clone(),
            reason: format!("{}: {e}", String::from_utf8_lossy(&name[..name.len() - 1])),
        })?;
        Ok(*s)
    }

    /// The compute capabilities this NVRTC can target (e.g. 50..=90), ascending.
    pub fn supported_archs(&self) -> Result<Vec<u32>, NvrtcError> {
        let count: NumArchsFn = self.sym(b"nvrtcGetNumSupportedArchs\0")?;
        let list: ArchsFn = self.sym(b"nvrtcGetSupportedArchs\0")?;
        let mut n: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        let r = unsafe { count(&mut n) };
        if r != NVRTC_SUCCESS {
            return Err(NvrtcError::Call { call: "nvrtcGetNumSupportedArchs", code: r });
        }
        let mut archs = vec![0 as c_int; usize::try_from(n).unwrap_or(0)];
        if archs.is_empty() {
            return Ok(Vec::new());
        }
        // SAFETY: `archs` holds exactly the count NVRTC reported.
        let r = unsafe { list(archs.as_mut_ptr()) };
        if r != NVRTC_SUCCESS {
            return Err(NvrtcError::Call { call: "nvrtcGetSupportedArchs", code: r });
        }
        let mut out: Vec<u32> = archs.into_iter().filter_map(|a| u32::try_from(a).ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Compiles `source` (no headers) named `name` with `options`; the PTX text.
    pub fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<String, NvrtcError> {
        let create: CreateFn = self.sym(b"nvrtcCreateProgram\0")?;
        let compile: CompileFn = self.sym(b"nvrtcCompileProgram\0")?;
        let ptx_size: SizeFn = self.sym(b"nvrtcGetPTXSize\0")?;
        let ptx_text: TextFn = self.sym(b"nvrtcGetPTX\0")?;
        let log_size: SizeFn = self.sym(b"nvrtcGetProgramLogSize\0")?;
        let log_text: TextFn = self.sym(b"nvrtcGetProgramLog\0")?;
        let destroy: DestroyFn = self.sym(b"nvrtcDestroyProgram\0")?;
        let src = CString::new(source).map_err(|_| NvrtcError::Nul("kernel source"))?;
        let cname = CString::new(name).map_err(|_| NvrtcError::Nul("program name"))?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).map_err(|_| NvrtcError::Nul("option")))
            .collect::<Result<_, _>>()?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let n_opts = c_int::try_from(opt_ptrs.len()).map_err(|_| NvrtcError::Nul("option list"))?;
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings that outlive the call; no
        // headers (count 0, null arrays).
        let r = unsafe { create(&mut prog, src.as_ptr(), cname.as_ptr(), 0, std::ptr::null(), std::ptr::null()) };
        if r != NVRTC_SUCCESS {
            return Err(NvrtcError::Call { call: "nvrtcCreateProgram", code: r });
        }
        let text = |size: SizeFn, get: TextFn, call: &'static str| -> Result<String, NvrtcError> {
            let mut len = 0usize;
            // SAFETY: `prog` is a live program; one size_t written.
            let r = unsafe { size(prog, &mut len) };
            if r != NVRTC_SUCCESS {
                return Err(NvrtcError::Call { call, code: r });
            }
            let mut buf = vec![0u8; len.max(1)];
            // SAFETY: `buf` holds the `len` bytes (NUL included) NVRTC reported.
            let r = unsafe { get(prog, buf.as_mut_ptr().cast()) };
            if r != NVRTC_SUCCESS {
                return Err(NvrtcError::Call { call, code: r });
            }
            Ok(CStr::from_bytes_until_nul(&buf).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
        };
        // SAFETY: `prog` is live; the option pointers outlive the call.
        let r = unsafe { compile(prog, n_opts, opt_ptrs.as_ptr()) };
        let result = if r == NVRTC_SUCCESS {
            text(ptx_size, ptx_text, "nvrtcGetPTX")
        } else {
            let log = text(log_size, log_text, "nvrtcGetProgramLog").unwrap_or_default();
            Err(NvrtcError::Compile { invalid_option: r == NVRTC_ERROR_INVALID_OPTION, log })
        };
        // SAFETY: destroys the program created above, once.
        unsafe { destroy(&mut prog) };
        result
    }
}

/// The `.version X.Y` of a PTX text as (X, Y).
pub fn ptx_isa(ptx: &str) -> Option<(u32, u32)> {
    let line = ptx.lines().map(str::trim).find(|l| l.starts_with(".version"))?;
    let (major, minor) = line.strip_prefix(".version")?.trim().split_once('.')?;
    Some((major.trim().parse().ok()?, minor.trim().parse().ok()?))
}
