//! A structural pass over a Part-10 file before any parser allocates for it.
//!
//! dicom-object reads every element value into memory as the element declares
//! it, and builds nested sequences by recursion. A file can therefore make it
//! allocate (and zero) a declared 4 GiB value, inflate a deflated data set
//! without bound, or nest sequences deep enough to overflow the stack. This
//! pass walks the element headers only (values are skipped by seeking) and
//! refuses, with the element and the numbers, a file where
//!
//! - a value length runs past the end of the file or of its enclosing item;
//! - sequences nest deeper than [`MAX_SEQUENCE_DEPTH`];
//! - a deflated data set inflates to more than [`MAX_INFLATED_BYTES`].
//!
//! Anything else (a file ending early, an unknown VR) is left to the parser,
//! whose messages for those are clear. Memory: a fixed buffer and one stack
//! entry per open sequence level (bounded by the depth limit).

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::error::FileError;

/// Deepest sequence nesting accepted (real objects stay below ten).
pub const MAX_SEQUENCE_DEPTH: usize = 32;
/// Largest inflated data set of a deflated file.
pub const MAX_INFLATED_BYTES: u64 = 512 << 20;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// Where the bytes come from: the file (values skipped by seeking) or its
/// inflated data set (values skipped by reading).
enum Source {
    File(BufReader<File>),
    Inflate(Box<flate2::read::DeflateDecoder<BufReader<File>>>),
}

struct Walker {
    src: Source,
    /// Bytes consumed from the data set (file offset for `Source::File`).
    pos: u64,
    /// Where the data set ends: the file length, or the inflation limit.
    end: u64,
    explicit: bool,
    big_endian: bool,
}

/// An open container: a sequence (its items hold data sets), an item, or the
/// encapsulated pixel data (its items hold raw fragments).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sequence,
    Item,
    Fragments,
}

#[derive(Clone, Copy)]
struct Open {
    kind: Kind,
    /// End offset for a defined length, None for an undefined one.
    end: Option<u64>,
    /// Explicit VR inside (a UN of undefined length holds implicit VR items).
    explicit: bool,
}

/// A refusal: what the file declares and the limit it breaks.
type Refusal = String;

