//! What the DICOM outputs (SEG, RTSTRUCT) copy from and point back to: the
//! reference series' UIDs and slices, the source's patient and study
//! attributes, and the small writing helpers both outputs share (new UIDs,
//! decimal strings of at most 16 characters, element builders, file writing).

use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

/// Errors writing a DICOM output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DicomExportError {
    /// The source file could not be read again for its patient/study attributes.
    #[error("{path}: cannot read the source's patient and study attributes: {reason}")]
    Source {
        /// The source file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The results do not fit the source (slice count, grid).
    #[error("{0}")]
    Mismatch(String),
    /// Encoding or writing the file failed.
    #[error("{path}: {reason}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Patient and study attributes copied from the source into every output,
/// as text (empty when the source lacks them: these are Type 2 attributes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientStudy {
    /// PatientName.
    pub patient_name: String,
    /// PatientID.
    pub patient_id: String,
    /// PatientBirthDate.
    pub patient_birth_date: String,
    /// PatientSex.
    pub patient_sex: String,
    /// StudyDate.
    pub study_date: String,
    /// StudyTime.
    pub study_time: String,
    /// AccessionNumber.
    pub accession_number: String,
    /// ReferringPhysicianName.
    pub referring_physician_name: String,
    /// StudyID.
    pub study_id: String,
}

impl PatientStudy {
    /// Reads the attributes from one source file, stopping at the pixel data.
    pub fn read(path: &Path) -> Result<Self, DicomExportError> {
        let (obj, _) = crate::ingest::part10::open(OpenFileOptions::new().read_until(tags::PIXEL_DATA), path)
            .map_err(|e| DicomExportError::Source { path: path.to_path_buf(), reason: e.to_string() })?;
        let t = |tag: Tag| {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
                .unwrap_or_default()
        };
        Ok(Self {
            patient_name: t(tags::PATIENT_NAME),
            patient_id: t(tags::PATIENT_ID),
            patient_birth_date: t(tags::PATIENT_BIRTH_DATE),
            patient_sex: t(tags::PATIENT_SEX),
            study_date: t(tags::STUDY_DATE),
            study_time: t(tags::STUDY_TIME),
            accession_number: t(tags::ACCESSION_NUMBER),
            referring_physician_name: t(tags::REFERRING_PHYSICIAN_NAME),
            study_id: t(tags::STUDY_ID),
        })
    }
}

/// One slice of the reference series, in grid order (k).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSlice {
    /// SOPClassUID of its instance.
    pub sop_class_uid: String,
    /// SOPInstanceUID of its instance.
    pub sop_instance_uid: String,
    /// 1-based frame number when the instance is multi-frame.
    pub frame: Option<u32>,
    /// ImagePositionPatient of the slice (LPS mm), as the source gave it.
    pub position: [f64; 3],
}

/// The reference series a result lies on, as the DICOM outputs reference it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRefs {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID of the reference series.
    pub series_uid: String,
    /// FrameOfReferenceUID of the reference series.
    pub frame_of_reference_uid: String,
    /// ImageOrientationPatient (row direction, column direction).
    pub orientation: [f64; 6],
    /// Slices in grid order: `slices[k]` is slice k of the result volumes,
    /// unless `resampled` is set: then the source slices along the normal.
    pub slices: Vec<SourceSlice>,
    /// Set when the reference volume was resampled from its source slices
    /// (irregular spacing, gantry tilt): the outputs are mapped back onto them.
    pub resampled: Option<SourceGrid>,
    /// Patient and study attributes to copy.
    pub patient: PatientStudy,
}

/// The source slices' pixel grid, for results on a resampled grid.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceGrid {
    /// Columns of a source slice.
    pub columns: usize,
    /// Rows of a source slice.
    pub rows: usize,
}

