//! CUDA implementations of the post-processing kernels (feature `cuda`), the
//! only unsafe code of the gpu module (with its child `ptx`). The device code
//! is in `kernels/*.cu` (contracts in kernels/README.md); this file loads it,
//! moves data and launches it.
//!
//! Everything runs on one stream of one context (device 0, or
//! `EDGESEG_CUDA_DEVICE`), so cudarc's event tracking is disabled. The host entry points (`label`, `stats`,
//! `suv_threshold`) copy in, run and copy back; the `*_device` variants work
//! on [`DeviceBuffer`]s so that benchmarks can time the kernels alone.
//!
//! Volumes hold at most 2^32 − 1 voxels (u32 voxel indices in the labelling
//! union-find); larger ones are [`GpuError::TooLarge`].
#![allow(unsafe_code)]

#[path = "ptx.rs"]
mod ptx;

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};

use super::{ComponentStats, Connectivity, GpuError, Labels};

/// Threads per block of the 1-D kernels (the scans need exactly 256).
const BLOCK: u32 = 256;
/// Elements per block of `scan_tiles` / `scan_add` (256 threads × 8).
const SCAN_TILE: usize = 2048;
/// Voxels per thread in the statistics kernels (`STATS_TILE` / 32).
const STATS_SEG: usize = 16;
/// Voxels per thread-group in `suv_threshold` (`SUV_GROUP`).
const SUV_GROUP: usize = 8;
/// Freed device memory the pool keeps for reuse (see `keep_pool_memory`).
const POOL_KEEP: u64 = 64 << 20;
/// Largest volume the kernels index (u32 voxel indices).
pub const MAX_VOXELS: usize = u32::MAX as usize;

/// Element types of device buffers: plain numbers for which every bit
/// pattern is a valid value, so reading memory no kernel wrote yet is
/// garbage but never undefined behaviour.
pub trait Pod: DeviceRepr + Copy + Default + 'static + private::Sealed {}
impl Pod for u8 {}
impl Pod for i16 {}
impl Pod for u32 {}
impl Pod for u64 {}
impl Pod for f32 {}
mod private {
    /// `C`: the type's name in `kernels/common.cuh` (for the signature test).
    pub trait Sealed {
        const C: &'static str;
    }
    impl Sealed for u8 {
        const C: &'static str = "u8";
    }
    impl Sealed for i16 {
        const C: &'static str = "i16";
    }
    impl Sealed for u32 {
        const C: &'static str = "u32";
    }
    impl Sealed for u64 {
        const C: &'static str = "u64";
    }
    impl Sealed for f32 {
        const C: &'static str = "float";
    }
}

/// One kernel argument as the launch code passes it, with the parameter it
/// must meet: `PTX` the `.param` type of the `.entry` (pointers are `.u64`),
/// `C` the parameter type in the `.cu` source (`const T*` for a buffer
/// passed by shared reference, `T*` for one passed mutably).
trait KernelArg<'b> {
    #[cfg_attr(not(test), allow(dead_code))]
    const PTX: &'static str;
    #[cfg_attr(not(test), allow(dead_code))]
    fn c_type() -> String;
    fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
    where
        'b: 'a;
}

macro_rules! scalar_arg {
    ($t:ty, $ptx:literal) => {
        impl<'b> KernelArg<'b> for &'b $t {
            const PTX: &'static str = $ptx;
            fn c_type() -> String {
                <$t as private::Sealed>::C.to_string()
            }
            fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
            where
                'b: 'a,
            {
                b.arg(self);
            }
        }
    };
}
scalar_arg!(u32, ".u32");
scalar_arg!(u64, ".u64");
scalar_arg!(f32, ".f32");

impl<'b, T: Pod> KernelArg<'b> for &'b CudaSlice<T> {
    const PTX: &'static str = ".u64";
    fn c_type() -> String {
        format!("const {}*", T::C)
    }
    fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
    where
        'b: 'a,
    {
        b.arg(self);
    }
}

impl<'b, T: Pod> KernelArg<'b> for &'b mut CudaSlice<T> {
    const PTX: &'static str = ".u64";
    fn c_type() -> String {
        format!("{}*", T::C)
    }
    fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
    where
        'b: 'a,
    {
        b.arg(self);
    }
}

/// A kernel's whole argument list, a tuple of [`KernelArg`]s. Every launch
/// passes its arguments through [`push_args`] as one of the `*Args` types
/// below, so the compiler holds the launch code to them, and the test
/// `launch_signatures_equal_the_ptx_entries` holds them to the PTX `.entry`
/// parameter lists and the `.cu` declarations.
trait KernelArgs<'b> {
    #[cfg_attr(not(test), allow(dead_code))]
    fn ptx_types() -> Vec<&'static str>;
    #[cfg_attr(not(test), allow(dead_code))]
    fn c_types() -> Vec<String>;
    fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
    where
        'b: 'a;
}