impl Walker {
    /// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean or early end
    /// (left to the parser to report).
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let r = match &mut self.src {
            Source::File(f) => f.read_exact(buf),
            Source::Inflate(d) => d.read_exact(buf),
        };
        match r {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn skip(&mut self, n: u64) -> std::io::Result<bool> {
        match &mut self.src {
            Source::File(f) => {
                let n = i64::try_from(n).map_err(|_| std::io::Error::other("length out of range"))?;
                f.seek_relative(n)?;
            }
            Source::Inflate(d) => {
                let copied = std::io::copy(&mut d.by_ref().take(n), &mut std::io::sink())?;
                if copied < n {
                    self.pos += copied;
                    return Ok(false);
                }
            }
        }
        self.pos += n;
        Ok(true)
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    }

    /// Walks the data set. `Ok(Err(refusal))` when the file breaks a limit.
    fn walk(&mut self) -> std::io::Result<Result<(), Refusal>> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            // Close defined-length containers that end here.
            while let Some(top) = stack.last() {
                match top.end {
                    Some(e) if self.pos >= e => {
                        stack.pop();
                    }
                    _ => break,
                }
            }
            let limit = stack.iter().rev().find_map(|o| o.end).unwrap_or(self.end);
            let mut head = [0u8; 8];
            if !self.read(&mut head[..4])? {
                return Ok(Ok(()));
            }
            let tag = Tag(self.u16([head[0], head[1]]), self.u16([head[2], head[3]]));
            let in_fragments = stack.last().is_some_and(|o| o.kind == Kind::Fragments);
            let explicit = stack.last().map_or(self.explicit, |o| o.explicit);
            if tag.group() == 0xFFFE {
                if !self.read(&mut head[4..8])? {
                    return Ok(Ok(()));
                }
                let len = self.u32([head[4], head[5], head[6], head[7]]);
                match tag {
                    ITEM if in_fragments => {
                        if !self.fits(len, limit) {
                            return Ok(Err(self.too_long(tag, len, limit)));
                        }
                        if !self.skip(u64::from(len))? {
                            return Ok(Ok(()));
                        }
                    }
                    ITEM => {
                        let end = match self.container_end(tag, len, limit) {
                            Ok(end) => end,
                            Err(refusal) => return Ok(Err(refusal)),
                        };
                        stack.push(Open { kind: Kind::Item, end, explicit });
                    }
                    ITEM_END => {
                        if let Some(i) = stack.iter().rposition(|o| o.kind == Kind::Item) {
                            stack.truncate(i);
                        }
                    }
                    SEQUENCE_END => {
                        if let Some(i) = stack.iter().rposition(|o| o.kind != Kind::Item) {
                            stack.truncate(i);
                        }
                    }
                    _ => {
                        if len != UNDEFINED && !self.skip(u64::from(len))? {
                            return Ok(Ok(()));
                        }
                    }
                }
                continue;
            }
            // A data element: VR (explicit) and length.
            let (vr, len) = if explicit {
                if !self.read(&mut head[4..6])? {
                    return Ok(Ok(()));
                }
                // As dicom-encoding reads it: an unknown VR code is UN, and
                // only the VRs of PS3.5 Table 7.1-2 have a 2-byte length.
                let vr = VR::from_binary([head[4], head[5]]).unwrap_or(VR::UN);
                let long = !short_length(vr);
                if long {
                    let mut l = [0u8; 6];
                    if !self.read(&mut l)? {
                        return Ok(Ok(()));
                    }
                    (Some(vr), self.u32([l[2], l[3], l[4], l[5]]))
                } else {
                    let mut l = [0u8; 2];
                    if !self.read(&mut l)? {
                        return Ok(Ok(()));
                    }
                    (Some(vr), u32::from(self.u16(l)))
                }
            } else {
                if !self.read(&mut head[4..8])? {
                    return Ok(Ok(()));
                }
                let vr = match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
                    Some(VirtualVr::Exact(vr)) => Some(vr),
                    _ => None,
                };
                (vr, self.u32([head[4], head[5], head[6], head[7]]))
            };
            let opens = if len == UNDEFINED {
                // Undefined length: a sequence (SQ, or UN holding one), or the
                // encapsulated pixel data.
                Some(if tag == PIXEL_DATA && vr != Some(VR::SQ) { Kind::Fragments } else { Kind::Sequence })
            } else if vr == Some(VR::SQ) {
                Some(Kind::Sequence)
            } else {
                None
            };
            if let Some(kind) = opens {
                let depth = stack.iter().filter(|o| o.kind == Kind::Sequence).count() + 1;
                if depth > MAX_SEQUENCE_DEPTH {
                    return Ok(Err(format!(
                        "sequences nest deeper than {MAX_SEQUENCE_DEPTH} levels (at {tag} byte {})",
                        self.pos
                    )));
                }
                let end = match self.container_end(tag, len, limit) {
                    Ok(end) => end,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                // UN of undefined length: its items are implicit VR little endian.
                let inner = explicit && vr != Some(VR::UN);
                stack.push(Open { kind, end, explicit: inner });
                continue;
            }
            if !self.fits(len, limit) {
                return Ok(Err(self.too_long(tag, len, limit)));
            }
            // dicom-parser reads whole values of a binary VR (len / size of
            // them) but counts `len` bytes as read: a length that is not a
            // multiple of the value size puts it out of step with the file,
            // after which it reads lengths from the middle of values.
            if let Some(vr) = vr
                && u64::from(len) % value_size(vr) != 0
            {
                return Ok(Err(format!(
                    "element {tag} of VR {vr:?} has length {len}, not a multiple of {} (at byte {})",
                    value_size(vr),
                    self.pos
                )));
            }
            if !self.skip(u64::from(len))? {
                return Ok(Ok(()));
            }
        }
    }

    /// Whether `len` bytes fit before `limit`.
    fn fits(&self, len: u32, limit: u64) -> bool {
        u64::from(len) <= limit.saturating_sub(self.pos)
    }

    /// Where a sequence or item that starts here ends: None for undefined
    /// length, a refusal when its declared length passes `limit`.
    fn container_end(&self, tag: Tag, len: u32, limit: u64) -> Result<Option<u64>, Refusal> {
        if len == UNDEFINED {
            return Ok(None);
        }
        if u64::from(len) > limit.saturating_sub(self.pos) {
            return Err(self.too_long(tag, len, limit));
        }
        Ok(Some(self.pos + u64::from(len)))
    }

    fn too_long(&self, tag: Tag, len: u32, limit: u64) -> Refusal {
        match self.src {
            Source::Inflate(_) if limit == self.end => format!(
                "element {tag} declares {len} bytes; the inflated data set may not exceed {MAX_INFLATED_BYTES} bytes"
            ),
            _ => format!(
                "element {tag} declares {len} bytes, but only {} remain {} (at byte {}): truncated or corrupt",
                limit.saturating_sub(self.pos),
                if limit == self.end { "in the file" } else { "in its item" },
                self.pos
            ),
        }
    }
}