/// A result volume on the (resampled) reference grid, mapped onto the source
/// slices: voxel (i, j) of slice k takes the grid voxel nearest to the centre
/// of source pixel (i, j) on source slice k (0 outside the grid). The result
/// has one slice per source slice, the source's pixel grid, and the grid's
/// directions; its origin is the first source slice's position and its slice
/// spacing the grid's (the slices' own positions are in `src.slices`).
pub fn to_source_slices<T: Copy + Default>(
    v: &crate::volume::Volume<T>,
    src: &SourceRefs,
    grid: &SourceGrid,
) -> crate::volume::Volume<T> {
    let g = &v.geometry;
    let (w, h) = (grid.columns, grid.rows);
    let mut data = vec![T::default(); w * h * src.slices.len()];
    for (k, sl) in src.slices.iter().enumerate() {
        // The source pixel (0, 0) in grid coordinates; the axes are the same.
        let c = g.lps_to_voxel(sl.position);
        let kk = c[2].round();
        if kk < 0.0 || kk > g.dims[2] as f64 - 1.0 {
            continue;
        }
        let out = &mut data[k * w * h..(k + 1) * w * h];
        for j in 0..h {
            let gj = (c[1] + j as f64).round();
            if gj < 0.0 || gj > g.dims[1] as f64 - 1.0 {
                continue;
            }
            for i in 0..w {
                let gi = (c[0] + i as f64).round();
                if gi < 0.0 || gi > g.dims[0] as f64 - 1.0 {
                    continue;
                }
                out[i + w * j] = v.data[g.index(gi as usize, gj as usize, kk as usize)];
            }
        }
    }
    let geometry = crate::volume::Geometry {
        dims: [w, h, src.slices.len()],
        spacing: g.spacing,
        origin: src.slices.first().map(|s| s.position).unwrap_or(g.origin),
        direction: g.direction,
    };
    crate::volume::Volume { geometry, data }
}

impl SourceRefs {
    /// The distinct instances (class, instance UID) in slice order.
    pub fn instances(&self) -> Vec<(&str, &str)> {
        let mut seen = std::collections::HashSet::new();
        self.slices
            .iter()
            .filter(|s| seen.insert(s.sop_instance_uid.as_str()))
            .map(|s| (s.sop_class_uid.as_str(), s.sop_instance_uid.as_str()))
            .collect()
    }
}

/// A new UID under the UUID-derived root `2.25` (ITU-T X.667): `2.25.` and a
/// random 128-bit integer from /dev/urandom (or, where that fails, a SHA-256
/// of the time, the process id and a counter).
pub fn new_uid() -> String {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        use sha2::{Digest, Sha256};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let h = Sha256::digest(format!("{now}-{}-{n}", std::process::id()).as_bytes());
        b.copy_from_slice(&h[..16]);
    }
    // UUID version 4 / variant bits, as X.667 expects of a UUID.
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// A decimal string (VR DS) of at most 16 characters for `v`: the shortest
/// text that reads back as exactly `v` where it fits (so a source's
/// ImagePositionPatient is written as the same number it was read from), else
/// fixed notation with as many decimals as fit, trailing zeros trimmed; exponent
/// notation (mantissa truncated) for magnitudes fixed notation cannot hold. Non-finite values
/// (never produced by the writers) become "0".
pub fn ds(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let tidy = |s: String| {
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if s == "-0" { "0".to_string() } else { s }
    };
    let shortest = tidy(format!("{v}"));
    if shortest.len() <= 16 {
        return shortest;
    }
    for prec in (0..=15).rev() {
        let s = tidy(format!("{v:.prec$}"));
        if s.len() <= 16 && (s != "0" || v.abs() < 5e-16) {
            return s;
        }
    }
    // Exponent notation with the mantissa truncated (not rounded, which could
    // overflow to infinity next to f64::MAX) to what 16 characters hold.
    let full = format!("{v:.16e}");
    let (mantissa, exponent) = full.split_once('e').unwrap_or((&full, "0"));
    let keep = 16usize.saturating_sub(exponent.len() + 1).min(mantissa.len());
    let m = mantissa[..keep].trim_end_matches('0').trim_end_matches('.');
    format!("{m}e{exponent}")
}

