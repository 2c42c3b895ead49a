//! Encapsulated pixel data: which fragments make up each frame.
//!
//! A frame of encapsulated pixel data may span several fragments (PS3.5
//! A.4). dicom-pixeldata's codecs find a frame's fragments through the Basic
//! Offset Table; when that table is empty and there are more fragments than
//! frames, they cannot. This module finds the boundaries the way dcmtk and
//! pydicom do, in this order:
//!
//! 1. one frame: every fragment;
//! 2. as many fragments as frames: one fragment per frame;
//! 3. the Extended Offset Table (7FE0,0001), when present (PS3.3 allows it
//!    only with one fragment per frame, case 2; a frame split all the same is
//!    read from its offset to the next);
//! 4. the Basic Offset Table, when it has one offset per frame;
//! 5. the codestream markers: a frame ends with the fragment whose data
//!    (without trailing 0x00 padding) ends in the end-of-image marker FFD9
//!    (JPEG, JPEG-LS, and JPEG 2000's end-of-codestream, the same code), and
//!    the next frame's first fragment begins with a start-of-image marker
//!    (FFD8, or JPEG 2000's FF4F). Where the end markers do not give the
//!    frame count, fragments beginning with a start marker open the frames.
//!
//! Anything else is a frame count error naming the numbers.

use std::ops::Range;

