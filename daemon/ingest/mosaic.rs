//! Siemens mosaic images: one stored image that holds the N slices of an MR
//! volume (EPI, DWI, fMRI) as a grid of tiles, left to right then top to
//! bottom. Read as the N slices they are, the way dcm2niix and nibabel do:
//!
//! - a mosaic is an image whose ImageType (0008,0008) contains `MOSAIC`; its
//!   slice count is NumberOfImagesInMosaic, (0019,xx0A) under the private
//!   creator "SIEMENS MR HEADER" and the tag of the same name in the CSA image
//!   header (0029,xx10) "SIEMENS CSA HEADER" (see `csa.rs`); where both are
//!   present they must agree;
//! - the grid is ceil(√N) tiles a side; a tile is Rows / tiles by Columns / tiles;
//! - ImagePositionPatient is the centre of the stored image's first pixel, so
//!   the first slice's position is IPP + row·Δcol·(Columns − tile columns)/2 +
//!   col·Δrow·(Rows − tile rows)/2 (dcm2niix's and nibabel's correction);
//! - slice k lies k × SpacingBetweenSlices (SliceThickness when absent) along
//!   the slice normal, row × col, with the sign of the CSA SliceNormalVector
//!   (Siemens may store the slices in either direction).
//!
//! A file marked `MOSAIC` that lacks what is needed to take it apart is
//! refused with the reason: read as one 2D image its geometry would be wrong.

use std::path::Path;

use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;

use super::csa::CsaHeader;
use super::error::FileError;
use super::header::{FrameHeader, MAX_FRAMES, multi_text, private};
use super::pixels::{self, FrameTask, SampleFormat};
use crate::volume::{cross, dot, norm};

/// ImageType.
const IMAGE_TYPE: Tag = Tag(0x0008, 0x0008);
/// SpacingBetweenSlices.
const SPACING_BETWEEN_SLICES: Tag = Tag(0x0018, 0x0088);
/// SliceThickness.
const SLICE_THICKNESS: Tag = Tag(0x0018, 0x0050);

/// How the slices of a mosaic lie in its stored image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mosaic {
    /// Slices in the mosaic (NumberOfImagesInMosaic).
    pub images: u32,
    /// Tiles per row and per column of the grid: ceil(√images).
    pub tiles: u32,
    /// Rows of the stored image.
    pub stored_rows: u32,
    /// Columns of the stored image.
    pub stored_columns: u32,
}

impl Mosaic {
    /// Rows of one slice.
    pub fn tile_rows(&self) -> u32 {
        self.stored_rows / self.tiles
    }

    /// Columns of one slice.
    pub fn tile_columns(&self) -> u32 {
        self.stored_columns / self.tiles
    }
}

/// ceil(√n) for n ≥ 1, in integers.
fn tiles_for(n: u32) -> u32 {
    let mut t = (f64::from(n).sqrt() as u32).max(1);
    while t * t < n {
        t += 1;
    }
    while t > 1 && (t - 1) * (t - 1) >= n {
        t -= 1;
    }
    t
}

/// An unsigned integer element, also where an Implicit VR file leaves a
/// private element unknown (UN): then its two bytes are a little-endian US.
fn element_count(e: &dicom_object::mem::InMemElement) -> Option<i64> {
    match e.vr() {
        VR::UN | VR::OB => {
            let b = e.to_bytes().ok()?;
            (b.len() == 2).then(|| i64::from(u16::from_le_bytes([b[0], b[1]])))
        }
        _ => e.to_int::<i64>().ok(),
    }
}

fn float(obj: &InMemDicomObject, t: Tag) -> Option<f64> {
    obj.get(t)?.to_float64().ok().filter(|v| v.is_finite() && *v > 0.0)
}