/// Current date (DA), time (TM) in UTC.
pub fn now_utc() -> (String, String) {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let t = chrono::DateTime::from_timestamp(d.as_secs() as i64, 0).unwrap_or_default();
    (t.format("%Y%m%d").to_string(), t.format("%H%M%S").to_string())
}

/// An element with one text value (empty allowed, for Type 2).
pub fn text(tag: Tag, vr: VR, s: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(s))
}

/// An element with several text values (DS, CS, IS lists).
pub fn texts(tag: Tag, vr: VR, v: Vec<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Strs(v.into()))
}

/// A US element.
pub fn us(tag: Tag, v: &[u16]) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(v.iter().copied().collect()))
}

/// A sequence element.
pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// An object from a list of elements.
pub fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// A coded concept (code value, scheme, meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// CodeValue.
    pub value: &'static str,
    /// CodingSchemeDesignator.
    pub scheme: &'static str,
    /// CodeMeaning.
    pub meaning: &'static str,
}

impl Code {
    /// The code as a sequence item.
    pub fn item(&self) -> InMemDicomObject {
        item(vec![
            text(tags::CODE_VALUE, VR::SH, self.value),
            text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, self.scheme),
            text(tags::CODE_MEANING, VR::LO, self.meaning),
        ])
    }
}

/// Puts the Patient and General Study attributes copied from the source.
pub fn put_patient_study(obj: &mut InMemDicomObject, src: &SourceRefs) {
    let p = &src.patient;
    for e in [
        text(tags::PATIENT_NAME, VR::PN, &p.patient_name),
        text(tags::PATIENT_ID, VR::LO, &p.patient_id),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, &p.patient_birth_date),
        text(tags::PATIENT_SEX, VR::CS, &p.patient_sex),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &src.study_uid),
        text(tags::STUDY_DATE, VR::DA, &p.study_date),
        text(tags::STUDY_TIME, VR::TM, &p.study_time),
        text(tags::ACCESSION_NUMBER, VR::SH, &p.accession_number),
        text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, &p.referring_physician_name),
        text(tags::STUDY_ID, VR::SH, &p.study_id),
    ] {
        obj.put(e);
    }
}

/// A result grid of `slices` slices must match the reference series slice
/// for slice (the outputs reference each source slice).
pub fn check_slices(src: &SourceRefs, slices: usize) -> Result<(), DicomExportError> {
    if src.slices.len() != slices {
        return Err(DicomExportError::Mismatch(format!(
            "the result has {slices} slices, the reference series {} {}",
            src.series_uid,
            src.slices.len()
        )));
    }
    Ok(())
}

/// What distinguishes one of edgeseg's new DICOM series.
pub struct NewSeries<'a> {
    /// SOP Class UID.
    pub sop_class_uid: &'a str,
    /// Modality (SEG, RTSTRUCT).
    pub modality: &'a str,
    /// Series Description.
    pub description: &'a str,
    /// Series Number.
    pub series_number: &'a str,
}

/// Puts the attributes every edgeseg object shares: SOP Common (new SOP
/// Instance UID, UTF-8), General Series (new Series Instance UID), the
/// source's Frame of Reference, General Equipment, and the Patient and
/// General Study attributes copied from the source.
pub fn put_new_series(obj: &mut InMemDicomObject, src: &SourceRefs, s: &NewSeries<'_>, date: &str, time: &str) {
    put_patient_study(obj, src);
    for e in [
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, time),
        text(tags::SOP_CLASS_UID, VR::UI, s.sop_class_uid),
        text(tags::SOP_INSTANCE_UID, VR::UI, &new_uid()),
        text(tags::SERIES_DATE, VR::DA, date),
        text(tags::SERIES_TIME, VR::TM, time),
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        text(tags::MODALITY, VR::CS, s.modality),
        text(tags::SERIES_DESCRIPTION, VR::LO, s.description),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &new_uid()),
        text(tags::SERIES_NUMBER, VR::IS, s.series_number),
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &src.frame_of_reference_uid),
        text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        text(tags::MANUFACTURER, VR::LO, "edgeseg"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "edgeseg"),
        text(tags::SOFTWARE_VERSIONS, VR::LO, crate::version()),
    ] {
        obj.put(e);
    }
}

