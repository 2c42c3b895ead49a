//! Post-processing kernels behind one interface: connected-component
//! labelling, per-component statistics and SUV thresholding, each with a CUDA
//! implementation (`cuda.rs`, feature `cuda`, the only unsafe code of this
//! module) and a CPU twin (`cpu.rs`, rayon) that is the oracle: both give
//! bit-identical results, which one test suite checks.
//!
//! Contracts (see also kernels/README.md):
//! - Volumes are x-fastest (`i + nx·(j + ny·k)`), dims `[nx, ny, nz]`.
//! - `label`: a voxel is foreground when its value is non-zero; two
//!   neighbouring foreground voxels join when their values are equal (so a
//!   multi-label map gives per-class components and a binary mask the usual
//!   ones). Labels are 1..=count, numbered by each component's first voxel in
//!   raster order (the numbering cc3d and scipy use); background is 0.
//! - `stats`: one pass over a label map and an intensity volume. Sums are
//!   exact and order-independent: each value is quantised to a 2^-20 fixed
//!   point (`quantize`) and summed in 128-bit integers, so the GPU's atomics
//!   and the CPU's reduction agree to the bit.
//! - `suv_threshold`: SUV = fma(stored, a_k, b_k) in f32 for slice k (a_k, b_k
//!   the slice's slope × SUV factor and intercept × SUV factor), mask = SUV ≥ t;
//!   a NaN SUV is written as the canonical NaN `0x7fffffff` (what NVIDIA's
//!   `fmaf` returns; `cpu::CANONICAL_NAN_BITS`).
//! - `stats` refuses a label map holding labels above its count
//!   ([`GpuError::LabelAboveCount`]).

pub mod check;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(all(test, feature = "emulation"))]
mod emulation;
pub mod select;

use serde::Serialize;

/// Which neighbours touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Connectivity {
    /// Faces.
    Six = 6,
    /// Faces and edges.
    Eighteen = 18,
    /// Faces, edges and corners.
    TwentySix = 26,
}

impl Connectivity {
    /// From 6, 18 or 26.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            6 => Some(Self::Six),
            18 => Some(Self::Eighteen),
            26 => Some(Self::TwentySix),
            _ => None,
        }
    }

    /// The neighbour offsets (dx, dy, dz) that come before a voxel in raster
    /// order: half of the neighbourhood, the half a forward scan has seen.
    pub fn backward_offsets(self) -> Vec<[i64; 3]> {
        let mut out = Vec::new();
        for dz in -1i64..=0 {
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let order = dz * 9 + dy * 3 + dx;
                    if order >= 0 {
                        continue;
                    }
                    let n = dx.abs() + dy.abs() + dz.abs();
                    let keep = match self {
                        Self::Six => n == 1,
                        Self::Eighteen => n <= 2,
                        Self::TwentySix => true,
                    };
                    if keep {
                        out.push([dx, dy, dz]);
                    }
                }
            }
        }
        out
    }
}

/// A labelled volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// Label per voxel, 0 = background.
    pub data: Vec<u32>,
    /// Number of components (the largest label).
    pub count: u32,
}

/// Fixed-point scale of the statistics' sums: value × 2^FIXED_SHIFT.
pub const FIXED_SHIFT: i32 = 20;
/// Quantised values are clamped to ±2^62 (far beyond any SUV or HU).
pub const FIXED_LIMIT: i64 = 1 << 62;

/// The fixed-point value of one voxel: round-half-even(v × 2^20), NaN as 0,
/// clamped to ±2^62. CUDA: `__double2ll_rn((double)v * 1048576.0)`, clamped.
pub fn quantize(v: f32) -> i64 {
    if v.is_nan() {
        return 0;
    }
    let x = (f64::from(v) * f64::from(1u32 << FIXED_SHIFT)).round_ties_even();
    if x >= FIXED_LIMIT as f64 {
        FIXED_LIMIT
    } else if x <= -(FIXED_LIMIT as f64) {
        -FIXED_LIMIT
    } else {
        x as i64
    }
}

/// Statistics of one component.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ComponentStats {
    /// Voxel count.
    pub voxels: u64,
    /// Smallest (i, j, k) of the component.
    pub bbox_min: [u32; 3],
    /// Largest (i, j, k) of the component.
    pub bbox_max: [u32; 3],
    /// Σ quantize(v).
    pub sum_fixed: i128,
    /// Σ quantize(v)².
    pub sum_sq_fixed: u128,
    /// Largest value (NaN ignored; −∞ if all NaN).
    pub max: f32,
    /// Smallest linear index holding `max`.
    pub max_index: u64,
}

impl ComponentStats {
    /// Σv.
    pub fn sum(&self) -> f64 {
        self.sum_fixed as f64 / f64::from(1u32 << FIXED_SHIFT)
    }

    /// Mean value.
    pub fn mean(&self) -> f64 {
        self.sum() / self.voxels as f64
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        let n = self.voxels as f64;
        let scale = f64::from(1u32 << FIXED_SHIFT);
        let mean = self.sum_fixed as f64 / n;
        let var = (self.sum_sq_fixed as f64 / n - mean * mean).max(0.0);
        var.sqrt() / scale
    }
}

/// The float of an order-preserving key (`key_float` in stats.cu).
pub(crate) fn key_to_f32(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}

