//! NIfTI-1 writer (.nii or .nii.gz) with both sform and qform set from the
//! volume geometry in RAS, the convention of ITK/SimpleITK, dicom2nifti and
//! nibabel. Voxel order is kept as loaded (i = DICOM column, j = row, k = slice
//! along the normal), as ITK writes a DICOM series.

use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::volume::{Geometry, Volume};

/// Voxel types NIfTI can hold.
pub trait NiftiScalar: Copy {
    /// NIfTI datatype code.
    const DATATYPE: i16;
    /// Bits per voxel.
    const BITPIX: i16;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! scalar {
    ($t:ty, $code:expr) => {
        impl NiftiScalar for $t {
            const DATATYPE: i16 = $code;
            const BITPIX: i16 = (std::mem::size_of::<$t>() * 8) as i16;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
scalar!(u8, 2);
scalar!(i16, 4);
scalar!(i32, 8);
scalar!(f32, 16);
scalar!(f64, 64);
scalar!(u16, 512);
scalar!(u32, 768);

/// Quaternion parameters (b, c, d, qfac) of a 3×3 direction matrix, after
/// NIfTI's `nifti_mat44_to_quatern` for an orthonormal matrix.
fn quaternion(r: [[f64; 3]; 3]) -> (f64, f64, f64, f64) {
    // r[row][col]; columns are the i, j, k axis directions.
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let mut m = r;
    let qfac = if det < 0.0 {
        for row in m.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let trace = m[0][0] + m[1][1] + m[2][2] + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        let a0 = 0.5 * (m[0][0] + m[1][1] + m[2][2] + 1.0).sqrt();
        b = 0.25 * (m[2][1] - m[1][2]) / a0;
        c = 0.25 * (m[0][2] - m[2][0]) / a0;
        d = 0.25 * (m[1][0] - m[0][1]) / a0;
        a = a0;
    } else {
        let xd = (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt();
        let yd = (1.0 - m[0][0] + m[1][1] - m[2][2]).sqrt();
        let zd = (1.0 - m[0][0] - m[1][1] + m[2][2]).sqrt();
        if xd > 1.0 {
            let b0 = 0.5 * xd;
            c = 0.25 * (m[0][1] + m[1][0]) / b0;
            d = 0.25 * (m[0][2] + m[2][0]) / b0;
            a = 0.25 * (m[2][1] - m[1][2]) / b0;
            b = b0;
        } else if yd > 1.0 {
            let c0 = 0.5 * yd;
            b = 0.25 * (m[0][1] + m[1][0]) / c0;
            d = 0.25 * (m[1][2] + m[2][1]) / c0;
            a = 0.25 * (m[0][2] - m[2][0]) / c0;
            c = c0;
        } else {
            let d0 = 0.5 * zd;
            b = 0.25 * (m[0][2] + m[2][0]) / d0;
            c = 0.25 * (m[1][2] + m[2][1]) / d0;
            a = 0.25 * (m[1][0] - m[0][1]) / d0;
            d = d0;
        }
    }
    if a < 0.0 { (-b, -c, -d, qfac) } else { (b, c, d, qfac) }
}

/// The 348-byte NIfTI-1 header plus the 4-byte empty extension flag.
pub fn header<T: NiftiScalar>(g: &Geometry, description: &str) -> Vec<u8> {
    header_4d::<T>(g, 1, description)
}

/// The header of a 4D file: `frames` volumes on grid `g` (dim[4] = frames,
/// pixdim[4] = 1, no time unit); a 3D header when `frames` is 1.
pub fn header_4d<T: NiftiScalar>(g: &Geometry, frames: usize, description: &str) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[38] = b'r';
    let rank = if frames > 1 { 4 } else { 3 };
    let dims = [rank, g.dims[0] as i16, g.dims[1] as i16, g.dims[2] as i16, frames as i16, 1, 1, 1];
    for (n, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d);
    }
    put_i16(&mut h, 70, T::DATATYPE);
    put_i16(&mut h, 72, T::BITPIX);
    let ras = g.affine_ras();
    // Direction matrix in RAS (columns = axes).
    let mut r = [[0.0; 3]; 3];
    for (row, line) in r.iter_mut().enumerate() {
        for axis in 0..3 {
            line[axis] = ras[row][axis] / g.spacing[axis];
        }
    }
    let (qb, qc, qd, qfac) = quaternion(r);
    let pixdim = [qfac as f32, g.spacing[0] as f32, g.spacing[1] as f32, g.spacing[2] as f32, 1.0, 0.0, 0.0, 0.0];
    for (n, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * n, *p);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2; // xyzt_units: mm
    let desc = description.as_bytes();
    let n = desc.len().min(79);
    h[148..148 + n].copy_from_slice(&desc[..n]);
    put_i16(&mut h, 252, 1); // qform_code: scanner
    put_i16(&mut h, 254, 1); // sform_code: scanner
    put_f32(&mut h, 256, qb as f32);
    put_f32(&mut h, 260, qc as f32);
    put_f32(&mut h, 264, qd as f32);
    put_f32(&mut h, 268, ras[0][3] as f32);
    put_f32(&mut h, 272, ras[1][3] as f32);
    put_f32(&mut h, 276, ras[2][3] as f32);
    for (row, line) in ras.iter().take(3).enumerate() {
        for (col, v) in line.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * row + 4 * col, *v as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

/// Writes `volume` to `path`; gzip-compressed when the name ends in `.gz`.
/// The file appears only when complete (temporary name, fsync, rename).
pub fn write<T: NiftiScalar>(path: &Path, volume: &Volume<T>, description: &str) -> std::io::Result<()> {
    let head = header::<T>(&volume.geometry, description);
    let gz = path.extension().is_some_and(|e| e == "gz");
    super::write_atomic(path, |f| {
        let buffered = BufWriter::with_capacity(1 << 20, f);
        if gz {
            let mut enc = GzEncoder::new(buffered, Compression::fast());
            write_body(&mut enc, &head, &volume.data)?;
            enc.finish()?.flush()
        } else {
            let mut w = buffered;
            write_body(&mut w, &head, &volume.data)?;
            w.flush()
        }
    })
}

/// Writes an instance map (a number per lesion or component, 0 elsewhere)
/// as 16-bit integers when every number fits, else as 32-bit ones. Same
/// atomicity as [`write`].
pub fn write_instances(path: &Path, instances: &Volume<u32>, description: &str) -> std::io::Result<()> {
    if instances.data.iter().all(|&n| n <= u32::from(u16::MAX)) {
        let narrow: Vec<u16> = instances.data.iter().map(|&n| n as u16).collect();
        write(path, &Volume { geometry: instances.geometry.clone(), data: narrow }, description)
    } else {
        write(path, instances, description)
    }
}

/// Writes `volumes` (all on one grid) as one 4D file (x, y, z, volume index),
/// e.g. the class probabilities as `probabilities.nii.gz` with the class as
/// the fourth index. Same atomicity as [`write`].
pub fn write_4d<T: NiftiScalar>(path: &Path, volumes: &[Volume<T>], description: &str) -> std::io::Result<()> {
    let Some(first) = volumes.first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no volume to write"));
    };
    let g = &first.geometry;
    if volumes.iter().any(|v| v.geometry != *g || v.data.len() != g.voxel_count()) || volumes.len() > i16::MAX as usize
    {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "volumes on different grids (or too many)"));
    }
    let head = header_4d::<T>(g, volumes.len(), description);
    let gz = path.extension().is_some_and(|e| e == "gz");
    super::write_atomic(path, |f| {
        let body = |w: &mut dyn Write| -> std::io::Result<()> {
            w.write_all(&head)?;
            for v in volumes {
                write_body(w, &[], &v.data)?;
            }
            Ok(())
        };
        let mut buffered = BufWriter::with_capacity(1 << 20, f);
        if gz {
            let mut enc = GzEncoder::new(buffered, Compression::fast());
            body(&mut enc)?;
            enc.finish()?.flush()
        } else {
            body(&mut buffered)?;
            buffered.flush()
        }
    })
}

fn write_body<W: Write + ?Sized, T: NiftiScalar>(sink: &mut W, head: &[u8], data: &[T]) -> std::io::Result<()> {
    sink.write_all(head)?;
    let mut chunk = Vec::with_capacity(1 << 20);
    for part in data.chunks(1 << 18) {
        chunk.clear();
        for v in part {
            v.put(&mut chunk);
        }
        sink.write_all(&chunk)?;
    }
    Ok(())
}

/// Errors reading a NIfTI file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The nifti crate could not read it.
    #[error("{path}: cannot read NIfTI: {reason}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a 3D volume.
    #[error("{path}: expected a 3D volume, found dimensions {dims:?}")]
    NotThreeD {
        /// The file.
        path: std::path::PathBuf,
        /// Its dim field.
        dims: Vec<u16>,
    },
    /// The affine is missing or degenerate.
    #[error("{path}: unusable affine: {reason}")]
    Affine {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// The voxel-to-RAS affine of a header: sform when set, else qform, else
/// the pixdim scaling NIfTI prescribes as method 1.
fn header_affine_ras(h: &nifti::NiftiHeader) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    a[3][3] = 1.0;
    if h.sform_code > 0 {
        for (row, srow) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
            for c in 0..4 {
                a[row][c] = f64::from(srow[c]);
            }
        }
    } else if h.qform_code > 0 {
        let (b, c, d) = (f64::from(h.quatern_b), f64::from(h.quatern_c), f64::from(h.quatern_d));
        let aa = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let r = [
            [aa * aa + b * b - c * c - d * d, 2.0 * (b * c - aa * d), 2.0 * (b * d + aa * c)],
            [2.0 * (b * c + aa * d), aa * aa + c * c - b * b - d * d, 2.0 * (c * d - aa * b)],
            [2.0 * (b * d - aa * c), 2.0 * (c * d + aa * b), aa * aa + d * d - b * b - c * c],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let sp = [f64::from(h.pixdim[1]), f64::from(h.pixdim[2]), f64::from(h.pixdim[3]) * qfac];
        for row in 0..3 {
            for col in 0..3 {
                a[row][col] = r[row][col] * sp[col];
            }
        }
        a[0][3] = f64::from(h.quatern_x);
        a[1][3] = f64::from(h.quatern_y);
        a[2][3] = f64::from(h.quatern_z);
    } else {
        for i in 0..3 {
            a[i][i] = f64::from(h.pixdim[i + 1]);
        }
    }
    a
}

/// Geometry (LPS) from a voxel-to-RAS affine.
pub fn geometry_from_ras(ras: &[[f64; 4]; 4], dims: [usize; 3]) -> Result<Geometry, String> {
    let mut spacing = [0.0; 3];
    let mut direction = [[0.0; 3]; 3];
    for axis in 0..3 {
        // LPS column = diag(-1, -1, 1) · RAS column.
        let col = [-ras[0][axis], -ras[1][axis], ras[2][axis]];
        let n = crate::volume::norm(col);
        if !(n.is_finite() && n > 0.0) {
            return Err(format!("axis {axis} has zero or invalid length"));
        }
        spacing[axis] = n;
        direction[axis] = [col[0] / n, col[1] / n, col[2] / n];
    }
    Ok(Geometry { dims, spacing, origin: [-ras[0][3], -ras[1][3], ras[2][3]], direction })
}

/// The nifti crate's error in words: its I/O variant has no message of its
/// own and would print as Rust debug text (`Io(Os { code: 2, .. })`).
fn nifti_reason(e: nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// Reads a 3D NIfTI volume (any voxel type, scl_slope applied) as f32.
pub fn read_f32(path: &Path) -> Result<Volume<f32>, ReadError> {
    Ok(read_stored(path)?.to_f32())
}

/// Reads a 3D NIfTI volume (any voxel type, scl_slope applied) as f64: for
/// voxel types whose values float32 would round (float64, 32- and 64-bit
/// integers).
pub fn read_f64(path: &Path) -> Result<Volume<f64>, ReadError> {
    Ok(read_stored(path)?.to_f64())
}

/// A voxel type a NIfTI file stores: read as it is (little- or big-endian),
/// converted the way the nifti crate converts it (`as`, then the scaling).
pub trait StoredScalar: bytemuck::Pod + Send + Sync + PartialOrd {
    /// Bytes per voxel.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Whether the type is an integer of at most 32 bits (exact in f64 and
    /// in i64 sums).
    const SMALL_INT: bool;
    /// The value with its bytes reversed (big-endian files).
    fn swap(self) -> Self;
    /// `self as f32`.
    fn as_f32(self) -> f32;
    /// `self as f64`.
    fn as_f64(self) -> f64;
    /// `self as i64` (exact for the small integers).
    fn as_i64(self) -> i64;
    /// The smallest and largest value of a non-empty slice (for floats, as
    /// `PartialOrd` orders them; any NaN gives NaN for both).
    fn min_max(s: &[Self]) -> (Self, Self);
}

macro_rules! stored_int {
    ($t:ty, $small:expr) => {
        impl StoredScalar for $t {
            const SMALL_INT: bool = $small;
            fn swap(self) -> Self {
                self.swap_bytes()
            }
            fn as_f32(self) -> f32 {
                self as f32
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn as_i64(self) -> i64 {
                self as i64
            }
            fn min_max(s: &[Self]) -> (Self, Self) {
                let min = s.iter().copied().min().unwrap_or_default();
                let max = s.iter().copied().max().unwrap_or_default();
                (min, max)
            }
        }
    };
}
stored_int!(u8, true);
stored_int!(i8, true);
stored_int!(u16, true);
stored_int!(i16, true);
stored_int!(u32, true);
stored_int!(i32, true);
stored_int!(u64, false);
stored_int!(i64, false);

macro_rules! stored_float {
    ($t:ty) => {
        impl StoredScalar for $t {
            const SMALL_INT: bool = false;
            fn swap(self) -> Self {
                <$t>::from_bits(self.to_bits().swap_bytes())
            }
            fn as_f32(self) -> f32 {
                self as f32
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn as_i64(self) -> i64 {
                self as i64
            }
            fn min_max(s: &[Self]) -> (Self, Self) {
                // Any NaN gives NaN for both (a NaN is no run of one value).
                let first = s.first().copied().unwrap_or_default();
                s.iter().fold((first, first), |(lo, hi), &v| {
                    if v.is_nan() || lo.is_nan() {
                        (<$t>::NAN, <$t>::NAN)
                    } else {
                        (if v < lo { v } else { lo }, if v > hi { v } else { hi })
                    }
                })
            }
        }
    };
}
stored_float!(f32);
stored_float!(f64);

/// Voxels in the file's type, i fastest: a buffer that may begin with the
/// header's bytes (the inflated file as it is), the voxels after them.
pub struct StoredBuf<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T> StoredBuf<T> {
    /// The voxels.
    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// The voxels of a NIfTI file in its own voxel type.
#[allow(missing_docs)]
pub enum Voxels {
    U8(StoredBuf<u8>),
    I8(StoredBuf<i8>),
    U16(StoredBuf<u16>),
    I16(StoredBuf<i16>),
    U32(StoredBuf<u32>),
    I32(StoredBuf<i32>),
    U64(StoredBuf<u64>),
    I64(StoredBuf<i64>),
    F32(StoredBuf<f32>),
    F64(StoredBuf<f64>),
}

/// Calls `$body` with `$s` bound to the voxels' slice, whatever their type.
#[macro_export]
macro_rules! with_voxels {
    ($voxels:expr, $s:ident => $body:expr) => {
        $crate::with_voxels!(@arms $voxels, $s, $body, U8 I8 U16 I16 U32 I32 U64 I64 F32 F64)
    };
    (@arms $voxels:expr, $s:ident, $body:expr, $($variant:ident)*) => {
        match $voxels {
            $($crate::export::nifti::Voxels::$variant(b) => {
                let $s = b.as_slice();
                $body
            })*
        }
    };
}

/// The scaling of a NIfTI file as the nifti crate applies it: none when
/// scl_slope is 0, else `v * slope + inter`, in f32 for an f32 result and
/// in f64 (slope and inter widened) for an f64 one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// scl_slope.
    pub slope: f32,
    /// scl_inter.
    pub inter: f32,
}

impl Scaling {
    /// The value read as f32 (`read_f32`'s).
    #[inline]
    pub fn f32<T: StoredScalar>(self, v: T) -> f32 {
        let v = v.as_f32();
        if self.slope == 0.0 { v } else { v * self.slope + self.inter }
    }

    /// The value read as f64 (`read_f64`'s).
    #[inline]
    pub fn f64<T: StoredScalar>(self, v: T) -> f64 {
        let v = v.as_f64();
        if self.slope == 0.0 { v } else { v * f64::from(self.slope) + f64::from(self.inter) }
    }

    /// Whether the scaling leaves every value of an integer type as it is.
    pub fn is_identity(self) -> bool {
        self.slope == 0.0 || (self.slope == 1.0 && self.inter == 0.0)
    }
}

/// A 3D NIfTI volume as its file stores it: the voxel type, its scaling
/// (not applied), the geometry.
pub struct Stored {
    /// The grid.
    pub geometry: Geometry,
    /// NIfTI datatype code.
    pub datatype: i16,
    /// scl_slope and scl_inter.
    pub scaling: Scaling,
    /// The voxels, i fastest.
    pub voxels: Voxels,
}

impl Stored {
    /// The volume as f32, exactly as `read_f32` gives it.
    pub fn to_f32(&self) -> Volume<f32> {
        let sc = self.scaling;
        let data = with_voxels!(&self.voxels, s => s.iter().map(|&v| sc.f32(v)).collect());
        Volume { geometry: self.geometry.clone(), data }
    }

    /// The volume as f64, exactly as `read_f64` gives it.
    pub fn to_f64(&self) -> Volume<f64> {
        let sc = self.scaling;
        let data = with_voxels!(&self.voxels, s => s.iter().map(|&v| sc.f64(v)).collect());
        Volume { geometry: self.geometry.clone(), data }
    }
}

/// Bytes per voxel of the scalar NIfTI datatypes; None for the others
/// (RGB, complex, float128, unknown codes).
fn datatype_size(code: i16) -> Option<usize> {
    Some(match code {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 | 1024 | 1280 => 8,
        _ => return None,
    })
}

/// Where the volume's bytes begin in a single .nii file: at vox_offset, and
/// never inside the 348-byte header and its 4-byte extension flag.
fn data_start(h: &nifti::NiftiHeader) -> usize {
    (h.vox_offset.max(0.0) as usize).max(352)
}

/// The header's grid and voxel layout, checked.
struct Layout {
    geometry: Geometry,
    size: usize,
    voxels: usize,
}

fn layout(path: &Path, h: &nifti::NiftiHeader) -> Result<Layout, ReadError> {
    let err = |reason: String| ReadError::Read { path: path.to_path_buf(), reason };
    let d = h.dim;
    let rank = usize::from(d[0]);
    if !(3..=7).contains(&rank) || d[4..=rank].iter().any(|&v| v > 1) {
        return Err(ReadError::NotThreeD { path: path.to_path_buf(), dims: d[1..=rank.min(7)].to_vec() });
    }
    h.dim().map_err(|e| err(nifti_reason(e)))?;
    let dims = [usize::from(d[1]), usize::from(d[2]), usize::from(d[3])];
    let geometry = geometry_from_ras(&header_affine_ras(h), dims)
        .map_err(|reason| ReadError::Affine { path: path.to_path_buf(), reason })?;
    let size = datatype_size(h.datatype)
        .ok_or_else(|| err(format!("voxel type (NIfTI datatype {}) is not a scalar type", h.datatype)))?;
    if usize::try_from(h.bitpix).ok() != Some(size * 8) {
        return Err(err(format!("bitpix {} does not match datatype {}", h.bitpix, h.datatype)));
    }
    Ok(Layout { voxels: geometry.voxel_count(), geometry, size })
}

/// A buffer of `T` holding at least `bytes` bytes, zeroed.
fn typed_buffer<T: StoredScalar>(bytes: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.div_ceil(T::SIZE)];
    // Before the first write: a 157 MB CT is then 75 faults, not 38 000.
    crate::sys::advise_huge_pages(&mut v);
    v
}

impl<T: StoredScalar> StoredBuf<T> {
    /// A zeroed buffer of at least `bytes` bytes, holding no voxels yet.
    fn empty(bytes: usize) -> Self {
        StoredBuf { buf: typed_buffer(bytes), start: 0, len: 0 }
    }

    /// The whole buffer, to be filled.
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.buf)
    }

    /// The buffer's first byte and length.
    fn span(&self) -> (usize, usize) {
        (self.buf.as_ptr() as usize, std::mem::size_of_val(self.buf.as_slice()))
    }

    /// The `n` voxels the filled buffer holds from byte `offset` on (taken in
    /// place when `offset` falls on a voxel boundary, else copied to a buffer
    /// of their own), byte-swapped for a big-endian file.
    fn settle(self, offset: usize, n: usize, big_endian: bool) -> Self {
        let mut out = if offset.is_multiple_of(T::SIZE) {
            StoredBuf { buf: self.buf, start: offset / T::SIZE, len: n }
        } else {
            let mut own = typed_buffer::<T>(n * T::SIZE);
            bytemuck::cast_slice_mut::<T, u8>(&mut own)
                .copy_from_slice(&bytemuck::cast_slice::<T, u8>(&self.buf)[offset..offset + n * T::SIZE]);
            StoredBuf { buf: own, start: 0, len: n }
        };
        if big_endian {
            for v in &mut out.buf[out.start..out.start + n] {
                *v = v.swap();
            }
        }
        out
    }
}

/// `$body` on each variant's buffer `$b`, its result in the same variant
/// (`=>`) or as it is (`->`).
macro_rules! each_buf {
    ($voxels:expr, $b:ident => $body:expr) => {
        each_buf!(@arms $voxels, $b, wrap, $body, U8 I8 U16 I16 U32 I32 U64 I64 F32 F64)
    };
    ($voxels:expr, $b:ident -> $body:expr) => {
        each_buf!(@arms $voxels, $b, bare, $body, U8 I8 U16 I16 U32 I32 U64 I64 F32 F64)
    };
    (@arms $voxels:expr, $b:ident, wrap, $body:expr, $($variant:ident)*) => {
        match $voxels { $(Voxels::$variant($b) => Voxels::$variant($body),)* }
    };
    (@arms $voxels:expr, $b:ident, bare, $body:expr, $($variant:ident)*) => {
        match $voxels { $(Voxels::$variant($b) => $body,)* }
    };
}

impl Voxels {
    /// A zeroed buffer of at least `bytes` bytes for the header's datatype.
    fn empty(datatype: i16, bytes: usize) -> Result<Voxels, String> {
        Ok(match datatype {
            2 => Voxels::U8(StoredBuf::empty(bytes)),
            256 => Voxels::I8(StoredBuf::empty(bytes)),
            512 => Voxels::U16(StoredBuf::empty(bytes)),
            4 => Voxels::I16(StoredBuf::empty(bytes)),
            768 => Voxels::U32(StoredBuf::empty(bytes)),
            8 => Voxels::I32(StoredBuf::empty(bytes)),
            1280 => Voxels::U64(StoredBuf::empty(bytes)),
            1024 => Voxels::I64(StoredBuf::empty(bytes)),
            16 => Voxels::F32(StoredBuf::empty(bytes)),
            64 => Voxels::F64(StoredBuf::empty(bytes)),
            other => return Err(format!("voxel type (NIfTI datatype {other}) is not a scalar type")),
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        each_buf!(self, b -> b.bytes_mut())
    }

    fn span(&self) -> (usize, usize) {
        each_buf!(self, b -> b.span())
    }

    fn settle(self, offset: usize, n: usize, big_endian: bool) -> Voxels {
        each_buf!(self, b => b.settle(offset, n, big_endian))
    }
}

/// The voxels of a file: `fill` writes the bytes from `offset` on into the
/// buffer it is given (at least `offset` plus the voxels' bytes, and
/// `capacity`), then the voxels are settled in it.
fn voxels_of(
    lay: &Layout,
    datatype: i16,
    big_endian: bool,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, String>,
    offset: usize,
    capacity: usize,
) -> Result<Voxels, String> {
    let mut v = Voxels::empty(datatype, capacity.max(offset + lay.voxels * lay.size))?;
    let got = fill(v.bytes_mut())?;
    filled(v, got, lay, offset, big_endian)
}

/// A buffer `fill` wrote `got` bytes into, its voxels from byte `offset` on.
fn filled(v: Voxels, got: usize, lay: &Layout, offset: usize, big_endian: bool) -> Result<Voxels, String> {
    let bytes = lay.voxels * lay.size;
    if got < offset + bytes {
        return Err(format!("holds {} bytes of voxels, its header declares {bytes}", got.saturating_sub(offset)));
    }
    Ok(v.settle(offset, lay.voxels, big_endian))
}

/// Reads as much as `buf` holds, or to the end of `r`; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A file read from byte `at` on by pread: the file's position is neither
/// used nor moved, so threads may read parts of one file at once.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += k as u64;
        Ok(k)
    }
}

/// What [`read_stored`] reads from a header: the grid, the voxel type and
/// byte order, the scaling and where the voxels begin.
struct Head {
    lay: Layout,
    datatype: i16,
    big_endian: bool,
    scaling: Scaling,
    start: usize,
}

impl Head {
    fn of(path: &Path, h: &nifti::NiftiHeader) -> Result<Head, ReadError> {
        Ok(Head {
            lay: layout(path, h)?,
            datatype: h.datatype,
            big_endian: h.endianness == nifti::Endianness::Big,
            scaling: Scaling { slope: h.scl_slope, inter: h.scl_inter },
            start: data_start(h),
        })
    }

    fn stored(self, voxels: Voxels) -> Stored {
        Stored { geometry: self.lay.geometry, datatype: self.datatype, scaling: self.scaling, voxels }
    }
}

/// A NIfTI file opened for reading: its header read and checked, a
/// compressed file's bytes read (by two threads, half each), and the buffer
/// its voxels go to made, zeroed and not yet touched. [`Opened::read`] fills
/// that buffer; [`Prefault::run`] on another thread, before or meanwhile,
/// takes the buffer's page faults off the thread that fills it (a tenth of
/// inflating a CT). [`read_stored`] is [`open`], then `read`.
pub struct Opened {
    path: std::path::PathBuf,
    source: Source,
}

enum Source {
    /// A single .nii, the file at its first voxel.
    Raw { file: std::fs::File, head: Head, voxels: Voxels },
    /// A gzip-compressed single .nii, all of whose bytes are `gz`, to be
    /// inflated whole into `voxels` (sized from the header and the gzip
    /// trailer: `capacity` bytes, of which the first `needed` are the
    /// header's and the voxels').
    Gz { gz: Vec<u8>, head: Head, voxels: Voxels, needed: usize, capacity: usize },
    /// Through the nifti crate (.hdr/.img, or a header it alone reads).
    Crate,
}

/// The memory an [`Opened`] file's voxels will be written to; plain numbers,
/// so another thread may take its page faults while the file is read.
#[derive(Debug, Clone, Copy)]
pub struct Prefault {
    addr: usize,
    len: usize,
}

impl Prefault {
    /// Takes the page faults of the voxels' buffer now (see
    /// [`crate::sys::prefault_writable`]); changes no byte.
    pub fn run(self) {
        crate::sys::prefault_writable(self.addr, self.len);
    }
}

/// Opens a NIfTI file for [`Opened::read`]: a .nii's header read and its
/// size checked against it, a .nii.gz's compressed bytes read whole, and
/// the voxels' buffer made. Headers declaring more voxels than the file can
/// hold are refused before that buffer is made.
pub fn open(path: &Path) -> Result<Opened, ReadError> {
    let err = |reason: String| ReadError::Read { path: path.to_path_buf(), reason };
    let opened = |source| Ok(Opened { path: path.to_path_buf(), source });
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut first = [0u8; 352];
    let got = read_full(&mut file, &mut first).map_err(|e| err(e.to_string()))?;
    if got >= 2 && first[..2] == [0x1f, 0x8b] {
        let gz = read_whole(&mut file).map_err(|e| err(e.to_string()))?;
        drop(file);
        return opened(open_gz(path, gz)?);
    }
    let h = match nifti::NiftiHeader::from_reader(&first[..got]) {
        Ok(h) if &h.magic == b"n+1\0" => h,
        _ => return opened(Source::Crate),
    };
    let head = Head::of(path, &h)?;
    let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let bytes = (head.lay.voxels as u64).saturating_mul(head.lay.size as u64);
    if len.saturating_sub(head.start as u64) < bytes {
        return Err(err(format!(
            "holds {} bytes of voxels, its header declares {bytes}",
            len.saturating_sub(head.start as u64)
        )));
    }
    file.seek(std::io::SeekFrom::Start(head.start as u64)).map_err(|e| err(e.to_string()))?;
    let voxels = Voxels::empty(head.datatype, head.lay.voxels * head.lay.size).map_err(err)?;
    opened(Source::Raw { file, head, voxels })
}

/// All bytes of `file`, the two halves of its size read by two threads into
/// one buffer (huge pages asked for before it is written); a file that grew
/// since its size was read, the rest too.
fn read_whole(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let size = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; size];
    crate::sys::advise_huge_pages(&mut bytes);
    let half = size / 2;
    let (a, b) = bytes.split_at_mut(half);
    let from = |at| ReadAt { file, at };
    let (ra, rb) = rayon::join(|| read_full(&mut from(0), a), || read_full(&mut from(half as u64), b));
    let (ra, rb) = (ra?, rb?);
    // A file that shrank: the first part's bytes, or both parts'.
    let got = if ra < half { ra } else { half + rb };
    bytes.truncate(got);
    if got == size {
        file.seek(std::io::SeekFrom::Start(size as u64))?;
        file.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// The header of a gzip-compressed file and the buffer to inflate it into.
fn open_gz(path: &Path, gz: Vec<u8>) -> Result<Source, ReadError> {
    let err = |reason: String| ReadError::Read { path: path.to_path_buf(), reason };
    let mut first = [0u8; 352];
    let got =
        read_full(&mut flate2::bufread::MultiGzDecoder::new(&gz[..]), &mut first).map_err(|e| err(e.to_string()))?;
    let h = match nifti::NiftiHeader::from_reader(&first[..got]) {
        Ok(h) if &h.magic == b"n+1\0" => h,
        _ => return Ok(Source::Crate),
    };
    let head = Head::of(path, &h)?;
    let needed = head.start.saturating_add(head.lay.voxels.saturating_mul(head.lay.size));
    // Deflate expands at most 1032 to 1: a header declaring more than the
    // compressed bytes can hold is refused before any buffer is made.
    if needed > gz.len().saturating_mul(1032) {
        return Err(err(format!("declares {needed} bytes, more than {} compressed bytes can hold", gz.len())));
    }
    // ISIZE: the last member's length modulo 2^32, the whole file's when it
    // is one member under 4 GiB.
    let isize = gz
        .len()
        .checked_sub(4)
        .map_or(0, |at| u32::from_le_bytes([gz[at], gz[at + 1], gz[at + 2], gz[at + 3]]) as usize);
    let capacity = needed.max(isize);
    let voxels = Voxels::empty(head.datatype, capacity).map_err(err)?;
    Ok(Source::Gz { gz, head, voxels, needed, capacity })
}

impl Opened {
    /// The memory the voxels will be written to, for [`Prefault::run`].
    pub fn prefault(&self) -> Prefault {
        match &self.source {
            Source::Raw { voxels, .. } | Source::Gz { voxels, .. } => Prefault::from(voxels),
            Source::Crate => Prefault { addr: 0, len: 0 },
        }
    }

    /// The voxels, read (a .nii) or inflated in one pass by libdeflate (a
    /// .nii.gz); a file of several gzip members, or one whose trailer does
    /// not give its size, through a streaming decoder. This thread fills the
    /// buffer while another takes its page faults where one is free.
    pub fn read(self) -> Result<Stored, ReadError> {
        let path = self.path;
        let err = |reason: String| ReadError::Read { path: path.clone(), reason };
        match self.source {
            Source::Crate => read_via_crate(&path),
            Source::Raw { mut file, head, mut voxels } => {
                let prefault = Prefault::from(&voxels);
                let (got, ()) = rayon::join(|| read_full(&mut file, voxels.bytes_mut()), || prefault.run());
                let got = got.map_err(|e| err(e.to_string()))?;
                let voxels = filled(voxels, got, &head.lay, 0, head.big_endian).map_err(err)?;
                Ok(head.stored(voxels))
            }
            Source::Gz { mut gz, head, mut voxels, needed, capacity } => {
                // The first member's deflate data, inflated on this thread
                // (and the second, from a block boundary part-way through,
                // when the trailer gives the size: `inflate_two_threads`)
                // while another takes the buffer's page faults; its CRC-32
                // then on every core. It must end where the file's trailer
                // (CRC-32, length) begins to be the whole file.
                let prefault = Prefault::from(&voxels);
                let deflate = super::gzip::deflate_start(&gz).filter(|&at| at + 8 <= gz.len());
                if let Some(at) = deflate {
                    let t = gz.len() - 8;
                    let crc = u32::from_le_bytes([gz[t], gz[t + 1], gz[t + 2], gz[t + 3]]);
                    let isize = u32::from_le_bytes([gz[t + 4], gz[t + 5], gz[t + 6], gz[t + 7]]);
                    let stream = &mut gz[at..t];
                    let (inflated, ()) = rayon::join(
                        || {
                            let out = &mut voxels.bytes_mut()[..capacity];
                            let whole = isize as usize;
                            if whole >= needed
                                && whole <= out.len()
                                && let Some(n) = super::inflate::inflate_two_threads(stream, &mut out[..whole])
                            {
                                return Ok(n);
                            }
                            libdeflater::Decompressor::new().deflate_decompress(stream, out)
                        },
                        || prefault.run(),
                    );
                    match inflated {
                        Ok(n) if n >= needed && n as u32 == isize => {
                            let bytes = &voxels.bytes_mut()[..n];
                            if super::gzip::crc32(bytes) == crc {
                                let voxels = filled(voxels, n, &head.lay, head.start, head.big_endian).map_err(err)?;
                                return Ok(head.stored(voxels));
                            }
                        }
                        Err(libdeflater::DecompressionError::BadData) => {
                            return Err(err("corrupt gzip data".into()));
                        }
                        // Several members (the first ends early, or the last
                        // trailer is another member's), more than the trailer
                        // said: read member by member below, which also names a
                        // CRC that does not match.
                        Ok(_) | Err(libdeflater::DecompressionError::InsufficientSpace) => {}
                    }
                }
                drop(voxels);
                // Streaming, every member in turn: the header and extensions
                // skipped, the voxels inflated into their own buffer.
                let start = head.start;
                let stream = |b: &mut [u8]| -> Result<usize, String> {
                    let mut dec = flate2::bufread::MultiGzDecoder::new(&gz[..]);
                    let mut skip = vec![0u8; start];
                    if read_full(&mut dec, &mut skip).map_err(|e| e.to_string())? < start {
                        return Ok(0);
                    }
                    let got = read_full(&mut dec, b).map_err(|e| e.to_string())?;
                    // To the end of the last member, so that every member's
                    // CRC-32 and length are checked.
                    std::io::copy(&mut dec, &mut std::io::sink()).map_err(|e| e.to_string())?;
                    Ok(got)
                };
                let voxels = voxels_of(&head.lay, head.datatype, head.big_endian, stream, 0, 0).map_err(err)?;
                Ok(head.stored(voxels))
            }
        }
    }
}

impl From<&Voxels> for Prefault {
    fn from(v: &Voxels) -> Prefault {
        let (addr, len) = v.span();
        Prefault { addr, len }
    }
}

/// Reads a 3D NIfTI volume in the voxel type its file stores (scaling not
/// applied: [`Stored::to_f32`] and [`Stored::to_f64`] give what
/// [`read_f32`] and [`read_f64`] give): [`open`], then [`Opened::read`]. A
/// .nii is read straight into the voxel buffer, a .nii.gz inflated in one
/// pass (see `read`); a header with a separate image file (.hdr/.img) goes
/// through the nifti crate.
pub fn read_stored(path: &Path) -> Result<Stored, ReadError> {
    open(path)?.read()
}

/// Through the nifti crate (a .hdr/.img pair, or a header it alone reads):
/// its raw voxel bytes, typed here.
fn read_via_crate(path: &Path) -> Result<Stored, ReadError> {
    let err = |reason: String| ReadError::Read { path: path.to_path_buf(), reason };
    let obj = nifti::ReaderOptions::new().read_file(path).map_err(|e| err(nifti_reason(e)))?;
    let h = nifti::NiftiObject::header(&obj).clone();
    let head = Head::of(path, &h)?;
    let raw = nifti::NiftiObject::into_volume(obj).into_raw_data();
    let fill = |b: &mut [u8]| {
        let n = raw.len().min(b.len());
        b[..n].copy_from_slice(&raw[..n]);
        Ok(n)
    };
    let voxels = voxels_of(&head.lay, head.datatype, head.big_endian, fill, 0, 0).map_err(err)?;
    Ok(head.stored(voxels))
}

/// The nifti crate's own reading and conversion (the reference the stored
/// path is tested against).
#[cfg(test)]
fn read_as<T: nifti::DataElement + Copy>(path: &Path) -> Result<Volume<T>, ReadError> {
    let err = |reason: String| ReadError::Read { path: path.to_path_buf(), reason };
    let obj = nifti::ReaderOptions::new().read_file(path).map_err(|e| err(nifti_reason(e)))?;
    let h = nifti::NiftiObject::header(&obj).clone();
    let d = h.dim;
    let rank = usize::from(d[0]);
    if !(3..=7).contains(&rank) || d[4..=rank].iter().any(|&v| v > 1) {
        return Err(ReadError::NotThreeD { path: path.to_path_buf(), dims: d[1..=rank.min(7)].to_vec() });
    }
    let dims = [usize::from(d[1]), usize::from(d[2]), usize::from(d[3])];
    let geometry = geometry_from_ras(&header_affine_ras(&h), dims)
        .map_err(|reason| ReadError::Affine { path: path.to_path_buf(), reason })?;
    let arr = nifti::IntoNdArray::into_ndarray::<T>(nifti::NiftiObject::into_volume(obj))
        .map_err(|e| err(nifti_reason(e)))?;
    // The array is indexed [i, j, k(, …)]; reversing the axes and reading in
    // logical order gives i fastest. The crate stores it i fastest already,
    // so its buffer is taken as it is when the layout says so.
    let t = arr.reversed_axes();
    let data: Vec<T> = if t.is_standard_layout() {
        let n = t.len();
        let (v, off) = t.into_raw_vec_and_offset();
        let off = off.unwrap_or(0);
        if off == 0 && v.len() == n { v } else { v[off..off + n].to_vec() }
    } else {
        t.iter().copied().collect()
    };
    if data.len() != geometry.voxel_count() {
        return Err(err(format!("{} voxels for dims {dims:?}", data.len())));
    }
    Ok(Volume { geometry, data })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn identity_quaternion_and_flips() {
        let (b, c, d, q) = quaternion([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!((b, c, d, q), (0.0, 0.0, 0.0, 1.0));
        // LPS axial stored as RAS: x and y negated: a 180° turn about z.
        let (b, c, d, q) = quaternion([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!(q, 1.0);
        assert!(b.abs() < 1e-12 && c.abs() < 1e-12 && (d.abs() - 1.0).abs() < 1e-12);
        // A reflection gives qfac -1.
        let (_, _, _, q) = quaternion([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]);
        assert_eq!(q, -1.0);
    }

    #[test]
    fn write_then_read_round_trips_geometry_and_values() {
        let c = 5f64.to_radians().cos();
        let s5 = 5f64.to_radians().sin();
        let r = [c, s5, 0.0];
        let cd = [-s5, c, 0.0];
        let g = Geometry {
            dims: [4, 3, 2],
            spacing: [0.8, 0.9, 2.5],
            origin: [-100.0, 50.0, 12.5],
            direction: [r, cd, crate::volume::cross(r, cd)],
        };
        let v = Volume { geometry: g.clone(), data: (0..24).map(|x| x as f32 * 1.5 - 3.0).collect() };
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a.nii.gz", "a.nii"] {
            let p = dir.path().join(name);
            write(&p, &v, "t").expect("write");
            let back = read_f32(&p).expect("read");
            assert_eq!(back.data, v.data);
            assert_eq!(back.geometry.dims, g.dims);
            for a in 0..3 {
                assert!((back.geometry.spacing[a] - g.spacing[a]).abs() < 1e-5);
                assert!((back.geometry.origin[a] - g.origin[a]).abs() < 1e-4);
                for b in 0..3 {
                    assert!((back.geometry.direction[a][b] - g.direction[a][b]).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn four_d_file_holds_the_volumes_in_order() {
        let g = Geometry {
            dims: [3, 2, 2],
            spacing: [1.0, 2.0, 3.0],
            origin: [1.0, 2.0, 3.0],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let vols: Vec<Volume<f32>> = (0..3)
            .map(|c| Volume { geometry: g.clone(), data: (0..12).map(|x| (c * 100 + x) as f32).collect() })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("p.nii.gz");
        write_4d(&p, &vols, "probabilities").expect("write");
        let obj = nifti::ReaderOptions::new().read_file(&p).expect("read");
        let h = nifti::NiftiObject::header(&obj).clone();
        assert_eq!(&h.dim[..5], &[4, 3, 2, 2, 3]);
        assert_eq!(h.pixdim[4], 1.0);
        let arr = nifti::IntoNdArray::into_ndarray::<f32>(nifti::NiftiObject::into_volume(obj)).expect("array");
        assert_eq!(arr.shape(), &[3, 2, 2, 3]);
        assert_eq!(arr[[2, 1, 0, 0]], 5.0);
        assert_eq!(arr[[0, 0, 1, 2]], 206.0);
        assert!(read_f32(&p).is_err(), "a 4D file is not read as 3D");
        let other = Volume { geometry: Geometry { dims: [1, 1, 1], ..g.clone() }, data: vec![0.0] };
        assert!(write_4d(&dir.path().join("x.nii"), &[vols[0].clone(), other], "").is_err());
        assert!(write_4d::<f32>(&dir.path().join("y.nii"), &[], "").is_err());
    }

    /// The fixture files of tests/fixtures/nifti_types.py (nibabel and
    /// SimpleITK), written into `dir`; the cases of its expected.json.
    pub(crate) fn nifti_type_fixtures(dir: &Path) -> Vec<serde_json::Value> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("EDGESEG_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        let out = std::process::Command::new(&python)
            .arg(root.join("tests/fixtures/nifti_types.py"))
            .arg(dir)
            .output()
            .expect("the venv's python runs (scripts/venv.sh)");
        assert!(out.status.success(), "nifti_types.py: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
        serde_json::from_str::<serde_json::Value>(&text).expect("json").as_array().expect("list").clone()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn stored_voxels_are_the_files_and_convert_bit_for_bit_as_the_nifti_crate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = nifti_type_fixtures(dir.path());
        assert!(cases.len() > 30);
        for c in &cases {
            let name = c["file"].as_str().expect("file");
            let p = dir.path().join(name);
            if c["error"].as_bool() == Some(true) {
                let e = read_stored(&p).err().unwrap_or_else(|| panic!("{name} read"));
                assert!(matches!(e, ReadError::Read { .. }), "{name}: {e}");
                assert!(e.to_string().contains(name) && !e.to_string().contains("Io("), "{name}: {e}");
                assert!(read_f32(&p).is_err() && read_f64(&p).is_err(), "{name}");
                continue;
            }
            let st = read_stored(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(i64::from(st.datatype), c["datatype"].as_i64().expect("datatype"), "{name}");
            let dims: Vec<usize> =
                c["dims"].as_array().expect("dims").iter().map(|d| d.as_u64().expect("d") as usize).collect();
            assert_eq!(st.geometry.dims.to_vec(), dims, "{name}");
            // The voxels nibabel reads, unscaled, byte for byte (little-endian).
            let bytes: Vec<u8> = crate::with_voxels!(&st.voxels, s => {
                s.iter().flat_map(|v| {
                    let b = bytemuck::bytes_of(v).to_vec();
                    if cfg!(target_endian = "big") { b.into_iter().rev().collect::<Vec<_>>() } else { b }
                }).collect()
            });
            assert_eq!(hex(&bytes), c["raw"].as_str().expect("raw"), "{name}: stored voxels");
            let sc = st.scaling;
            let (slope, inter) = if sc.slope == 0.0 { (1.0, 0.0) } else { (sc.slope, sc.inter) };
            assert_eq!(f64::from(slope), c["slope"].as_f64().expect("slope"), "{name}");
            assert_eq!(f64::from(inter), c["inter"].as_f64().expect("inter"), "{name}");
            // As f32 and f64: the nifti crate's own reading, bit for bit (the
            // two-member file against its one-member twin: the crate reads
            // the first member only).
            let reference = dir.path().join(c["twin"].as_str().unwrap_or(name));
            let (a32, b32) = (read_as::<f32>(&reference).expect("crate f32"), st.to_f32());
            let (a64, b64) = (read_as::<f64>(&reference).expect("crate f64"), st.to_f64());
            assert_eq!(a32.geometry, b32.geometry, "{name}");
            assert_eq!(a64.geometry, b64.geometry, "{name}");
            let bits32 = |v: &Volume<f32>| v.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let bits64 = |v: &Volume<f64>| v.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits32(&a32), bits32(&b32), "{name}: f32");
            assert_eq!(bits64(&a64), bits64(&b64), "{name}: f64");
            assert_eq!(bits32(&read_f32(&p).expect("read_f32")), bits32(&a32), "{name}");
            assert_eq!(bits64(&read_f64(&p).expect("read_f64")), bits64(&a64), "{name}");
        }
        // The crate alone cannot read the file of two gzip members.
        assert!(read_as::<f32>(&dir.path().join("two_members.nii.gz")).is_err());
    }

    /// A CT-sized .nii.gz (one gzip member, zlib's blocks, 30 MB of int16)
    /// goes through the two-thread inflate; the voxels are the written ones.
    #[test]
    fn a_large_one_member_file_reads_back_through_both_threads() {
        use std::io::Write;
        let g = Geometry {
            dims: [256, 256, 240],
            spacing: [0.8, 0.8, 1.5],
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let mut rnd = crate::export::testing::xorshift(77);
        let voxels: Vec<i16> = (0..g.voxel_count())
            .map(|i| {
                let x = rnd();
                let level = if (i / 4096) % 3 == 0 { -1000 } else { 40 };
                level + (x % 61) as i16 - 30
            })
            .collect();
        let mut raw = header::<i16>(&g, "two threads");
        for v in &voxels {
            v.put(&mut raw);
        }
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).expect("gzip");
        let gz = z.finish().expect("gzip");
        assert!(gz.len() > 4 << 20, "{} compressed bytes: too few for two threads", gz.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big.nii.gz");
        std::fs::write(&p, &gz).expect("write");
        let st = read_stored(&p).expect("read");
        assert_eq!(st.geometry.dims, g.dims);
        match &st.voxels {
            Voxels::I16(b) => assert!(b.as_slice() == voxels.as_slice(), "voxels differ"),
            _ => panic!("not int16"),
        }
    }

    #[test]
    fn header_layout() {
        let g = Geometry {
            dims: [3, 4, 5],
            spacing: [0.5, 0.75, 2.0],
            origin: [10.0, 20.0, 30.0],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let h = header::<f32>(&g, "test");
        assert_eq!(h.len(), 352);
        assert_eq!(i16::from_le_bytes([h[42], h[43]]), 3);
        assert_eq!(f32::from_le_bytes([h[80], h[81], h[82], h[83]]), 0.5);
        // srow_x = [-0.5, 0, 0, -10]
        assert_eq!(f32::from_le_bytes([h[280], h[281], h[282], h[283]]), -0.5);
        assert_eq!(f32::from_le_bytes([h[292], h[293], h[294], h[295]]), -10.0);
        assert_eq!(&h[344..348], b"n+1\0");
    }
}