/// Encodes `obj` as a Part-10 file (explicit VR little endian) and writes it
/// atomically to `path` (temporary file, fsync, rename).
pub fn write_part10(path: &Path, obj: InMemDicomObject) -> Result<(), DicomExportError> {
    let err = |reason: String| DicomExportError::Write { path: path.to_path_buf(), reason };
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(concat!("EDGESEG_", env!("CARGO_PKG_VERSION"))),
        )
        .map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| err(e.to_string()))?;
    super::write_atomic(path, |f| std::io::Write::write_all(f, &bytes)).map_err(|e| err(e.to_string()))
}

/// ImplementationClassUID of edgeseg's files (a fixed UUID-derived UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.233905341216387652318233574526830717711";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_16_characters_and_round_trips() {
        let cases = [
            0.0,
            -0.0,
            1.5,
            -123.456789,
            -123456789.123456,
            1234567890123456.0,
            -1234567890123456.0,
            12345678901234567890.0,
            -1.234567890123e300,
            1e-300,
            -2.5e-7,
            3.0e-6,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
        ];
        for v in cases {
            let s = ds(v);
            assert!(s.len() <= 16, "{v}: {s} has {} characters", s.len());
            assert!(s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)), "{v}: {s}");
            let back: f64 = s.parse().expect("parses");
            let tol = (v.abs() * 1e-9).max(5e-15);
            assert!((back - v).abs() <= tol, "{v}: {s} reads back as {back}");
        }
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(12.5), "12.5");
        assert_eq!(ds(-250.0), "-250");
        assert_eq!(ds(0.1 + 0.2), "0.3");
        assert_eq!(ds(-123456789.123456), "-123456789.12346");
        // Exact where 16 characters hold the shortest round-trip text.
        for v in [-197.916668, 4.1666667, -404.0, 0.000123456789, -1234.56789012] {
            assert_eq!(ds(v).parse::<f64>().expect("parses"), v, "{v}");
        }
    }

    #[test]
    fn non_ascii_patient_names_survive_as_utf8() {
        let src = SourceRefs {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            frame_of_reference_uid: "1.2.3.5".into(),
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            slices: Vec::new(),
            resampled: None,
            patient: PatientStudy {
                patient_name: "Müller^José".into(),
                patient_id: "ÄÖ-1".into(),
                ..Default::default()
            },
        };
        let mut obj = InMemDicomObject::new_empty();
        obj.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
        obj.put(text(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.66.4"));
        obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, &new_uid()));
        put_patient_study(&mut obj, &src);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.dcm");
        write_part10(&p, obj).expect("written");
        let back = PatientStudy::read(&p).expect("read");
        assert_eq!(back.patient_name, "Müller^José");
        assert_eq!(back.patient_id, "ÄÖ-1");
        let raw = std::fs::read(&p).expect("bytes");
        assert!(raw.windows("Müller".len()).any(|w| w == "Müller".as_bytes()), "UTF-8 bytes on disk");
    }

    #[test]
    fn uids_are_new_well_formed_and_at_most_64_characters() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        for u in [&a, &b, &IMPLEMENTATION_CLASS_UID.to_string()] {
            assert!(u.len() <= 64, "{u}");
            assert!(u.starts_with("2.25."));
            let tail = &u[5..];
            assert!(tail.bytes().all(|c| c.is_ascii_digit()) && !tail.starts_with('0'), "{u}");
        }
    }
}
