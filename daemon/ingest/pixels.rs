//! Pixel data of one instance to rescaled f32 frames. Native (uncompressed)
//! data is read straight from the element bytes (Explicit VR Big Endian's
//! samples swapped to little endian first); encapsulated data goes through
//! dicom-pixeldata's codecs one frame at a time, after `encapsulated` has
//! found which fragments make up each frame.

use std::path::Path;

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::error::FileError;
use super::header::tag;
use super::scan::{error_chain, map_read_error};

/// Sample layout shared by every frame of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleFormat {
    /// Rows per frame.
    pub rows: u32,
    /// Columns per frame.
    pub columns: u32,
    /// BitsAllocated: 8, 16 or 32.
    pub bits_allocated: u16,
    /// BitsStored.
    pub bits_stored: u16,
    /// Two's complement samples.
    pub signed: bool,
}

impl SampleFormat {
    /// Bytes in one frame.
    pub fn frame_bytes(&self) -> usize {
        self.rows as usize * self.columns as usize * usize::from(self.bits_allocated / 8)
    }
}

/// One frame to decode and where it goes.
pub struct FrameTask<'a> {
    /// 0-based frame number in the file.
    pub frame: u32,
    /// Output: rows × columns values.
    pub out: &'a mut [f32],
    /// value = (stored × slope + intercept) × scale.
    pub slope: f64,
    /// See `slope`.
    pub intercept: f64,
    /// See `slope` (the SUV factor for PET, else 1).
    pub scale: f64,
}

/// Converts raw little-endian samples into `out`.
pub fn convert(bytes: &[u8], fmt: SampleFormat, slope: f64, intercept: f64, scale: f64, out: &mut [f32]) {
    let a = slope * scale;
    let b = intercept * scale;
    let shift = u32::from(fmt.bits_allocated - fmt.bits_stored);
    match (fmt.bits_allocated, fmt.signed) {
        (16, false) if shift == 0 && a == 1.0 && b.fract() == 0.0 && b.abs() < 65536.0 => {
            let b = b as f32;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from(u16::from_le_bytes([c[0], c[1]])) + b;
            }
        }
        (8, false) => {
            for (o, &v) in out.iter_mut().zip(bytes) {
                *o = (f64::from(v) * a + b) as f32;
            }
        }
        (8, true) => {
            for (o, &v) in out.iter_mut().zip(bytes) {
                let s = ((v << shift) as i8) >> shift;
                *o = (f64::from(s) * a + b) as f32;
            }
        }
        (16, false) => {
            let mask = if fmt.bits_stored >= 16 { u16::MAX } else { (1u16 << fmt.bits_stored) - 1 };
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                let v = u16::from_le_bytes([c[0], c[1]]) & mask;
                *o = (f64::from(v) * a + b) as f32;
            }
        }
        (16, true) if shift == 0 && a == 1.0 && b.fract() == 0.0 && b.abs() < 65536.0 => {
            // CT's usual case: value = stored + integer intercept, exact in f32
            // and several times faster than the general f64 path.
            let b = b as f32;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from(i16::from_le_bytes([c[0], c[1]])) + b;
            }
        }
        (16, true) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                let v = (u16::from_le_bytes([c[0], c[1]]) << shift) as i16 >> shift;
                *o = (f64::from(v) * a + b) as f32;
            }
        }
        (_, false) => {
            let mask = if fmt.bits_stored >= 32 { u32::MAX } else { (1u32 << fmt.bits_stored) - 1 };
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & mask;
                *o = (f64::from(v) * a + b) as f32;
            }
        }
        (_, true) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let v = (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) << shift) as i32 >> shift;
                *o = (f64::from(v) * a + b) as f32;
            }
        }
    }
}