macro_rules! tuple_args {
    ($($t:ident . $i:tt),+) => {
        impl<'b, $($t: KernelArg<'b>),+> KernelArgs<'b> for ($($t,)+) {
            fn ptx_types() -> Vec<&'static str> {
                vec![$($t::PTX),+]
            }
            fn c_types() -> Vec<String> {
                vec![$($t::c_type()),+]
            }
            fn push<'a>(self, b: &mut cudarc::driver::LaunchArgs<'a>)
            where
                'b: 'a,
            {
                $(self.$i.push(b);)+
            }
        }
    };
}
tuple_args!(A.0, B.1, C.2);
tuple_args!(A.0, B.1, C.2, D.3, E.4);
tuple_args!(A.0, B.1, C.2, D.3, E.4, F.5);
tuple_args!(A.0, B.1, C.2, D.3, E.4, F.5, G.6);
tuple_args!(A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7);

fn push_args<'a, 'b: 'a, A: KernelArgs<'b>>(b: &mut cudarc::driver::LaunchArgs<'a>, args: A) {
    args.push(b);
}

// The parameter lists of the kernels, in order (kernels/*.cu).
/// `label_{init,merge}_{6,18,26}(const u8* mask, u32* parent, u32 nx, u32 ny, u32 nz)`.
type LabelPassArgs<'b> = (&'b CudaSlice<u8>, &'b mut CudaSlice<u32>, &'b u32, &'b u32, &'b u32);
/// `label_compress(const u8* mask, u32* parent, u64 n, u32* bits, u32* wcount)`.
type LabelCompressArgs<'b> =
    (&'b CudaSlice<u8>, &'b mut CudaSlice<u32>, &'b u64, &'b mut CudaSlice<u32>, &'b mut CudaSlice<u32>);
/// `label_finalize(const u8* mask, u32* labels, u64 n, const u32* bits, const u32* prefix)`.
type LabelFinalizeArgs<'b> =
    (&'b CudaSlice<u8>, &'b mut CudaSlice<u32>, &'b u64, &'b CudaSlice<u32>, &'b CudaSlice<u32>);
/// `scan_tiles(u32* data, u64 m, u32* tile_sums)`.
type ScanTilesArgs<'b> = (&'b mut CudaSlice<u32>, &'b u64, &'b mut CudaSlice<u32>);
/// `scan_add(u32* data, u64 m, const u32* offsets)`.
type ScanAddArgs<'b> = (&'b mut CudaSlice<u32>, &'b u64, &'b CudaSlice<u32>);
/// `stats_init(u64* rec64, u32* rec32, u64 records)`.
type StatsInitArgs<'b> = (&'b mut CudaSlice<u64>, &'b mut CudaSlice<u32>, &'b u64);
/// `stats_accumulate(const u32* labels, const float* values, u64 n, u32 nx, u32 ny, u32 count, u64* rec64, u32* rec32)`.
type StatsAccumulateArgs<'b> = (
    &'b CudaSlice<u32>,
    &'b CudaSlice<f32>,
    &'b u64,
    &'b u32,
    &'b u32,
    &'b u32,
    &'b mut CudaSlice<u64>,
    &'b mut CudaSlice<u32>,
);
/// `stats_max_index(const u32* labels, const float* values, u64 n, u32 count, u64* rec64, const u32* rec32)`.
type StatsMaxIndexArgs<'b> =
    (&'b CudaSlice<u32>, &'b CudaSlice<f32>, &'b u64, &'b u32, &'b mut CudaSlice<u64>, &'b CudaSlice<u32>);
/// `suv_threshold(const i16* stored, const float* scale, float t, u64 n, u64 plane, float* suv, u8* mask)`.
type SuvArgs<'b> =
    (&'b CudaSlice<i16>, &'b CudaSlice<f32>, &'b f32, &'b u64, &'b u64, &'b mut CudaSlice<f32>, &'b mut CudaSlice<u8>);

/// A buffer in device memory, for the `*_device` entry points.
pub struct DeviceBuffer<T> {
    /// At least one element (the driver allocates no empty buffers).
    slice: CudaSlice<T>,
    len: usize,
}

impl<T> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Statistics still on the device (from [`CudaKernels::stats_device`]).
pub struct DeviceStats {
    rec64: CudaSlice<u64>,
    rec32: CudaSlice<u32>,
    count: u32,
}

struct Functions {
    init: [CudaFunction; 3],
    merge: [CudaFunction; 3],
    compress: CudaFunction,
    finalize: CudaFunction,
    scan_tiles: CudaFunction,
    scan_add: CudaFunction,
    stats_init: CudaFunction,
    stats_accumulate: CudaFunction,
    stats_max_index: CudaFunction,
    suv: CudaFunction,
}

/// The CUDA kernels, loaded on one device.
pub struct CudaKernels {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    f: Box<Functions>,
    name: String,
    cc: (u32, u32),
    sm_count: u32,
    driver: (i32, i32),
    origins: Vec<String>,
}

fn cuda_err(what: impl std::fmt::Display) -> impl FnOnce(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Cuda(format!("{what}: {e}"))
}

fn voxel_count(dims: [usize; 3]) -> Result<usize, GpuError> {
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]))
        .ok_or_else(|| GpuError::TooLarge(format!("dims {dims:?} overflow")))?;
    if n > MAX_VOXELS {
        return Err(GpuError::TooLarge(format!("{n} voxels (dims {dims:?}); the kernels index at most {MAX_VOXELS}")));
    }
    Ok(n)
}