/// Whether `obj` is a Siemens mosaic; if it is, the mosaic and one frame
/// header per slice (from the stored image's one frame), in mosaic order.
pub fn detect(
    obj: &InMemDicomObject,
    path: &Path,
    rows: u32,
    columns: u32,
    bits_stored: u16,
    number_of_frames: u32,
    frames: &[FrameHeader],
) -> Result<Option<(Mosaic, Vec<FrameHeader>)>, FileError> {
    if !multi_text(obj, IMAGE_TYPE).iter().any(|v| v.eq_ignore_ascii_case("MOSAIC")) {
        return Ok(None);
    }
    let invalid =
        |attribute, reason: String| FileError::InvalidAttribute { path: path.to_path_buf(), attribute, reason };
    let csa = match private(obj, 0x0029, "SIEMENS CSA HEADER", 0x10).map(|e| e.to_bytes()) {
        Some(Ok(bytes)) => Some(
            CsaHeader::parse(&bytes)
                .map_err(|e| invalid("CSA Image Header Info (0029,xx10)", format!("mosaic image: {e}")))?,
        ),
        _ => None,
    };
    let from_dicom = private(obj, 0x0019, "SIEMENS MR HEADER", 0x0A).and_then(element_count);
    let from_csa = csa.as_ref().and_then(|h| h.numbers("NumberOfImagesInMosaic")).and_then(|v| {
        let n = *v.first()?;
        (n.fract() == 0.0 && n.abs() < 1e9).then_some(n as i64)
    });
    let n = match (from_dicom, from_csa) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                "NumberOfImagesInMosaic",
                format!("{a} in (0019,xx0A) but {b} in the CSA image header"),
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(invalid(
                "NumberOfImagesInMosaic",
                "ImageType says MOSAIC, but neither (0019,xx0A) nor the CSA image header gives the slice count".into(),
            ));
        }
    };
    let images = u32::try_from(n)
        .ok()
        .filter(|&n| (1..=MAX_FRAMES).contains(&n))
        .ok_or_else(|| invalid("NumberOfImagesInMosaic", format!("{n} is outside 1..={MAX_FRAMES}")))?;
    let frame = match frames {
        [frame] if number_of_frames == 1 => frame,
        _ => return Err(invalid("NumberOfFrames", format!("{number_of_frames} in a mosaic image (1 expected)"))),
    };
    if bits_stored > 24 {
        // Tiles are cut from the decoded image held as f32, exact up to 24 bits.
        return Err(invalid("BitsStored", format!("{bits_stored} in a mosaic image (at most 24 supported)")));
    }
    let tiles = tiles_for(images);
    if !rows.is_multiple_of(tiles) || !columns.is_multiple_of(tiles) {
        return Err(invalid(
            "NumberOfImagesInMosaic",
            format!("{images} slices make a {tiles}×{tiles} grid, which does not divide {columns}×{rows}"),
        ));
    }
    let mosaic = Mosaic { images, tiles, stored_rows: rows, stored_columns: columns };
    let normal_csa = csa
        .as_ref()
        .and_then(|h| h.numbers("SliceNormalVector"))
        .filter(|v| v.len() == 3)
        .map(|v| [v[0], v[1], v[2]])
        .ok_or_else(|| {
            invalid("CSA Image Header Info (0029,xx10)", "mosaic image without a SliceNormalVector".into())
        })?;
    let o = frame.orientation;
    let (row, col) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let n = cross(row, col);
    let n = [n[0] / norm(n), n[1] / norm(n), n[2] / norm(n)];
    let along = dot(normal_csa, n) / norm(normal_csa).max(f64::MIN_POSITIVE);
    if along.is_nan() || along.abs() < 0.5 {
        return Err(invalid(
            "CSA Image Header Info (0029,xx10)",
            format!("SliceNormalVector is {along:.3} along row × column (±1 expected)"),
        ));
    }
    let sign = along.signum();
    let spacing = if images > 1 {
        float(obj, SPACING_BETWEEN_SLICES).or_else(|| float(obj, SLICE_THICKNESS)).ok_or_else(|| {
            invalid("SpacingBetweenSlices", "a mosaic image needs SpacingBetweenSlices or SliceThickness".into())
        })?
    } else {
        1.0
    };
    // PixelSpacing is (between rows, between columns).
    let [dr, dc] = frame.pixel_spacing;
    let half_c = f64::from(columns - mosaic.tile_columns()) / 2.0 * dc;
    let half_r = f64::from(rows - mosaic.tile_rows()) / 2.0 * dr;
    let p = frame.position;
    let first = [0, 1, 2].map(|a| p[a] + row[a] * half_c + col[a] * half_r);
    let frames = (0..images)
        .map(|k| FrameHeader {
            position: [0, 1, 2].map(|a| first[a] + f64::from(k) * spacing * sign * n[a]),
            ..frame.clone()
        })
        .collect();
    Ok(Some((mosaic, frames)))
}

/// Decodes the stored image once (any transfer syntax `decode_frames` reads)
/// and fills each task's slice from its tile; `tile` is the format of one
/// slice and task frame k is slice k in mosaic order.
pub fn decode(
    path: &Path,
    transfer_syntax: &str,
    tile: SampleFormat,
    mosaic: &Mosaic,
    tasks: &mut [FrameTask<'_>],
) -> Result<(), FileError> {
    let stored = SampleFormat { rows: mosaic.stored_rows, columns: mosaic.stored_columns, ..tile };
    let (tr, tc, sc) = (tile.rows as usize, tile.columns as usize, stored.columns as usize);
    if (tr, tc) != (mosaic.tile_rows() as usize, mosaic.tile_columns() as usize) {
        return Err(FileError::FrameCount {
            path: path.to_path_buf(),
            reason: format!("mosaic tiles are {}×{}, slices {tc}×{tr}", mosaic.tile_columns(), mosaic.tile_rows()),
        });
    }
    let mut whole = vec![0f32; stored.rows as usize * sc];
    let mut task = [FrameTask { frame: 0, out: &mut whole, slope: 1.0, intercept: 0.0, scale: 1.0 }];
    pixels::decode_frames(path, transfer_syntax, stored, 1, &mut task)?;
    for t in tasks.iter_mut() {
        if t.frame >= mosaic.images || t.out.len() != tr * tc {
            return Err(FileError::FrameCount {
                path: path.to_path_buf(),
                reason: format!("slice {} asked of a mosaic of {}", t.frame + 1, mosaic.images),
            });
        }
        let (r, c) = ((t.frame / mosaic.tiles) as usize, (t.frame % mosaic.tiles) as usize);
        // The same arithmetic as `pixels::convert`'s: (stored × slope + intercept) × scale.
        let (a, b) = (t.slope * t.scale, t.intercept * t.scale);
        for (y, out) in t.out.chunks_exact_mut(tc).enumerate() {
            let start = (r * tr + y) * sc + c * tc;
            for (o, &v) in out.iter_mut().zip(&whole[start..start + tc]) {
                *o = (f64::from(v) * a + b) as f32;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_ceiling_of_the_square_root() {
        let got: Vec<u32> = [1, 2, 4, 5, 9, 10, 35, 36, 37, 64, 65, 8192].iter().map(|&n| tiles_for(n)).collect();
        assert_eq!(got, [1, 2, 2, 3, 3, 4, 6, 6, 7, 8, 9, 91]);
    }
}
