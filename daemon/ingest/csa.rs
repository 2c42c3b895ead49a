//! The Siemens CSA header: a private binary block, (0029,xx10) "CSA Image
//! Header Info" and (0029,xx20) "CSA Series Header Info" under the private
//! creator "SIEMENS CSA HEADER". Ingest reads two of its tags for mosaics
//! (`NumberOfImagesInMosaic`, `SliceNormalVector`).
//!
//! Only the second format ("CSA2", starting with `SV10`, written by every
//! syngo MR since VB) is read, as dcm2niix does. Layout, all little endian:
//!
//! ```text
//! "SV10" 4 unused bytes, n_tags: u32, unused: u32
//! per tag:  name [64 bytes, NUL-terminated], vm: i32, vr [4 bytes],
//!           syngodt: i32, n_items: i32, unused: i32
//! per item: 4 × i32 (the second is the item's length), then the item's bytes
//!           (text, NUL-padded), padded to a multiple of 4
//! ```
//!
//! The block is data from a file: every count and length is checked against
//! the bytes that remain before it is used, counts are capped, and no input
//! panics (the unit tests include random and truncated blocks).

/// Most tags and items per tag accepted (nibabel's limit; real headers hold
/// about 100 tags and at most a few hundred items in one).
pub const MAX_COUNT: u32 = 1000;

/// Why a CSA block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsaError {
    /// Not the `SV10` format.
    #[error("not a CSA2 header (no SV10 signature)")]
    NotCsa2,
    /// The block ends inside a field.
    #[error("truncated at byte {at} (needs {need} more of {len})")]
    Truncated {
        /// Offset where the read started.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Length of the block.
        len: usize,
    },
    /// A count beyond `MAX_COUNT` or negative.
    #[error("{what} count {count} is outside 0..={MAX_COUNT}")]
    Count {
        /// "tag" or "item".
        what: &'static str,
        /// The declared count.
        count: i64,
    },
    /// An item length that is negative.
    #[error("item of {tag} declares a negative length {len}")]
    NegativeLength {
        /// Tag name.
        tag: String,
        /// Declared length.
        len: i32,
    },
}

/// One CSA tag: its name, declared VR and value multiplicity, and its items
/// as text (the values CSA stores, trimmed of NUL padding and spaces).
#[derive(Debug, Clone, PartialEq)]
pub struct CsaTag {
    /// Tag name, e.g. "SliceNormalVector".
    pub name: String,
    /// Value multiplicity as declared (0: as many as there are items).
    pub vm: i32,
    /// Value representation as declared, e.g. "FD".
    pub vr: String,
    /// The values, at most `vm` of them (all items when `vm` is 0).
    pub items: Vec<String>,
}

/// A parsed CSA2 block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CsaHeader {
    /// Tags in file order.
    pub tags: Vec<CsaTag>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CsaError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(CsaError::Truncated {
            at: self.at,
            need: n,
            len: self.bytes.len(),
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self) -> Result<i32, CsaError> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self) -> Result<u32, CsaError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Text up to the first NUL, lossy UTF-8, trimmed.
fn nul_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

fn count(what: &'static str, n: i64) -> Result<usize, CsaError> {
    if (0..=i64::from(MAX_COUNT)).contains(&n) { Ok(n as usize) } else { Err(CsaError::Count { what, count: n }) }
}

impl CsaHeader {
    /// Parses a CSA2 block.
    pub fn parse(bytes: &[u8]) -> Result<CsaHeader, CsaError> {
        if bytes.get(..4) != Some(b"SV10".as_slice()) {
            return Err(CsaError::NotCsa2);
        }
        let mut r = Reader { bytes, at: 8 };
        if bytes.len() < 8 {
            return Err(CsaError::Truncated { at: 4, need: 4, len: bytes.len() });
        }
        let n_tags = count("tag", i64::from(r.u32()?))?;
        let _unused = r.u32()?;
        let mut tags = Vec::with_capacity(n_tags.min(bytes.len() / 84));
        for _ in 0..n_tags {
            let name = nul_text(r.take(64)?);
            let vm = r.i32()?;
            let vr = nul_text(r.take(4)?);
            let _syngodt = r.i32()?;
            let n_items = count("item", i64::from(r.i32()?))?;
            let _unused = r.i32()?;
            let keep = if vm > 0 { (vm as usize).min(n_items) } else { n_items };
            let mut items = Vec::with_capacity(keep.min(bytes.len() / 16));
            for i in 0..n_items {
                let _x0 = r.i32()?;
                let len = r.i32()?;
                let _x2 = r.i32()?;
                let _x3 = r.i32()?;
                let len = usize::try_from(len).map_err(|_| CsaError::NegativeLength { tag: name.clone(), len })?;
                let value = r.take(len)?;
                // Items are padded to a multiple of 4; the last may end the block.
                let pad = (4 - len % 4) % 4;
                r.at = r.at.saturating_add(pad).min(bytes.len());
                if i < keep {
                    items.push(nul_text(value));
                }
            }
            tags.push(CsaTag { name, vm, vr, items });
        }
        Ok(CsaHeader { tags })
    }

    /// The tag of this name.
    pub fn get(&self, name: &str) -> Option<&CsaTag> {
        self.tags.iter().find(|t| t.name == name)
    }