/// Dims as u32; only called for non-empty volumes (each side ≤ n ≤ u32::MAX).
fn dims32(dims: [usize; 3]) -> Result<[u32; 3], GpuError> {
    let side = |d: usize| u32::try_from(d).map_err(|_| GpuError::TooLarge(format!("dims {dims:?}")));
    Ok([side(dims[0])?, side(dims[1])?, side(dims[2])?])
}

fn expect_len(what: &str, len: usize, want: usize) -> Result<(), GpuError> {
    if len != want {
        return Err(GpuError::Invalid(format!("{what}: {len} elements, expected {want}")));
    }
    Ok(())
}

/// Lets the device's default memory pool keep up to [`POOL_KEEP`] bytes of
/// freed memory instead of returning all of it to the driver at every
/// synchronisation: the scratch buffers of repeated calls (n/4 bytes for a
/// labelling) then come from the pool, while large volumes are still given
/// back to the other users of the GPU (the inference engine; on a Jetson,
/// the whole system). Best effort.
fn keep_pool_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: writes the device's default pool handle through a valid
    // pointer; the device handle comes from a live context.
    let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    if r != sys::CUresult::CUDA_SUCCESS || pool.is_null() {
        return;
    }
    let mut threshold: u64 = POOL_KEEP;
    // SAFETY: CU_MEMPOOL_ATTR_RELEASE_THRESHOLD takes a pointer to a u64,
    // which lives across the call; the pool handle is valid.
    let r = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        tracing::debug!("memory pool release threshold not set: {r:?}");
    }
}