/// The statistics of labels 1..=count from the kernels' records (`rec64`,
/// `rec32`: 8 words per record, record 0 unused; layout in stats.cu); None
/// when the arrays are too short.
#[cfg_attr(not(any(feature = "cuda", all(test, feature = "emulation"))), allow(dead_code))]
pub(crate) fn stats_from_records(r64: &[u64], r32: &[u32], count: u32) -> Option<Vec<ComponentStats>> {
    let records = count as usize + 1;
    if r64.len() < records * 8 || r32.len() < records * 8 {
        return None;
    }
    Some(
        (1..records)
            .map(|l| {
                let a = &r64[l * 8..l * 8 + 8];
                let b = &r32[l * 8..l * 8 + 8];
                ComponentStats {
                    voxels: a[0],
                    bbox_min: [b[0], b[1], b[2]],
                    bbox_max: [b[3], b[4], b[5]],
                    sum_fixed: ((u128::from(a[2]) << 64) | u128::from(a[1])) as i128,
                    sum_sq_fixed: (u128::from(a[4]) << 64) | u128::from(a[3]),
                    max: key_to_f32(b[6]),
                    max_index: a[5],
                }
            })
            .collect(),
    )
}

/// Errors of the GPU path. The CPU twins do not fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// Built without the `cuda` feature.
    #[error("not compiled with CUDA: rebuild with `--features cuda` to use the GPU")]
    NotCompiled,
    /// No usable CUDA driver library on this machine.
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    /// A CUDA driver, NVRTC or launch error.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Sizes the kernels cannot index.
    #[error("volume too large for the GPU kernels: {0}")]
    TooLarge(String),
    /// Inputs whose sizes disagree.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A label map holding a label above its component count.
    #[error("label {label} at voxel {index} is above the component count {count}")]
    LabelAboveCount {
        /// The offending label.
        label: u32,
        /// Its first voxel (linear index).
        index: usize,
        /// The label map's count.
        count: u32,
    },
}

/// Where the kernels run.
pub enum Backend {
    /// The CPU twins.
    Cpu,
    /// The CUDA kernels.
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaKernels),
}

impl Backend {
    /// The GPU, or why not.
    pub fn cuda() -> Result<Self, GpuError> {
        #[cfg(feature = "cuda")]
        {
            cuda::CudaKernels::new().map(Backend::Cuda)
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(GpuError::NotCompiled)
        }
    }

    /// The GPU where there is one, else the CPU twins (with the reason logged).
    pub fn best() -> Self {
        match Self::cuda() {
            Ok(b) => b,
            Err(e) => {
                tracing::info!("post-processing on the CPU: {e}");
                Backend::Cpu
            }
        }
    }

    /// "cpu" or "cuda".
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => "cuda",
        }
    }

    /// Connected components (see the module contract).
    pub fn label(&self, mask: &[u8], dims: [usize; 3], conn: Connectivity) -> Result<Labels, GpuError> {
        check_len(mask.len(), dims)?;
        match self {
            Backend::Cpu => Ok(cpu::label(mask, dims, conn)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.label(mask, dims, conn),
        }
    }

    /// Per-component statistics of `values` over `labels` (labels 1..=count).
    pub fn stats(&self, labels: &Labels, values: &[f32], dims: [usize; 3]) -> Result<Vec<ComponentStats>, GpuError> {
        check_len(labels.data.len(), dims)?;
        check_len(values.len(), dims)?;
        check_labels(labels)?;
        match self {
            Backend::Cpu => Ok(cpu::stats(labels, values, dims)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.stats(labels, values, dims),
        }
    }

    /// Raw PET to SUV fused with a threshold: returns (SUV, mask).
    /// `slice_scale[k] = (a_k, b_k)`: SUV = fma(stored, a_k, b_k).
    pub fn suv_threshold(
        &self,
        stored: &[i16],
        dims: [usize; 3],
        slice_scale: &[(f32, f32)],
        threshold: f32,
    ) -> Result<(Vec<f32>, Vec<u8>), GpuError> {
        check_len(stored.len(), dims)?;
        if slice_scale.len() != dims[2] {
            return Err(GpuError::Invalid(format!("{} slice scales for {} slices", slice_scale.len(), dims[2])));
        }
        match self {
            Backend::Cpu => Ok(cpu::suv_threshold(stored, dims, slice_scale, threshold)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.suv_threshold(stored, dims, slice_scale, threshold),
        }
    }
}

/// Every label is at most `labels.count` (the kernel would ignore the others
/// and the statistics would silently leave those voxels out).
fn check_labels(labels: &Labels) -> Result<(), GpuError> {
    use rayon::prelude::*;
    let count = labels.count;
    match labels.data.par_iter().position_first(|&l| l > count) {
        None => Ok(()),
        Some(index) => Err(GpuError::LabelAboveCount { label: labels.data[index], index, count }),
    }
}

fn check_len(len: usize, dims: [usize; 3]) -> Result<(), GpuError> {
    let n = dims[0].checked_mul(dims[1]).and_then(|v| v.checked_mul(dims[2]));
    if n != Some(len) {
        return Err(GpuError::Invalid(format!("{len} voxels for dims {dims:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_refuse_labels_above_count() {
        let labels = Labels { data: vec![0, 1, 3, 2], count: 2 };
        let e = Backend::Cpu.stats(&labels, &[0.0; 4], [4, 1, 1]);
        assert!(matches!(e, Err(GpuError::LabelAboveCount { label: 3, index: 2, count: 2 })), "{e:?}");
        let ok = Labels { data: vec![0, 1, 2, 2], count: 2 };
        assert_eq!(Backend::Cpu.stats(&ok, &[0.0; 4], [4, 1, 1]).map(|s| s.len()).ok(), Some(2));
    }
}