/// Whether an explicit VR has the 2-byte length field (PS3.5 Table 7.1-2);
/// every other VR, unknown codes read as UN included, has reserved bytes and a
/// 4-byte length (dicom-encoding's explicit VR decoders do the same).
fn short_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::AT
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::FL
            | VR::FD
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::SL
            | VR::SS
            | VR::ST
            | VR::TM
            | VR::UI
            | VR::UL
            | VR::US
    )
}

/// Bytes per value of a binary VR (1 for the others).
fn value_size(vr: VR) -> u64 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OF | VR::AT | VR::OL => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// The transfer syntax UID and the data set's start, read from the meta group
/// the way dicom-object reads it: (0002,0000) first, then elements of any
/// group until its group length is consumed (explicit VR little endian),
/// every length checked against the file. A meta group without (0002,0000)
/// (read by `part10::open`) ends at the first element of another group.
fn meta(f: &mut BufReader<File>, file_len: u64) -> Result<Option<(String, u64)>, String> {
    let mut pos = 132u64;
    if f.seek(std::io::SeekFrom::Start(pos)).is_err() {
        return Ok(None);
    }
    let mut group_length: Option<u64> = None;
    let mut consumed = 0u64;
    let mut ts = None;
    let mut no_group_length = false;
    loop {
        if group_length.is_some_and(|g| consumed >= g) {
            break;
        }
        let mut h = [0u8; 8];
        if f.read_exact(&mut h[..6]).is_err() {
            return Ok(None);
        }
        let group = u16::from_le_bytes([h[0], h[1]]);
        let element = u16::from_le_bytes([h[2], h[3]]);
        if group_length.is_none() && group == 0x0002 && element != 0x0000 {
            no_group_length = true;
            group_length = Some(u64::MAX);
        }
        if no_group_length && group != 0x0002 {
            if f.seek_relative(-6).is_err() {
                return Ok(None);
            }
            break;
        }
        let long = !short_length(VR::from_binary([h[4], h[5]]).unwrap_or(VR::UN));
        let (len, head) = if long {
            let mut l = [0u8; 6];
            if f.read_exact(&mut l).is_err() {
                return Ok(None);
            }
            (u64::from(u32::from_le_bytes([l[2], l[3], l[4], l[5]])), 12)
        } else {
            if f.read_exact(&mut h[6..8]).is_err() {
                return Ok(None);
            }
            (u64::from(u16::from_le_bytes([h[6], h[7]])), 8)
        };
        pos += head;
        if len > file_len.saturating_sub(pos) {
            return Err(format!(
                "meta element ({group:04X},{element:04X}) declares {len} bytes, but only {} remain in the file: \
                 truncated or corrupt",
                file_len.saturating_sub(pos)
            ));
        }
        match (group_length, group, element) {
            (None, 0x0002, 0x0000) if len == 4 => {
                let mut v = [0u8; 4];
                if f.read_exact(&mut v).is_err() {
                    return Ok(None);
                }
                group_length = Some(u64::from(u32::from_le_bytes(v)));
            }
            // dicom-object refuses a meta group without its length first.
            (None, _, _) => return Ok(None),
            (Some(_), 0x0002, 0x0010) if len <= 256 => {
                let mut v = vec![0u8; len as usize];
                if f.read_exact(&mut v).is_err() {
                    return Ok(None);
                }
                ts = Some(String::from_utf8_lossy(&v).trim_end_matches(['\0', ' ']).to_string());
                consumed += head + len;
            }
            (Some(_), _, _) => {
                if f.seek_relative(len as i64).is_err() {
                    return Ok(None);
                }
                consumed += head + len;
            }
        }
        pos += len;
    }
    Ok(ts.map(|t| (t, pos)))
}

