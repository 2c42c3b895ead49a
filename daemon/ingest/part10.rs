//! Opening Part-10 files whose File Meta Information lacks its group length.
//!
//! PS3.10 requires (0002,0000) File Meta Information Group Length as the first
//! meta element, and dicom-object refuses a file without it. Real files omit it
//! (the IBSI SUV reference objects do): dcmtk reads them with a warning,
//! pydicom and GDCM silently. This module reads them too: it measures the meta
//! group (explicit VR little endian elements of group 0002, up to the first
//! element of another group) and hands dicom-object the file with the missing
//! element put back in front, streaming the rest of the file unchanged.

use std::fs::File;
use std::io::{BufReader, Chain, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions, ReadError};

/// Largest meta group measured (real ones are a few hundred bytes).
const MAX_META_GROUP: u64 = 1 << 20;

/// VRs whose explicit little endian header has a 4-byte length after 2 reserved bytes.
fn long_length(vr: [u8; 2]) -> bool {
    matches!(&vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV")
}

/// The byte length of the meta group of `f` when its first meta element is
/// not (0002,0000) but belongs to group 0002; `None` when the group length is
/// there (or the file is not Part-10: left to the parser to report).
pub fn missing_group_length(f: &mut (impl Read + Seek)) -> std::io::Result<Option<u32>> {
    let mut head = [0u8; 132];
    f.seek(SeekFrom::Start(0))?;
    if f.read_exact(&mut head).is_err() || &head[128..132] != b"DICM" {
        return Ok(None);
    }
    let mut len = 0u64;
    loop {
        let mut h = [0u8; 8];
        if f.read_exact(&mut h).is_err() {
            break;
        }
        let group = u16::from_le_bytes([h[0], h[1]]);
        let element = u16::from_le_bytes([h[2], h[3]]);
        if group != 0x0002 {
            break;
        }
        if len == 0 && element == 0x0000 {
            return Ok(None);
        }
        let (value, header) = if long_length([h[4], h[5]]) {
            let mut l = [0u8; 4];
            if f.read_exact(&mut l).is_err() {
                break;
            }
            (u64::from(u32::from_le_bytes(l)), 12)
        } else {
            (u64::from(u16::from_le_bytes([h[6], h[7]])), 8)
        };
        if value == u64::from(u32::MAX) {
            // Undefined length in the meta group: not a file we can repair.
            return Ok(None);
        }
        len += header + value;
        if len > MAX_META_GROUP {
            return Ok(None);
        }
        f.seek(SeekFrom::Current(value as i64))?;
    }
    Ok((len > 0).then_some(len as u32))
}

/// The file from the "DICM" magic on, with (0002,0000) = `group_length` put in
/// front of the meta elements.
type Repaired = Chain<Cursor<Vec<u8>>, BufReader<File>>;

fn repaired(mut file: File, group_length: u32) -> std::io::Result<Repaired> {
    let mut head = b"DICM".to_vec();
    head.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    head.extend_from_slice(&group_length.to_le_bytes());
    file.seek(SeekFrom::Start(132))?;
    Ok(Cursor::new(head).chain(BufReader::new(file)))
}

/// Opens `path` with `options`, like `options.open_file(path)`, but also reads a
/// file whose meta group lacks (0002,0000). The flag says whether it did.
pub fn open(options: OpenFileOptions, path: &Path) -> Result<(DefaultDicomObject, bool), ReadError> {
    let group_length = File::open(path).and_then(|mut f| missing_group_length(&mut BufReader::new(&mut f)));
    match group_length {
        Ok(Some(len)) => {
            // Errors opening it again are reported as open_file would report them.
            let reader = match File::open(path).and_then(|f| repaired(f, len)) {
                Ok(r) => r,
                Err(_) => return options.open_file(path).map(|o| (o, false)),
            };
            options.read_preamble(ReadPreamble::Never).from_reader(reader).map(|o| (o, true))
        }
        _ => options.open_file(path).map(|o| (o, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if long_length(*vr) {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    /// A small Part-10 file: meta group with or without (0002,0000), then
    /// Modality and PatientName in explicit VR little endian.
    fn file(with_group_length: bool) -> Vec<u8> {
        let mut meta = element((0x0002, 0x0001), b"OB", &[0, 1]);
        meta.extend(element((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0"));
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        if with_group_length {
            f.extend(element((0x0002, 0x0000), b"UL", &(meta.len() as u32).to_le_bytes()));
        }
        f.extend(meta);
        f.extend(element((0x0008, 0x0060), b"CS", b"PT"));
        f.extend(element((0x0010, 0x0010), b"PN", b"DRO^PHANTOM "));
        f
    }

    #[test]
    fn reads_a_meta_group_without_its_length() {
        let d = tempfile::tempdir().expect("tempdir");
        for with in [true, false] {
            let p = d.path().join(format!("f{with}.dcm"));
            std::fs::write(&p, file(with)).expect("write");
            assert!(
                OpenFileOptions::new().open_file(&p).is_ok() == with,
                "dicom-object alone refuses only the bare one"
            );
            let (obj, repaired) = open(OpenFileOptions::new(), &p).expect("opens");
            assert_eq!(repaired, !with);
            assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
            let modality = obj.element(dicom_core::Tag(0x0008, 0x0060)).expect("modality").to_str().expect("text");
            assert_eq!(modality.trim(), "PT");
        }
    }

    #[test]
    fn measures_only_group_two() {
        let bytes = file(false);
        let len = missing_group_length(&mut Cursor::new(&bytes)).expect("io").expect("missing");
        // (0002,0001) OB: 12 + 2; (0002,0010) UI: 8 + 20.
        assert_eq!(len, 14 + 28);
        assert_eq!(missing_group_length(&mut Cursor::new(file(true))).expect("io"), None);
        assert_eq!(missing_group_length(&mut Cursor::new(vec![0u8; 40])).expect("io"), None, "not Part-10");
    }
}