/// Offsets of each frame's first fragment, in bytes from the first
/// fragment's item tag (the Basic or the Extended Offset Table).
#[derive(Debug, Clone, Copy)]
pub enum OffsetTable<'a> {
    /// The Basic Offset Table (empty for none).
    Basic(&'a [u32]),
    /// The Extended Offset Table.
    Extended(&'a [u64]),
}

/// The fragment ranges of each of `frames` frames.
pub fn frame_ranges<F: AsRef<[u8]>>(
    fragments: &[F],
    basic: &[u32],
    extended: Option<&[u64]>,
    frames: usize,
) -> Result<Vec<Range<usize>>, String> {
    let n = fragments.len();
    if frames == 0 || n == 0 {
        return Err(format!("{frames} frame(s) in {n} encapsulated fragment(s)"));
    }
    if frames == 1 {
        return Ok(std::iter::once(0..n).collect());
    }
    if n == frames {
        return Ok((0..n).map(|i| i..i + 1).collect());
    }
    if n < frames {
        return Err(format!("NumberOfFrames {frames} but only {n} encapsulated fragment(s)"));
    }
    if let Some(eot) = extended.filter(|t| !t.is_empty()) {
        return by_offsets(fragments, OffsetTable::Extended(eot), frames)
            .map_err(|e| format!("Extended Offset Table: {e}"));
    }
    if !basic.is_empty() {
        return by_offsets(fragments, OffsetTable::Basic(basic), frames)
            .map_err(|e| format!("Basic Offset Table: {e}"));
    }
    if let Some(r) = by_end_markers(fragments, frames) {
        return Ok(r);
    }
    if let Some(r) = by_start_markers(fragments, frames) {
        return Ok(r);
    }
    Err(format!(
        "NumberOfFrames {frames} in {n} fragments, with an empty Basic Offset Table and no Extended Offset Table, \
         and the codestream markers do not divide the fragments into {frames} frames"
    ))
}

/// Frames from an offset table: each offset must be where a fragment starts.
fn by_offsets<F: AsRef<[u8]>>(
    fragments: &[F],
    table: OffsetTable<'_>,
    frames: usize,
) -> Result<Vec<Range<usize>>, String> {
    let offsets: Vec<u64> = match table {
        OffsetTable::Basic(t) => t.iter().map(|&o| u64::from(o)).collect(),
        OffsetTable::Extended(t) => t.to_vec(),
    };
    if offsets.len() != frames {
        return Err(format!("{} offset(s) for {frames} frames", offsets.len()));
    }
    // Where each fragment's item tag is, from the first one's.
    let mut starts = Vec::with_capacity(fragments.len());
    let mut at = 0u64;
    for f in fragments {
        starts.push(at);
        at = at.saturating_add(8 + f.as_ref().len() as u64);
    }
    let mut first = Vec::with_capacity(frames);
    for (k, &o) in offsets.iter().enumerate() {
        let i = starts
            .binary_search(&o)
            .map_err(|_| format!("frame {} starts at byte {o}, which is not the start of a fragment", k + 1))?;
        if first.last().is_some_and(|&prev| i <= prev) {
            return Err(format!("the offset of frame {} ({o}) does not follow the one before it", k + 1));
        }
        first.push(i);
    }
    let mut out = Vec::with_capacity(frames);
    for (k, &i) in first.iter().enumerate() {
        let end = first.get(k + 1).copied().unwrap_or(fragments.len());
        out.push(i..end);
    }
    // Fragments before the first frame's offset would be lost.
    if first[0] != 0 {
        return Err(format!("the first frame starts at fragment {}, not the first one", first[0] + 1));
    }
    Ok(out)
}

/// The fragment without the trailing 0x00 bytes that pad it to an even length.
fn trimmed(f: &[u8]) -> &[u8] {
    let end = f.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &f[..end]
}

fn ends_frame(f: &[u8]) -> bool {
    trimmed(f).ends_with(&[0xFF, 0xD9])
}

fn starts_frame(f: &[u8]) -> bool {
    f.starts_with(&[0xFF, 0xD8]) || f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
}

/// Frames that end at a fragment ending in FFD9, each followed by a fragment
/// that starts a codestream; `None` when that does not give `frames` frames.
fn by_end_markers<F: AsRef<[u8]>>(fragments: &[F], frames: usize) -> Option<Vec<Range<usize>>> {
    let mut out = Vec::with_capacity(frames);
    let mut start = 0;
    for (i, f) in fragments.iter().enumerate() {
        if ends_frame(f.as_ref()) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start != fragments.len() || out.len() != frames {
        return None;
    }
    out.iter().all(|r| starts_frame(fragments[r.start].as_ref())).then_some(out)
}

/// Frames that begin at a fragment starting with a start-of-image marker.
fn by_start_markers<F: AsRef<[u8]>>(fragments: &[F], frames: usize) -> Option<Vec<Range<usize>>> {
    let firsts: Vec<usize> = (0..fragments.len()).filter(|&i| starts_frame(fragments[i].as_ref())).collect();
    if firsts.len() != frames || firsts.first() != Some(&0) {
        return None;
    }
    Some(firsts.iter().enumerate().map(|(k, &i)| i..firsts.get(k + 1).copied().unwrap_or(fragments.len())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake JPEG codestream of `len` bytes cut into fragments of `cut` bytes,
    /// padded to even lengths as DICOM requires.
    fn frame(len: usize, cut: usize) -> Vec<Vec<u8>> {
        let mut cs = vec![0x5Au8; len];
        cs[0..2].copy_from_slice(&[0xFF, 0xD8]);
        cs[len - 2..].copy_from_slice(&[0xFF, 0xD9]);
        cs.chunks(cut)
            .map(|c| {
                let mut v = c.to_vec();
                if v.len() % 2 == 1 {
                    v.push(0);
                }
                v
            })
            .collect()
    }

    #[test]
    fn one_fragment_per_frame_and_one_frame() {
        let f: Vec<Vec<u8>> = frame(10, 4).into_iter().chain(frame(10, 4)).collect();
        assert_eq!(frame_ranges(&f, &[], None, 1).expect("one frame"), vec![0..6]);
        let g = [vec![0xFFu8, 0xD8, 0xFF, 0xD9], vec![0xFF, 0xD8, 0xFF, 0xD9]];
        assert_eq!(frame_ranges(&g, &[], None, 2).expect("1:1"), vec![0..1, 1..2]);
    }

    #[test]
    fn end_markers_split_fragments_with_padding() {
        // 11 bytes: the last fragment of each frame holds 3 bytes + one 0x00 pad.
        let f: Vec<Vec<u8>> = frame(11, 4).into_iter().chain(frame(10, 4)).chain(frame(7, 4)).collect();
        assert_eq!(f.len(), 3 + 3 + 2);
        assert_eq!(frame_ranges(&f, &[], None, 3).expect("split"), vec![0..3, 3..6, 6..8]);
    }

    #[test]
    fn start_markers_when_a_frame_lacks_its_end_marker() {
        let mut f: Vec<Vec<u8>> = frame(12, 4).into_iter().chain(frame(12, 4)).collect();
        // The first frame's end marker lost: the end markers give one frame.
        f[2] = vec![1, 2, 3, 4];
        assert_eq!(frame_ranges(&f, &[], None, 2).expect("split"), vec![0..3, 3..6]);
    }

    #[test]
    fn basic_and_extended_offset_tables() {
        let f: Vec<Vec<u8>> = frame(12, 4).into_iter().chain(frame(8, 4)).collect();
        // Each fragment is 4 bytes + an 8-byte item header: frame 2 at 3 × 12.
        assert_eq!(frame_ranges(&f, &[0, 36], None, 2).expect("bot"), vec![0..3, 3..5]);
        assert_eq!(frame_ranges(&f, &[], Some(&[0, 36]), 2).expect("eot"), vec![0..3, 3..5]);
        let e = frame_ranges(&f, &[0, 30], None, 2).expect_err("not a fragment start");
        assert!(e.contains("frame 2 starts at byte 30"), "{e}");
        let e = frame_ranges(&f, &[0], None, 2).expect_err("too few offsets");
        assert!(e.contains("1 offset(s) for 2 frames"), "{e}");
    }

    #[test]
    fn fragments_without_markers_are_a_clear_error() {
        let f = vec![vec![2u8, 0, 0, 0]; 5];
        let e = frame_ranges(&f, &[], None, 2).expect_err("rle-like");
        assert!(e.contains("NumberOfFrames 2 in 5 fragments"), "{e}");
        let e = frame_ranges(&f, &[], None, 6).expect_err("too few");
        assert!(e.contains("only 5"), "{e}");
    }
}