    /// The tag's non-empty items as finite numbers; `None` when the tag is
    /// absent, has no value, or a value is not a number.
    pub fn numbers(&self, name: &str) -> Option<Vec<f64>> {
        let t = self.get(name)?;
        let v: Vec<f64> = t
            .items
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect::<Option<_>>()?;
        (!v.is_empty()).then_some(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes a CSA2 block (the layout nibabel and dcm2niix read) for tests.
    pub(crate) fn write(tags: &[(&str, &str, &[&str])]) -> Vec<u8> {
        let mut b = b"SV10\x04\x03\x02\x01".to_vec();
        b.extend((tags.len() as u32).to_le_bytes());
        b.extend(77u32.to_le_bytes());
        for (name, vr, items) in tags {
            let mut n = [0u8; 64];
            n[..name.len()].copy_from_slice(name.as_bytes());
            b.extend(n);
            b.extend((items.len() as i32).to_le_bytes());
            let mut v = [0u8; 4];
            v[..vr.len()].copy_from_slice(vr.as_bytes());
            b.extend(v);
            b.extend(3i32.to_le_bytes());
            // Siemens writes 6 items whatever the VM; the extra ones are empty.
            let n_items = items.len().max(6);
            b.extend((n_items as i32).to_le_bytes());
            b.extend(77i32.to_le_bytes());
            for i in 0..n_items {
                let text = items.get(i).map(|s| format!("{s}\0")).unwrap_or_default();
                let len = text.len() as i32;
                for x in [len, len, 77, len] {
                    b.extend(x.to_le_bytes());
                }
                b.extend(text.as_bytes());
                b.extend(std::iter::repeat_n(0u8, (4 - text.len() % 4) % 4));
            }
        }
        b
    }

    fn sample() -> Vec<u8> {
        write(&[
            ("EchoLinePosition", "IS", &["32"]),
            ("NumberOfImagesInMosaic", "US", &["35"]),
            ("SliceNormalVector", "FD", &["0.00000000", "0.10799944", "0.99415095"]),
            ("ImaCoilString", "LO", &["T:HEA;HEP"]),
            ("Empty", "DS", &[]),
        ])
    }

    #[test]
    fn reads_what_it_wrote() {
        let h = CsaHeader::parse(&sample()).unwrap();
        assert_eq!(h.tags.len(), 5);
        assert_eq!(h.numbers("NumberOfImagesInMosaic"), Some(vec![35.0]));
        assert_eq!(h.numbers("SliceNormalVector"), Some(vec![0.0, 0.10799944, 0.99415095]));
        assert_eq!(h.get("ImaCoilString").unwrap().items, vec!["T:HEA;HEP"]);
        assert_eq!(h.get("SliceNormalVector").unwrap().vr, "FD");
        assert_eq!(h.numbers("Empty"), None);
        assert_eq!(h.numbers("ImaCoilString"), None, "text is not a number");
        assert_eq!(h.numbers("Absent"), None);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for n in 0..full.len() {
            let r = CsaHeader::parse(&full[..n]);
            // Cutting inside the padding of the very last item still reads.
            if n + 3 < full.len() {
                assert!(r.is_err(), "{n} of {} bytes parsed", full.len());
            }
        }
    }

    #[test]
    fn refuses_other_formats_and_huge_or_negative_counts() {
        assert_eq!(CsaHeader::parse(b"\x05\x00\x00\x00\x4d\x00\x00\x00"), Err(CsaError::NotCsa2));
        let mut b = sample();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(CsaHeader::parse(&b), Err(CsaError::Count { what: "tag", count: i64::from(u32::MAX) }));
        // First tag's n_items (offset 16 + 64 + 4 + 4 + 4).
        let at = 16 + 76;
        let mut b = sample();
        b[at..at + 4].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(CsaHeader::parse(&b), Err(CsaError::Count { what: "item", count: -1 }));
        b[at..at + 4].copy_from_slice(&1_000_000i32.to_le_bytes());
        assert_eq!(CsaHeader::parse(&b), Err(CsaError::Count { what: "item", count: 1_000_000 }));
        // The first item's length (after the tag's 84 bytes and x0).
        let len_at = 16 + 84 + 4;
        let mut b = sample();
        b[len_at..len_at + 4].copy_from_slice(&i32::MIN.to_le_bytes());
        assert!(matches!(CsaHeader::parse(&b), Err(CsaError::NegativeLength { .. })));
        b[len_at..len_at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(matches!(CsaHeader::parse(&b), Err(CsaError::Truncated { .. })));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut b = b"SV10\x04\x03\x02\x01".to_vec();
            b.extend(tail);
            let _ = CsaHeader::parse(&b);
        }

        #[test]
        fn corrupted_headers_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = sample();
            for (i, v) in flips {
                let i = i.index(b.len());
                b[i] = v;
            }
            let n = cut.index(b.len() + 1);
            if let Ok(h) = CsaHeader::parse(&b[..n]) {
                prop_assert!(h.tags.len() <= MAX_COUNT as usize);
                for t in &h.tags {
                    let _ = CsaHeader::numbers(&h, &t.name);
                }
            }
        }
    }
}