impl CudaKernels {
    /// Opens device 0 (or `EDGESEG_CUDA_DEVICE`) and loads the kernels:
    /// embedded PTX where the driver takes it, else NVRTC (see `ptx.rs`).
    pub fn new() -> Result<Self, GpuError> {
        // SAFETY: only probes whether libcuda can be dlopen'ed; cudarc panics
        // on its first driver call where it cannot.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver("libcuda.so (the NVIDIA driver library) not found".into()));
        }
        let ordinal = match std::env::var("EDGESEG_CUDA_DEVICE") {
            Ok(s) if !s.trim().is_empty() => s
                .trim()
                .parse::<usize>()
                .map_err(|_| GpuError::Invalid(format!("EDGESEG_CUDA_DEVICE={s:?} is not a device number")))?,
            _ => 0,
        };
        cudarc::driver::result::init().map_err(|e| GpuError::NoDriver(format!("cuInit: {e}")))?;
        let devices = CudaContext::device_count().map_err(|e| GpuError::NoDriver(format!("cuDeviceGetCount: {e}")))?;
        let devices = usize::try_from(devices).unwrap_or(0);
        if devices == 0 {
            return Err(GpuError::NoDriver("the driver sees no CUDA device".into()));
        }
        if ordinal >= devices {
            return Err(GpuError::Invalid(format!("EDGESEG_CUDA_DEVICE={ordinal}, but there are {devices} devices")));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err(format!("creating a context on device {ordinal}")))?;
        // SAFETY: everything this context does runs on the one stream made
        // below (allocations, copies, launches and frees are stream-ordered),
        // so cudarc's cross-stream events (two per allocation and per launch
        // argument) order nothing; no buffer exists yet.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(cuda_err("device name"))?;
        let (major, minor) = ctx.compute_capability().map_err(cuda_err("compute capability"))?;
        let cc = (u32::try_from(major).unwrap_or(0), u32::try_from(minor).unwrap_or(0));
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("multiprocessor count"))?;
        let sm_count = u32::try_from(sm_count).unwrap_or(1).max(1);
        let mut version = 0;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer;
        // the library is loaded (checked above).
        let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        let driver = if r == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            (version / 1000, version % 1000 / 10)
        } else {
            (0, 0)
        };
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        if ctx.has_async_alloc() {
            keep_pool_memory(&ctx);
        }

        let arch = cc.0 * 10 + cc.1;
        let mut origins = Vec::new();
        let mut load = |file: &str| -> Result<Arc<CudaModule>, GpuError> {
            let (module, origin) = ptx::load(&ctx, ptx::file(file)?, arch, version)?;
            origins.push(format!("{file}: {origin}"));
            Ok(module)
        };
        let label = load("label")?;
        let stats = load("stats")?;
        let suv = load("suv")?;
        let get = |m: &Arc<CudaModule>, name: &str| m.load_function(name).map_err(cuda_err(format!("kernel {name}")));
        let f = Box::new(Functions {
            init: [get(&label, "label_init_6")?, get(&label, "label_init_18")?, get(&label, "label_init_26")?],
            merge: [get(&label, "label_merge_6")?, get(&label, "label_merge_18")?, get(&label, "label_merge_26")?],
            compress: get(&label, "label_compress")?,
            finalize: get(&label, "label_finalize")?,
            scan_tiles: get(&label, "scan_tiles")?,
            scan_add: get(&label, "scan_add")?,
            stats_init: get(&stats, "stats_init")?,
            stats_accumulate: get(&stats, "stats_accumulate")?,
            stats_max_index: get(&stats, "stats_max_index")?,
            suv: get(&suv, "suv_threshold")?,
        });
        tracing::info!(
            "CUDA on {name} (sm_{arch}, {sm_count} SMs, driver {}.{}): {}",
            driver.0,
            driver.1,
            origins.join("; ")
        );
        Ok(Self { ctx, stream, f, name, cc, sm_count, driver, origins })
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// The CUDA version the driver supports (major, minor).
    pub fn driver_version(&self) -> (i32, i32) {
        self.driver
    }

    /// How each kernel file was loaded (embedded PTX of which arch, or NVRTC).
    pub fn kernel_origins(&self) -> &[String] {
        &self.origins
    }

    /// The compiler that built the embedded PTX, e.g. "NVRTC 12.0 (path)"
    /// (None: a build without PTX, NVRTC at run time only).
    pub fn ptx_compiler() -> Option<&'static str> {
        ptx::ptx_compiler()
    }

    /// Waits for all queued work; reports errors of asynchronous work.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))?;
        self.ctx.check_err().map_err(cuda_err("asynchronous CUDA error"))
    }

    /// A zeroed device buffer of `len` elements.
    pub fn alloc<T: Pod + cudarc::driver::ValidAsZeroBits>(&self, len: usize) -> Result<DeviceBuffer<T>, GpuError> {
        let slice = self.stream.alloc_zeros::<T>(len.max(1)).map_err(cuda_err(format!("allocating {len} elements")))?;
        Ok(DeviceBuffer { slice, len })
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: Pod + cudarc::driver::ValidAsZeroBits>(&self, host: &[T]) -> Result<DeviceBuffer<T>, GpuError> {
        if host.is_empty() {
            return self.alloc(0);
        }
        let slice =
            self.stream.clone_htod(host).map_err(cuda_err(format!("copying {} elements to the device", host.len())))?;
        Ok(DeviceBuffer { slice, len: host.len() })
    }

    /// Copies a device buffer back (waits for the queued work).
    pub fn download<T: Pod>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>, GpuError> {
        if buf.len == 0 {
            return Ok(Vec::new());
        }
        let v = self
            .stream
            .clone_dtoh(&buf.slice.slice(0..buf.len))
            .map_err(cuda_err(format!("copying {} elements from the device", buf.len)))?;
        self.synchronize()?;
        Ok(v)
    }

    /// Device-to-device copy of `src` into `dst` (the memcpy baseline of the
    /// benchmarks); queued, not waited for.
    pub fn copy_device<T: Pod>(&self, src: &DeviceBuffer<T>, dst: &mut DeviceBuffer<T>) -> Result<(), GpuError> {
        expect_len("copy destination", dst.len, src.len)?;
        if src.len == 0 {
            return Ok(());
        }
        let mut dst_view = dst.slice.slice_mut(0..src.len);
        self.stream.memcpy_dtod(&src.slice.slice(0..src.len), &mut dst_view).map_err(cuda_err("device-to-device copy"))
    }

    /// A device buffer whose contents are whatever the memory held.
    fn alloc_uninit<T: Pod>(&self, len: usize) -> Result<CudaSlice<T>, GpuError> {
        // SAFETY: the memory is not initialised, but it is device memory that
        // Rust never reads directly, and `T: Pod` makes every bit pattern a
        // valid value should it be copied back; every caller's kernels write
        // each element before reading it.
        unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(cuda_err(format!("allocating {len} elements")))
    }

    /// A 1-D grid-stride launch over `work` items.
    fn cfg1d(&self, work: usize) -> LaunchConfig {
        let max_blocks = u64::from(self.sm_count) * 16;
        let blocks = (work as u64).div_ceil(u64::from(BLOCK)).clamp(1, max_blocks);
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    // ---- labelling -------------------------------------------------------

    /// Connected components (see the module contract of `gpu`).
    pub fn label(&self, mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Result<Labels, GpuError> {
        let n = voxel_count(dims)?;
        expect_len("mask", mask.len(), n)?;
        if n == 0 {
            return Ok(Labels { data: Vec::new(), count: 0 });
        }
        let d_mask = self.upload(mask)?;
        let mut out = DeviceBuffer { slice: self.alloc_uninit::<u32>(n)?, len: n };
        let count = self.label_device(&d_mask, dims, conn, &mut out)?;
        let data = self.download(&out)?;
        Ok(Labels { data, count })
    }

    /// Labels `mask` (on the device) into `out` (n elements); returns the
    /// component count. Waits for the kernels (it reads the count back).
    pub fn label_device(
        &self,
        mask: &DeviceBuffer<u8>,
        dims: [usize; 3],
        conn: Connectivity,
        out: &mut DeviceBuffer<u32>,
    ) -> Result<u32, GpuError> {
        let n = voxel_count(dims)?;
        expect_len("mask", mask.len, n)?;
        expect_len("labels", out.len, n)?;
        if n == 0 {
            return Ok(0);
        }
        let [nx, ny, nz] = dims32(dims)?;
        let which = match conn {
            Connectivity::Six => 0,
            Connectivity::Eighteen => 1,
            Connectivity::TwentySix => 2,
        };
        let rows = u64::from(ny) * u64::from(nz);
        let cfg = LaunchConfig {
            grid_dim: (nx.div_ceil(32), rows.div_ceil(8).min(65_535) as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        for (name, func) in [("label_init", &self.f.init[which]), ("label_merge", &self.f.merge[which])] {
            let mut b = self.stream.launch_builder(func);
            push_args::<LabelPassArgs>(&mut b, (&mask.slice, &mut out.slice, &nx, &ny, &nz));
            // SAFETY: label_{init,merge}_C(const u8* mask, u32* parent, u32 nx,
            // u32 ny, u32 nz): types and order match (`push_args`, checked against the PTX by a test). mask and out hold
            // n = nx·ny·nz elements (checked above); the kernel only indexes
            // voxels inside the volume (bounds-checked neighbours) and only
            // reads parent slots of foreground voxels, which init writes.
            unsafe { b.launch(cfg) }.map_err(cuda_err(name))?;
        }
        let n64 = n as u64;
        let nwords = n.div_ceil(32);
        let mut bits = self.alloc_uninit::<u32>(nwords)?;
        let mut wcount = self.alloc_uninit::<u32>(nwords + 1)?;
        let cfg = self.cfg1d(n);
        {
            let mut b = self.stream.launch_builder(&self.f.compress);
            push_args::<LabelCompressArgs>(&mut b, (&mask.slice, &mut out.slice, &n64, &mut bits, &mut wcount));
            // SAFETY: label_compress(const u8* mask, u32* parent, u64 n,
            // u32* bits, u32* wcount): types and order match (`push_args`, checked against the PTX by a test); bits has
            // ceil(n/32) and wcount ceil(n/32) + 1 elements, every one of
            // which the kernel writes (words by their warp, the last by
            // thread 0); blockDim is a multiple of 32 as it requires.
            unsafe { b.launch(cfg) }.map_err(cuda_err("label_compress"))?;
        }
        self.scan_exclusive(&mut wcount, nwords + 1)?;
        {
            let mut b = self.stream.launch_builder(&self.f.finalize);
            push_args::<LabelFinalizeArgs>(&mut b, (&mask.slice, &mut out.slice, &n64, &bits, &wcount));
            // SAFETY: label_finalize(const u8* mask, u32* labels, u64 n,
            // const u32* bits, const u32* prefix): types and order match (`push_args`, checked against the PTX by a test);
            // root indices are < n, so words are < ceil(n/32).
            unsafe { b.launch(cfg) }.map_err(cuda_err("label_finalize"))?;
        }
        let count = self.stream.clone_dtoh(&wcount.slice(nwords..nwords + 1)).map_err(cuda_err("reading the count"))?;
        self.synchronize()?;
        count.first().copied().ok_or_else(|| GpuError::Cuda("empty count read-back".into()))
    }

    /// In-place exclusive prefix sum of `data[0..m]` (m ≥ 1).
    fn scan_exclusive(&self, data: &mut CudaSlice<u32>, m: usize) -> Result<(), GpuError> {
        let tiles = m.div_ceil(SCAN_TILE);
        let grid = u32::try_from(tiles).map_err(|_| GpuError::TooLarge(format!("scan of {m} elements")))?;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let m64 = m as u64;
        let mut sums = self.alloc_uninit::<u32>(tiles)?;
        {
            let mut b = self.stream.launch_builder(&self.f.scan_tiles);
            push_args::<ScanTilesArgs>(&mut b, (&mut *data, &m64, &mut sums));
            // SAFETY: scan_tiles(u32* data, u64 m, u32* tile_sums): types and
            // order match; data holds ≥ m elements, sums one per block, and
            // blockDim is the 256 threads the block scan needs.
            unsafe { b.launch(cfg) }.map_err(cuda_err("scan_tiles"))?;
        }
        if tiles > 1 {
            self.scan_exclusive(&mut sums, tiles)?;
            let mut b = self.stream.launch_builder(&self.f.scan_add);
            push_args::<ScanAddArgs>(&mut b, (&mut *data, &m64, &sums));
            // SAFETY: scan_add(u32* data, u64 m, const u32* offsets): types
            // and order match; one offset per block, data ≥ m elements.
            unsafe { b.launch(cfg) }.map_err(cuda_err("scan_add"))?;
        }
        Ok(())
    }

    // ---- statistics ------------------------------------------------------

    /// Per-component statistics of `values` over `labels` (labels 1..=count).
    pub fn stats(&self, labels: &Labels, values: &[f32], dims: [usize; 3]) -> Result<Vec<ComponentStats>, GpuError> {
        let n = voxel_count(dims)?;
        expect_len("labels", labels.data.len(), n)?;
        expect_len("values", values.len(), n)?;
        if labels.count == 0 {
            return Ok(Vec::new());
        }
        let d_labels = self.upload(&labels.data)?;
        let d_values = self.upload(values)?;
        let s = self.stats_device(&d_labels, labels.count, &d_values, dims)?;
        self.download_stats(&s)
    }

    /// Statistics of labels 1..=count, left on the device (queued, not
    /// waited for); labels above `count` are ignored.
    pub fn stats_device(
        &self,
        labels: &DeviceBuffer<u32>,
        count: u32,
        values: &DeviceBuffer<f32>,
        dims: [usize; 3],
    ) -> Result<DeviceStats, GpuError> {
        let n = voxel_count(dims)?;
        expect_len("labels", labels.len, n)?;
        expect_len("values", values.len, n)?;
        let records = count as usize + 1;
        let mut rec64 = self.alloc_uninit::<u64>(records * 8)?;
        let mut rec32 = self.alloc_uninit::<u32>(records * 8)?;
        let records64 = records as u64;
        {
            let mut b = self.stream.launch_builder(&self.f.stats_init);
            push_args::<StatsInitArgs>(&mut b, (&mut rec64, &mut rec32, &records64));
            // SAFETY: stats_init(u64* rec64, u32* rec32, u64 records): types
            // and order match; both arrays hold 8 · records elements.
            unsafe { b.launch(self.cfg1d(records)) }.map_err(cuda_err("stats_init"))?;
        }
        if n > 0 && count > 0 {
            let [nx, ny, _] = dims32(dims)?;
            let n64 = n as u64;
            let cfg = self.cfg1d(n.div_ceil(STATS_SEG));
            {
                let mut b = self.stream.launch_builder(&self.f.stats_accumulate);
                push_args::<StatsAccumulateArgs>(
                    &mut b,
                    (&labels.slice, &values.slice, &n64, &nx, &ny, &count, &mut rec64, &mut rec32),
                );
                // SAFETY: stats_accumulate(const u32* labels, const float*
                // values, u64 n, u32 nx, u32 ny, u32 count, u64* rec64, u32*
                // rec32): types and order match (`push_args`, checked against the PTX by a test); labels and values hold n
                // elements; records are indexed by labels ≤ count only.
                unsafe { b.launch(cfg) }.map_err(cuda_err("stats_accumulate"))?;
            }
            let mut b = self.stream.launch_builder(&self.f.stats_max_index);
            push_args::<StatsMaxIndexArgs>(&mut b, (&labels.slice, &values.slice, &n64, &count, &mut rec64, &rec32));
            // SAFETY: stats_max_index(const u32* labels, const float* values,
            // u64 n, u32 count, u64* rec64, const u32* rec32): as above.
            unsafe { b.launch(cfg) }.map_err(cuda_err("stats_max_index"))?;
        }
        Ok(DeviceStats { rec64, rec32, count })
    }

    /// Copies statistics back (waits for the queued work).
    pub fn download_stats(&self, s: &DeviceStats) -> Result<Vec<ComponentStats>, GpuError> {
        let r64 = self.stream.clone_dtoh(&s.rec64).map_err(cuda_err("copying statistics"))?;
        let r32 = self.stream.clone_dtoh(&s.rec32).map_err(cuda_err("copying statistics"))?;
        self.synchronize()?;
        super::stats_from_records(&r64, &r32, s.count)
            .ok_or_else(|| GpuError::Cuda("short statistics read-back".into()))
    }

    // ---- SUV -------------------------------------------------------------

    /// Raw PET to SUV fused with a threshold: returns (SUV, mask).
    pub fn suv_threshold(
        &self,
        stored: &[i16],
        dims: [usize; 3],
        slice_scale: &[(f32, f32)],
        threshold: f32,
    ) -> Result<(Vec<f32>, Vec<u8>), GpuError> {
        let n = voxel_count(dims)?;
        expect_len("stored", stored.len(), n)?;
        expect_len("slice scales", slice_scale.len(), dims[2])?;
        if n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let scale: Vec<f32> = slice_scale.iter().flat_map(|&(a, b)| [a, b]).collect();
        let d_stored = self.upload(stored)?;
        let d_scale = self.upload(&scale)?;
        let mut suv = DeviceBuffer { slice: self.alloc_uninit::<f32>(n)?, len: n };
        let mut mask = DeviceBuffer { slice: self.alloc_uninit::<u8>(n)?, len: n };
        self.suv_threshold_device(&d_stored, dims, &d_scale, threshold, &mut suv, &mut mask)?;
        Ok((self.download(&suv)?, self.download(&mask)?))
    }

    /// SUV and mask of `stored` on the device; `scale` holds (a_k, b_k)
    /// interleaved, 2·nz floats. Queued, not waited for.
    pub fn suv_threshold_device(
        &self,
        stored: &DeviceBuffer<i16>,
        dims: [usize; 3],
        scale: &DeviceBuffer<f32>,
        threshold: f32,
        suv: &mut DeviceBuffer<f32>,
        mask: &mut DeviceBuffer<u8>,
    ) -> Result<(), GpuError> {
        let n = voxel_count(dims)?;
        expect_len("stored", stored.len, n)?;
        expect_len("scale", scale.len, 2 * dims[2])?;
        expect_len("suv", suv.len, n)?;
        expect_len("mask", mask.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let plane = (dims[0] * dims[1]) as u64;
        let mut b = self.stream.launch_builder(&self.f.suv);
        push_args::<SuvArgs>(
            &mut b,
            (&stored.slice, &scale.slice, &threshold, &n64, &plane, &mut suv.slice, &mut mask.slice),
        );
        // SAFETY: suv_threshold(const i16* stored, const float* scale, float
        // t, u64 n, u64 plane, float* suv, u8* mask): types and order match (`push_args`, checked against the PTX by a test);
        // stored, suv and mask hold n elements, scale 2·nz, plane ≥ 1 as
        // n > 0, and the slice index of every voxel < n is < nz. Vector
        // accesses are used only where the kernel finds them aligned.
        unsafe { b.launch(self.cfg1d(n.div_ceil(SUV_GROUP))) }.map_err(cuda_err("suv_threshold"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::key_to_f32;

    /// Every kernel: its file, name, and the argument list the launch code
    /// passes (`push_args`), as PTX `.param` types and as `.cu` types.
    fn launch_signatures() -> Vec<(&'static str, &'static str, Vec<&'static str>, Vec<String>)> {
        fn sig<'b, A: KernelArgs<'b>>(
            file: &'static str,
            name: &'static str,
        ) -> (&'static str, &'static str, Vec<&'static str>, Vec<String>) {
            (file, name, A::ptx_types(), A::c_types())
        }
        let mut v = Vec::new();
        for c in [6, 18, 26] {
            for pass in ["label_init", "label_merge"] {
                let name: &'static str = Box::leak(format!("{pass}_{c}").into_boxed_str());
                v.push(sig::<LabelPassArgs>("label", name));
            }
        }
        v.push(sig::<LabelCompressArgs>("label", "label_compress"));
        v.push(sig::<LabelFinalizeArgs>("label", "label_finalize"));
        v.push(sig::<ScanTilesArgs>("label", "scan_tiles"));
        v.push(sig::<ScanAddArgs>("label", "scan_add"));
        v.push(sig::<StatsInitArgs>("stats", "stats_init"));
        v.push(sig::<StatsAccumulateArgs>("stats", "stats_accumulate"));
        v.push(sig::<StatsMaxIndexArgs>("stats", "stats_max_index"));
        v.push(sig::<SuvArgs>("suv", "suv_threshold"));
        v
    }

    /// `.entry name(` … `)` of a PTX text: the `.param` types in order;
    /// None where there is no such entry.
    fn ptx_entry_params(ptx: &str, name: &str) -> Option<Vec<String>> {
        let start = ptx.find(&format!(".entry {name}("))?;
        let body = &ptx[start..];
        let close = body.find(')')?;
        let list = &body[body.find('(')? + 1..close];
        Some(
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.split_whitespace().nth(1).unwrap_or("?").to_string())
                .collect(),
        )
    }

    /// The entries a PTX text declares.
    fn ptx_entries(ptx: &str) -> Vec<String> {
        ptx.match_indices(".entry ")
            .filter_map(|(i, m)| ptx[i + m.len()..].split('(').next().map(|n| n.trim().to_string()))
            .collect()
    }

    /// `__global__ void name(` … `)` of a `.cu` source: the parameter types
    /// (`const u8*`, `u32`, `float`) without `__restrict__` and names.
    fn cu_params(source: &str, name: &str) -> Option<Vec<String>> {
        let start = source.find(&format!("__global__ void {name}("))?;
        let body = &source[start..];
        let list = &body[body.find('(')? + 1..body.find(')')?];
        Some(
            list.split(',')
                .map(|p| {
                    let words: Vec<&str> = p.split_whitespace().filter(|w| *w != "__restrict__").collect();
                    words[..words.len().saturating_sub(1)].join(" ")
                })
                .collect(),
        )
    }

    #[test]
    fn launch_signatures_equal_the_ptx_entries() {
        let sigs = launch_signatures();
        for file in ["label", "stats", "suv"] {
            let f = ptx::file(file).expect("embedded");
            assert!(!f.ptx.is_empty(), "{file}: no embedded PTX to check");
            for (arch, text) in f.ptx {
                // every entry of the PTX is launched, with its exact parameters
                let mut entries = ptx_entries(text);
                entries.sort();
                let mut launched: Vec<String> = sigs.iter().filter(|s| s.0 == file).map(|s| s.1.to_string()).collect();
                launched.sort();
                assert_eq!(entries, launched, "{file} compute_{arch}: entries vs launch sites");
                for (_, name, ptx_types, _) in sigs.iter().filter(|s| s.0 == file) {
                    let params = ptx_entry_params(text, name).expect("entry");
                    assert_eq!(&params, ptx_types, "{name} compute_{arch}: PTX .param list vs launch arguments");
                }
            }
            for (_, name, _, c_types) in sigs.iter().filter(|s| s.0 == file) {
                let params = cu_params(f.source, name).unwrap_or_else(|| panic!("{name} in kernels/{file}.cu"));
                assert_eq!(&params, c_types, "{name}: kernels/{file}.cu declaration vs launch arguments");
            }
        }
        // the parsers see a mismatch
        let ptx = ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 k_param_1\n)\n{";
        assert_eq!(ptx_entry_params(ptx, "k"), Some(vec![".u64".to_string(), ".u32".to_string()]));
        assert_ne!(ptx_entry_params(ptx, "k"), Some(SuvArgs::ptx_types().iter().map(|s| s.to_string()).collect()));
        assert_eq!(ptx_entries(ptx), ["k"]);
        let cu = "extern \"C\" __global__ void k(const u8* __restrict__ m, u32* p, float t) {";
        assert_eq!(cu_params(cu, "k").expect("k"), ["const u8*", "u32*", "float"]);
    }

    #[test]
    fn key_decoding_matches_the_kernel_encoding() {
        let key = |v: f32| {
            let b = v.to_bits();
            if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
        };
        for v in [f32::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-40, 2.0, f32::MAX, f32::INFINITY] {
            assert_eq!(key_to_f32(key(v)).to_bits(), v.to_bits());
        }
        assert_eq!(key_to_f32(0x007f_ffff), f32::NEG_INFINITY);
        assert!(key(-0.0) < key(0.0) && key(-1.0) < key(-0.0) && key(1.0) < key(f32::INFINITY));
    }

    #[test]
    fn volume_limits() {
        assert_eq!(voxel_count([512, 512, 400]).ok(), Some(512 * 512 * 400));
        assert!(matches!(voxel_count([1 << 16, 1 << 16, 1]), Err(GpuError::TooLarge(_))));
        assert!(matches!(voxel_count([usize::MAX, 2, 1]), Err(GpuError::TooLarge(_))));
        assert_eq!(voxel_count([0, usize::MAX, 7]).ok(), Some(0));
    }

    #[test]
    fn new_fails_cleanly_without_a_device() {
        // On a machine with a GPU this opens it; elsewhere it must be an
        // error, never a panic.
        match CudaKernels::new() {
            Ok(k) => assert!(!k.device_name().is_empty()),
            Err(e) => assert!(matches!(e, GpuError::NoDriver(_) | GpuError::Cuda(_) | GpuError::Invalid(_)), "{e}"),
        }
    }
}