/// Walks `open` (reported as `report`) and refuses it when a declared size or
/// nesting breaks a limit. Files this pass cannot follow are passed on to the
/// parser unchanged.
pub fn check(open: &Path, report: &Path) -> Result<(), FileError> {
    let io = |source| FileError::Io { path: report.to_path_buf(), source };
    let refuse = |reason: String| FileError::Structure { path: report.to_path_buf(), reason };
    let file = File::open(open).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut f = BufReader::with_capacity(8192, file);
    let Some((ts, start)) = meta(&mut f, file_len).map_err(refuse)? else { return Ok(()) };
    if f.seek(std::io::SeekFrom::Start(start)).is_err() {
        return Ok(());
    }
    let (explicit, big_endian, deflated) = match ts.as_str() {
        "1.2.840.10008.1.2" => (false, false, false),
        "1.2.840.10008.1.2.2" => (true, true, false),
        "1.2.840.10008.1.2.1.99" => (true, false, true),
        _ => (true, false, false),
    };
    let mut w = if deflated {
        Walker {
            src: Source::Inflate(Box::new(flate2::read::DeflateDecoder::new(f))),
            pos: 0,
            end: MAX_INFLATED_BYTES,
            explicit,
            big_endian,
        }
    } else {
        Walker { src: Source::File(f), pos: start, end: file_len, explicit, big_endian }
    };
    match w.walk() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(refuse(reason)),
        // A read error inside the walk (corrupt deflate stream ...): the parser
        // reports it in its own words.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    fn part10(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let ts_el = explicit((0x0002, 0x0010), b"UI", &uid);
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(explicit((0x0002, 0x0000), b"UL", &(ts_el.len() as u32).to_le_bytes()));
        f.extend(ts_el);
        f.extend_from_slice(body);
        f
    }

    fn run(bytes: &[u8]) -> Result<(), FileError> {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f.dcm");
        std::fs::write(&p, bytes).expect("write");
        check(&p, &p)
    }

    #[test]
    fn a_plain_data_set_passes() {
        let mut body = explicit((0x0008, 0x0060), b"CS", b"CT");
        body.extend(explicit((0x7FE0, 0x0010), b"OW", &[0u8; 32]));
        run(&part10("1.2.840.10008.1.2.1", &body)).expect("valid file passes");
    }

    #[test]
    fn a_meta_group_without_its_length_is_walked_too() {
        // (0002,0000) removed (12 bytes after the magic): the walk still finds
        // the data set after the meta group and applies its limits.
        let without = |f: Vec<u8>| [&f[..132], &f[144..]].concat();
        let mut body = explicit((0x0008, 0x0060), b"CS", b"PT");
        body.extend(explicit((0x7FE0, 0x0010), b"OW", &[0u8; 32]));
        run(&without(part10("1.2.840.10008.1.2.1", &body))).expect("valid file passes");
        let mut body = explicit((0x0009, 0x1010), b"OB", &[0u8; 8]);
        body[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let e = run(&without(part10("1.2.840.10008.1.2.1", &body))).expect_err("refused");
        assert!(e.to_string().contains("(0009,1010)"), "{e}");
    }

    #[test]
    fn a_value_longer_than_the_file_is_refused() {
        let mut body = explicit((0x0009, 0x1010), b"OB", &[0u8; 8]);
        body[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let e = run(&part10("1.2.840.10008.1.2.1", &body)).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("(0009,1010)") && msg.contains("4294967280"), "{msg}");
    }

    #[test]
    fn an_unknown_vr_has_a_four_byte_length_as_the_parser_reads_it() {
        // Found by the series fuzzer: VR "ZZ" followed by reserved bytes and
        // a 2.4 GB length; read with a 2-byte length the walk saw nothing wrong
        // while dicom-parser reserved 2.4 GB.
        let mut body = vec![0x09, 0x00, 0x10, 0x10, b'Z', b'Z', 0, 0];
        body.extend_from_slice(&2_423_091_060u32.to_le_bytes());
        body.extend_from_slice(&[0u8; 16]);
        let e = run(&part10("1.2.840.10008.1.2.1", &body)).expect_err("refused");
        assert!(e.to_string().contains("2423091060"), "{e}");
    }

    #[test]
    fn a_binary_value_of_a_partial_length_is_refused() {
        // Found by the series fuzzer (a slow unit: dicom-parser, out of step
        // after an AT of length 14, zero-filled a 959 MB "value").
        let mut body = explicit((0x0008, 0x0032), b"AT", &[0u8; 14]);
        body.extend(explicit((0x7FE0, 0x0010), b"OW", &[0u8; 8]));
        let e = run(&part10("1.2.840.10008.1.2.1", &body)).expect_err("refused");
        assert!(e.to_string().contains("not a multiple of 4"), "{e}");
        let mut body = explicit((0x0008, 0x0032), b"AT", &[0u8; 12]);
        body.extend(explicit((0x7FE0, 0x0010), b"OW", &[0u8; 8]));
        run(&part10("1.2.840.10008.1.2.1", &body)).expect("three whole tags pass");
    }

    #[test]
    fn deep_nesting_is_refused_and_shallow_nesting_passes() {
        let open = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[0x09, 0x00, 0x12, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            v.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        };
        let close = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            v.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        };
        for (depth, ok) in [(MAX_SEQUENCE_DEPTH, true), (MAX_SEQUENCE_DEPTH + 1, false)] {
            let mut body = Vec::new();
            for _ in 0..depth {
                open(&mut body);
            }
            for _ in 0..depth {
                close(&mut body);
            }
            body.extend(explicit((0x7FE0, 0x0010), b"OW", &[0u8; 8]));
            let r = run(&part10("1.2.840.10008.1.2.1", &body));
            assert_eq!(r.is_ok(), ok, "depth {depth}: {r:?}");
        }
    }

    #[test]
    fn a_deflate_bomb_is_refused() {
        use std::io::Write;
        // The header declares more than the limit; the walk refuses it
        // before inflating the value (only its first bytes are written here).
        let mut raw = explicit((0x0008, 0x0060), b"CS", b"CT");
        let big = (MAX_INFLATED_BYTES + 1024) as u32;
        raw.extend_from_slice(&[0x09, 0x00, 0x11, 0x10, b'O', b'B', 0, 0]);
        raw.extend_from_slice(&big.to_le_bytes());
        raw.extend_from_slice(&[0u8; 4096]);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&raw).expect("deflate");
        let body = z.finish().expect("deflate");
        let e = run(&part10("1.2.840.10008.1.2.1.99", &body)).expect_err("refused");
        assert!(e.to_string().contains("inflated"), "{e}");
    }
}