/// Fast path for uncompressed little-endian files, where PixelData is the
/// last element (the usual layout): the file is read once and the samples are
/// taken from its tail, after checking that the bytes before them are exactly
/// a PixelData element header of the expected length. Anything else (trailing
/// padding, a signature, an odd layout) returns `None` and goes the parsed way.
fn native_tail(path: &Path, transfer_syntax: &str, need: usize) -> Option<(Vec<u8>, usize)> {
    let explicit = match transfer_syntax {
        "1.2.840.10008.1.2.1" => true,
        "1.2.840.10008.1.2" => false,
        _ => return None,
    };
    let padded = need + need % 2;
    let bytes = std::fs::read(path).ok()?;
    let header = if explicit { 12 } else { 8 };
    let start = bytes.len().checked_sub(padded)?;
    let h = bytes.get(start.checked_sub(header)?..start)?;
    let len = u32::try_from(padded).ok()?.to_le_bytes();
    let ok = h[0..4] == [0xE0, 0x7F, 0x10, 0x00]
        && if explicit {
            (&h[4..6] == b"OW" || &h[4..6] == b"OB") && h[6..8] == [0, 0] && h[8..12] == len
        } else {
            h[4..8] == len
        };
    ok.then_some((bytes, start))
}

/// Explicit VR Big Endian (retired, still found in old archives).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
/// ExtendedOffsetTable (7FE0,0001).
const EXTENDED_OFFSET_TABLE: Tag = Tag(0x7FE0, 0x0001);

/// Native pixel data of a big-endian file as little-endian samples of
/// `bits_allocated`. The parser gives OW as 16-bit words already in host
/// order and OB as the file's bytes; either is first put back into the
/// file's byte order, then each sample is swapped (as pydicom reads such a
/// file: samples of BitsAllocated bits, most significant byte first).
fn big_endian_to_little(p: &PrimitiveValue, bits_allocated: u16) -> Vec<u8> {
    let mut file_order: Vec<u8> = match p {
        PrimitiveValue::U16(v) => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::I16(v) => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::U32(v) => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::I32(v) => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        other => other.to_bytes().into_owned(),
    };
    let size = usize::from(bits_allocated / 8).max(1);
    if size > 1 {
        for sample in file_order.chunks_exact_mut(size) {
            sample.reverse();
        }
    }
    file_order
}

/// JPEG Extended (Process 2 & 4): 8- or 12-bit lossy.
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// The codestream of `frame` when the fragments are one per frame (as
/// `decode_frames` leaves them) or the object has one frame.
fn frame_codestream(fragments: &[Vec<u8>], frames: u32, frame: u32) -> Option<std::borrow::Cow<'_, [u8]>> {
    if frames == 1 {
        return Some(match fragments {
            [one] => std::borrow::Cow::Borrowed(one.as_slice()),
            many => std::borrow::Cow::Owned(many.concat()),
        });
    }
    if fragments.len() != frames as usize {
        return None;
    }
    fragments.get(frame as usize).map(|f| std::borrow::Cow::Borrowed(f.as_slice()))
}

/// The Extended Offset Table, where the file has one.
fn extended_offset_table(obj: &dicom_object::InMemDicomObject) -> Option<Vec<u64>> {
    match obj.get(EXTENDED_OFFSET_TABLE)?.value() {
        Value::Primitive(PrimitiveValue::U64(v)) => Some(v.to_vec()),
        Value::Primitive(PrimitiveValue::U8(b)) => Some(
            b.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
        _ => None,
    }
}

/// Reads the pixel data of `path` and fills each task's frame.
pub fn decode_frames(
    path: &Path,
    transfer_syntax: &str,
    fmt: SampleFormat,
    number_of_frames: u32,
    tasks: &mut [FrameTask<'_>],
) -> Result<(), FileError> {
    let frame_bytes = fmt.frame_bytes();
    if let Some((bytes, start)) = native_tail(path, transfer_syntax, frame_bytes * number_of_frames as usize) {
        for t in tasks.iter_mut() {
            let at = start + t.frame as usize * frame_bytes;
            convert(&bytes[at..at + frame_bytes], fmt, t.slope, t.intercept, t.scale, t.out);
        }
        return Ok(());
    }
    // The file may have changed since its header was read: walk it again
    // before the parser allocates for what it declares.
    super::structure::check(path, path)?;
    let (mut obj, _) = super::part10::open(OpenFileOptions::new(), path).map_err(|e| map_read_error(e, path))?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let pixel = obj.get(tag::PIXEL_DATA).ok_or_else(|| FileError::NoPixelData { path: path.to_path_buf() })?;
    let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| FileError::UnsupportedTransferSyntax {
        path: path.to_path_buf(),
        uid: ts_uid.clone(),
        name: "unknown".into(),
    })?;
    // Frames over several fragments: one fragment per frame for the codecs,
    // which then need no offset table.
    let regrouped = match pixel.value() {
        Value::PixelSequence(seq) => {
            let fragments = seq.fragments();
            let extended = extended_offset_table(&obj);
            let frames = number_of_frames as usize;
            let ranges = super::encapsulated::frame_ranges(fragments, seq.offset_table(), extended.as_deref(), frames)
                .map_err(|reason| FileError::FrameCount { path: path.to_path_buf(), reason })?;
            (frames > 1 && ranges.iter().any(|r| r.len() != 1))
                .then(|| (pixel.vr(), ranges.iter().map(|r| fragments[r.clone()].concat()).collect::<Vec<_>>()))
        }
        _ => None,
    };
    if let Some((vr, joined)) = regrouped {
        let one_per_frame = PixelFragmentSequence::new(Vec::<u32>::new(), joined);
        obj.put(DataElement::new(tag::PIXEL_DATA, vr, Value::PixelSequence(one_per_frame)));
    }
    let pixel = obj.get(tag::PIXEL_DATA).ok_or_else(|| FileError::NoPixelData { path: path.to_path_buf() })?;
    match pixel.value() {
        Value::Primitive(p) if !ts.is_encapsulated_pixel_data() => {
            let bytes = if ts_uid == EXPLICIT_VR_BIG_ENDIAN {
                std::borrow::Cow::Owned(big_endian_to_little(p, fmt.bits_allocated))
            } else {
                p.to_bytes()
            };
            let need = frame_bytes * number_of_frames as usize;
            // One padding byte to an even length is allowed; a whole extra frame is not.
            if bytes.len() < need || bytes.len() >= need + frame_bytes.max(2) {
                return Err(FileError::FrameCount {
                    path: path.to_path_buf(),
                    reason: format!(
                        "pixel data holds {} bytes, but {} frame(s) of {}×{} at {} bits need {}",
                        bytes.len(),
                        number_of_frames,
                        fmt.rows,
                        fmt.columns,
                        fmt.bits_allocated,
                        need
                    ),
                });
            }
            for t in tasks.iter_mut() {
                let start = t.frame as usize * frame_bytes;
                convert(&bytes[start..start + frame_bytes], fmt, t.slope, t.intercept, t.scale, t.out);
            }
            Ok(())
        }
        Value::PixelSequence(seq) => {
            let twelve_bit = ts_uid == JPEG_EXTENDED;
            for t in tasks.iter_mut() {
                // 12-bit JPEG Extended: jpeg-decoder refuses it, our own decoder reads it.
                if twelve_bit
                    && let Some(bytes) = frame_codestream(seq.fragments(), number_of_frames, t.frame)
                    && super::jpeg12::precision(&bytes) == Some(12)
                {
                    let decode_error = |reason: String| FileError::PixelDecode {
                        path: path.to_path_buf(),
                        reason: format!("frame {}: 12-bit JPEG: {reason}", t.frame + 1),
                    };
                    if fmt.bits_allocated != 16 {
                        return Err(decode_error(format!("BitsAllocated {} (16 expected)", fmt.bits_allocated)));
                    }
                    let (columns, rows) = (fmt.columns as usize, fmt.rows as usize);
                    // Our decoder reads untrusted bytes too: a panic would be this file's error.
                    let image = std::panic::catch_unwind(|| super::jpeg12::decode(&bytes, columns, rows))
                        .map_err(|_| decode_error("the decoder failed on malformed data".into()))?
                        .map_err(decode_error)?;
                    let le: Vec<u8> = image.samples.iter().flat_map(|v| v.to_le_bytes()).collect();
                    convert(&le, fmt, t.slope, t.intercept, t.scale, t.out);
                    continue;
                }
                // The codecs are third-party code reading untrusted bytes; one
                // has been seen to panic on a malformed RLE segment (index out
                // of bounds, found by the series fuzzer). A panic there is this
                // file's decode error, not the process's end.
                let decoded =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data_frame(t.frame)))
                        .map_err(|_| FileError::PixelDecode {
                            path: path.to_path_buf(),
                            reason: format!("frame {}: the {} codec failed on malformed data", t.frame + 1, ts.name()),
                        })?
                        .map_err(|e| FileError::PixelDecode {
                            path: path.to_path_buf(),
                            reason: format!("frame {}: {}", t.frame + 1, error_chain(&e)),
                        })?;
                let data = decoded.data();
                if data.len() < frame_bytes {
                    return Err(FileError::PixelDecode {
                        path: path.to_path_buf(),
                        reason: format!(
                            "frame {} decoded to {} bytes, {} expected",
                            t.frame + 1,
                            data.len(),
                            frame_bytes
                        ),
                    });
                }
                convert(&data[..frame_bytes], fmt, t.slope, t.intercept, t.scale, t.out);
            }
            Ok(())
        }
        _ => Err(FileError::PixelDecode {
            path: path.to_path_buf(),
            reason: format!("pixel data is not stored as the transfer syntax {ts_uid} requires"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(bits_allocated: u16, bits_stored: u16, signed: bool) -> SampleFormat {
        SampleFormat { rows: 1, columns: 2, bits_allocated, bits_stored, signed }
    }

    #[test]
    fn twelve_bit_signed_is_sign_extended() {
        // 0x0FFF in 12 bits is -1; the high nibble is garbage to be ignored.
        let bytes = [0xFF, 0xFF, 0x01, 0x00];
        let mut out = [0f32; 2];
        convert(&bytes, fmt(16, 12, true), 1.0, 0.0, 1.0, &mut out);
        assert_eq!(out, [-1.0, 1.0]);
    }

    #[test]
    fn unsigned_with_rescale_and_scale() {
        let bytes = 1024u16.to_le_bytes().into_iter().chain(0u16.to_le_bytes()).collect::<Vec<_>>();
        let mut out = [0f32; 2];
        convert(&bytes, fmt(16, 16, false), 1.0, -1024.0, 1.0, &mut out);
        assert_eq!(out, [0.0, -1024.0]);
        convert(&bytes, fmt(16, 16, false), 0.5, 0.0, 2.0, &mut out);
        assert_eq!(out, [1024.0, 0.0]);
    }

    #[test]
    fn integer_fast_paths_equal_the_general_path() {
        let raw: Vec<u8> = (0..4096u32).flat_map(|i| (i.wrapping_mul(2654435761) as u16).to_le_bytes()).collect();
        for signed in [false, true] {
            for intercept in [0.0, -1024.0, 3.0] {
                let mut fast = vec![0f32; 4096];
                let mut general = vec![0f32; 4096];
                let f = SampleFormat { rows: 64, columns: 64, bits_allocated: 16, bits_stored: 16, signed };
                convert(&raw, f, 1.0, intercept, 1.0, &mut fast);
                // scale 2 × slope 0.5 takes the f64 path and must agree exactly.
                convert(&raw, f, 0.5, intercept / 2.0, 2.0, &mut general);
                assert_eq!(fast, general, "signed {signed} intercept {intercept}");
            }
        }
    }

    #[test]
    fn big_endian_samples_become_little_endian() {
        // OW as the parser gives it: 16-bit words in host order.
        let words = PrimitiveValue::U16([0x0102u16, 0xFFFE].as_slice().into());
        assert_eq!(big_endian_to_little(&words, 16), [0x02, 0x01, 0xFE, 0xFF]);
        // OB: the file's bytes; 8-bit samples stay as they are.
        let bytes = PrimitiveValue::U8([1u8, 2, 3, 4].as_slice().into());
        assert_eq!(big_endian_to_little(&bytes, 8), [1, 2, 3, 4]);
        // 32-bit samples in OW: the file's four bytes, most significant first.
        let words = PrimitiveValue::U16([0x0001u16, 0x0203].as_slice().into());
        assert_eq!(big_endian_to_little(&words, 32), 0x0001_0203u32.to_le_bytes());
    }

    #[test]
    fn eight_and_thirty_two_bit() {
        let mut out = [0f32; 2];
        convert(&[200, 3], fmt(8, 8, false), 1.0, 0.0, 1.0, &mut out);
        assert_eq!(out, [200.0, 3.0]);
        convert(&[200, 3], fmt(8, 8, true), 1.0, 0.0, 1.0, &mut out);
        assert_eq!(out, [-56.0, 3.0]);
        let b: Vec<u8> = (-5i32).to_le_bytes().into_iter().chain(7i32.to_le_bytes()).collect();
        convert(&b, fmt(32, 32, true), 1.0, 0.0, 1.0, &mut out);
        assert_eq!(out, [-5.0, 7.0]);
    }
}
