//! What ingest keeps of each DICOM instance: identifiers, image pixel format,
//! per-frame geometry and rescale, and the PET attributes SUV needs. Single-frame
//! and multi-frame (enhanced, legacy-converted) objects become the same shape:
//! a list of frames, each with its own position, orientation and rescale.

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

use super::error::FileError;

/// DICOM tags this reader uses (explicit numbers keep the mapping obvious).
pub mod tag {
    use dicom_core::Tag;
    /// SOPClassUID
    pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
    /// SOPInstanceUID
    pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
    /// StudyInstanceUID
    pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
    /// SeriesInstanceUID
    pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
    /// FrameOfReferenceUID
    pub const FRAME_OF_REFERENCE_UID: Tag = Tag(0x0020, 0x0052);
    /// Modality
    pub const MODALITY: Tag = Tag(0x0008, 0x0060);
    /// ImageType
    pub const IMAGE_TYPE: Tag = Tag(0x0008, 0x0008);
    /// SeriesDate
    pub const SERIES_DATE: Tag = Tag(0x0008, 0x0021);
    /// AcquisitionDate
    pub const ACQUISITION_DATE: Tag = Tag(0x0008, 0x0022);
    /// SeriesTime
    pub const SERIES_TIME: Tag = Tag(0x0008, 0x0031);
    /// AcquisitionTime
    pub const ACQUISITION_TIME: Tag = Tag(0x0008, 0x0032);
    /// AcquisitionDateTime
    pub const ACQUISITION_DATE_TIME: Tag = Tag(0x0008, 0x002A);
    /// Manufacturer
    pub const MANUFACTURER: Tag = Tag(0x0008, 0x0070);
    /// SeriesDescription
    pub const SERIES_DESCRIPTION: Tag = Tag(0x0008, 0x103E);
    /// PatientWeight
    pub const PATIENT_WEIGHT: Tag = Tag(0x0010, 0x1030);
    /// PatientSize (height)
    pub const PATIENT_SIZE: Tag = Tag(0x0010, 0x1020);
    /// PatientSex
    pub const PATIENT_SEX: Tag = Tag(0x0010, 0x0040);
    /// SUVType (PET)
    pub const SUV_TYPE: Tag = Tag(0x0054, 0x1006);
    /// SliceThickness
    pub const SLICE_THICKNESS: Tag = Tag(0x0018, 0x0050);
    /// ActualFrameDuration
    pub const ACTUAL_FRAME_DURATION: Tag = Tag(0x0018, 0x1242);
    /// SeriesNumber
    pub const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);
    /// InstanceNumber
    pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
    /// ImagePositionPatient
    pub const IMAGE_POSITION_PATIENT: Tag = Tag(0x0020, 0x0032);
    /// ImageOrientationPatient
    pub const IMAGE_ORIENTATION_PATIENT: Tag = Tag(0x0020, 0x0037);
    /// ImagesInAcquisition
    pub const IMAGES_IN_ACQUISITION: Tag = Tag(0x0020, 0x1002);
    /// SamplesPerPixel
    pub const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
    /// PhotometricInterpretation
    pub const PHOTOMETRIC_INTERPRETATION: Tag = Tag(0x0028, 0x0004);
    /// NumberOfFrames
    pub const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
    /// Rows
    pub const ROWS: Tag = Tag(0x0028, 0x0010);
    /// Columns
    pub const COLUMNS: Tag = Tag(0x0028, 0x0011);
    /// PixelSpacing
    pub const PIXEL_SPACING: Tag = Tag(0x0028, 0x0030);
    /// BitsAllocated
    pub const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);
    /// BitsStored
    pub const BITS_STORED: Tag = Tag(0x0028, 0x0101);
    /// PixelRepresentation
    pub const PIXEL_REPRESENTATION: Tag = Tag(0x0028, 0x0103);
    /// RescaleIntercept
    pub const RESCALE_INTERCEPT: Tag = Tag(0x0028, 0x1052);
    /// RescaleSlope
    pub const RESCALE_SLOPE: Tag = Tag(0x0028, 0x1053);
    /// Units (PET)
    pub const UNITS: Tag = Tag(0x0054, 0x1001);
    /// DecayCorrection
    pub const DECAY_CORRECTION: Tag = Tag(0x0054, 0x1102);
    /// CorrectedImage
    pub const CORRECTED_IMAGE: Tag = Tag(0x0028, 0x0051);
    /// NumberOfSlices
    pub const NUMBER_OF_SLICES: Tag = Tag(0x0054, 0x0081);
    /// NumberOfTimeSlices
    pub const NUMBER_OF_TIME_SLICES: Tag = Tag(0x0054, 0x0101);
    /// FrameReferenceTime
    pub const FRAME_REFERENCE_TIME: Tag = Tag(0x0054, 0x1300);
    /// RadiopharmaceuticalInformationSequence
    pub const RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE: Tag = Tag(0x0054, 0x0016);
    /// RadiopharmaceuticalStartTime
    pub const RADIOPHARMACEUTICAL_START_TIME: Tag = Tag(0x0018, 0x1072);
    /// RadiopharmaceuticalStartDateTime
    pub const RADIOPHARMACEUTICAL_START_DATE_TIME: Tag = Tag(0x0018, 0x1078);
    /// RadionuclideTotalDose
    pub const RADIONUCLIDE_TOTAL_DOSE: Tag = Tag(0x0018, 0x1074);
    /// RadionuclideHalfLife
    pub const RADIONUCLIDE_HALF_LIFE: Tag = Tag(0x0018, 0x1075);
    /// SharedFunctionalGroupsSequence
    pub const SHARED_FUNCTIONAL_GROUPS_SEQUENCE: Tag = Tag(0x5200, 0x9229);
    /// PerFrameFunctionalGroupsSequence
    pub const PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE: Tag = Tag(0x5200, 0x9230);
    /// PlanePositionSequence
    pub const PLANE_POSITION_SEQUENCE: Tag = Tag(0x0020, 0x9113);
    /// PlaneOrientationSequence
    pub const PLANE_ORIENTATION_SEQUENCE: Tag = Tag(0x0020, 0x9116);
    /// PixelMeasuresSequence
    pub const PIXEL_MEASURES_SEQUENCE: Tag = Tag(0x0028, 0x9110);
    /// PixelValueTransformationSequence
    pub const PIXEL_VALUE_TRANSFORMATION_SEQUENCE: Tag = Tag(0x0028, 0x9145);
    /// FrameContentSequence
    pub const FRAME_CONTENT_SEQUENCE: Tag = Tag(0x0020, 0x9111);
    /// FrameAcquisitionDateTime
    pub const FRAME_ACQUISITION_DATE_TIME: Tag = Tag(0x0018, 0x9074);
    /// DecayCorrectionDateTime (Enhanced PET)
    pub const DECAY_CORRECTION_DATE_TIME: Tag = Tag(0x0018, 0x9701);
    /// DecayCorrected (Enhanced PET)
    pub const DECAY_CORRECTED: Tag = Tag(0x0018, 0x9758);
    /// AttenuationCorrected (Enhanced PET)
    pub const ATTENUATION_CORRECTED: Tag = Tag(0x0018, 0x9759);
    /// RealWorldValueMappingSequence
    pub const REAL_WORLD_VALUE_MAPPING_SEQUENCE: Tag = Tag(0x0040, 0x9096);
    /// MeasurementUnitsCodeSequence
    pub const MEASUREMENT_UNITS_CODE_SEQUENCE: Tag = Tag(0x0040, 0x08EA);
    /// CodeValue
    pub const CODE_VALUE: Tag = Tag(0x0008, 0x0100);
    /// PixelData
    pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
}

/// Geometry and rescale of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameHeader {
    /// ImagePositionPatient: LPS centre of the first transmitted pixel.
    pub position: [f64; 3],
    /// ImageOrientationPatient: row direction then column direction.
    pub orientation: [f64; 6],
    /// PixelSpacing: between rows, then between columns (mm).
    pub pixel_spacing: [f64; 2],
    /// RescaleSlope (1 when absent).
    pub slope: f64,
    /// RescaleIntercept (0 when absent).
    pub intercept: f64,
    /// AcquisitionDateTime of this frame, as DICOM text (for PET timing).
    pub acquisition: Option<String>,
}

/// PET attributes that the SUV computation reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PetHeader {
    /// Units (0054,1001): BQML, CNTS, GML ...
    pub units: Option<String>,
    /// DecayCorrection (0054,1102): START, ADMIN, NONE.
    pub decay_correction: Option<String>,
    /// CorrectedImage (0028,0051) values.
    pub corrected_image: Vec<String>,
    /// SeriesDate.
    pub series_date: Option<String>,
    /// SeriesTime.
    pub series_time: Option<String>,
    /// PatientWeight as written (kg by the standard; grams are recognised).
    pub weight_kg: Option<f64>,
    /// PatientSize (height) as written (m by the standard; cm are recognised).
    pub height_m: Option<f64>,
    /// PatientSex (M, F, O).
    pub sex: Option<String>,
    /// SUVType (0054,1006): BW, LBM, LBMJAMES128, IBW, BSA ...
    pub suv_type: Option<String>,
    /// RadionuclideTotalDose as written (Bq by the standard; MBq are recognised).
    pub total_dose_bq: Option<f64>,
    /// RadionuclideHalfLife in s.
    pub half_life_s: Option<f64>,
    /// RadiopharmaceuticalStartTime.
    pub start_time: Option<String>,
    /// RadiopharmaceuticalStartDateTime.
    pub start_date_time: Option<String>,
    /// FrameReferenceTime in ms.
    pub frame_reference_time_ms: Option<f64>,
    /// ActualFrameDuration in ms.
    pub actual_frame_duration_ms: Option<f64>,
    /// Philips (7053,1000) SUV Scale Factor.
    pub philips_suv_scale: Option<f64>,
    /// Philips (7053,1009) Activity Concentration Scale Factor.
    pub philips_activity_scale: Option<f64>,
    /// The Philips factors were read at (7053,1000)/(7053,1009) without their
    /// private creator "Philips PET Private Group" (Manufacturer Philips, block
    /// 10 of group 7053 reserved by no other creator).
    pub philips_without_creator: bool,
    /// GE (0009,100D) scan date-time, block GEMS_PETD_01.
    pub ge_scan_date_time: Option<String>,
    /// Enhanced PET: DecayCorrectionDateTime (0018,9701), the instant the
    /// images are decay-corrected to.
    pub decay_correction_date_time: Option<String>,
}

/// Everything ingest keeps of one DICOM instance (no pixel data).
#[derive(Debug, Clone)]
pub struct InstanceHeader {
    /// The file it came from.
    pub path: PathBuf,
    /// Transfer syntax UID from the file meta group.
    pub transfer_syntax: String,
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: Option<String>,
    /// Modality (CT, PT, ...).
    pub modality: String,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// SeriesNumber.
    pub series_number: Option<i64>,
    /// InstanceNumber (reported, never used for ordering).
    pub instance_number: Option<i64>,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// BitsAllocated.
    pub bits_allocated: u16,
    /// BitsStored.
    pub bits_stored: u16,
    /// PixelRepresentation: true when samples are signed.
    pub signed: bool,
    /// SamplesPerPixel.
    pub samples_per_pixel: u16,
    /// NumberOfFrames (1 for single-frame objects).
    pub number_of_frames: u32,
    /// Per-frame geometry and rescale.
    pub frames: Vec<FrameHeader>,
    /// Images the series should have, where the headers say so
    /// (NumberOfSlices × NumberOfTimeSlices, or ImagesInAcquisition).
    pub expected_images: Option<u32>,
    /// PET attributes (modality PT only).
    pub pet: Option<PetHeader>,
    /// A Siemens mosaic: one stored image holding `frames.len()` slices as
    /// tiles; `rows` and `columns` are then those of one tile.
    pub mosaic: Option<super::mosaic::Mosaic>,
    /// The file's meta group lacks (0002,0000) File Meta Information Group
    /// Length (read all the same, as dcmtk does with a warning).
    pub meta_group_length_missing: bool,
}

/// Largest rows or columns accepted.
pub const MAX_ROWS_COLUMNS: u32 = 8192;
/// Largest NumberOfFrames accepted in one object.
pub const MAX_FRAMES: u32 = 8192;

type Obj = InMemDicomObject;

fn text(obj: &Obj, t: Tag) -> Option<String> {
    let s = obj.get(t)?.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!s.is_empty()).then(|| s.to_string())
}

pub(super) fn multi_text(obj: &Obj, t: Tag) -> Vec<String> {
    text(obj, t).map(|s| s.split('\\').map(|v| v.trim().to_string()).collect()).unwrap_or_default()
}

fn float(obj: &Obj, t: Tag) -> Option<f64> {
    obj.get(t)?.to_float64().ok().filter(|v| v.is_finite())
}

fn floats(obj: &Obj, t: Tag) -> Option<Vec<f64>> {
    obj.get(t)?.to_multi_float64().ok()
}

fn int(obj: &Obj, t: Tag) -> Option<i64> {
    obj.get(t)?.to_int::<i64>().ok()
}

fn items(obj: &Obj, t: Tag) -> &[Obj] {
    obj.get(t).and_then(|e| e.items()).unwrap_or(&[])
}

/// The first item of a sequence, if any.
fn first_item(obj: &Obj, t: Tag) -> Option<&Obj> {
    items(obj, t).first()
}

/// A private element by creator string: finds the block reserved by
/// `(group, 00xx) == creator` and returns `(group, xxNN)` where NN = `element`.
pub(super) fn private<'a>(
    obj: &'a Obj,
    group: u16,
    creator: &str,
    element: u8,
) -> Option<&'a dicom_object::mem::InMemElement> {
    (0x10u16..=0xFF).find_map(|block| {
        let reserved = text(obj, Tag(group, block))?;
        if reserved.eq_ignore_ascii_case(creator) {
            obj.get(Tag(group, (block << 8) | u16::from(element)))
        } else {
            None
        }
    })
}

fn private_float(obj: &Obj, group: u16, creator: &str, element: u8) -> Option<f64> {
    private(obj, group, creator, element)?.to_float64().ok().filter(|v| v.is_finite())
}

fn required_text(obj: &Obj, t: Tag, path: &Path, name: &'static str) -> Result<String, FileError> {
    text(obj, t).ok_or_else(|| FileError::MissingAttribute { path: path.to_path_buf(), attribute: name })
}

fn required_u32(obj: &Obj, t: Tag, path: &Path, name: &'static str) -> Result<u32, FileError> {
    let v = int(obj, t).ok_or_else(|| FileError::MissingAttribute { path: path.to_path_buf(), attribute: name })?;
    u32::try_from(v).map_err(|_| FileError::InvalidAttribute {
        path: path.to_path_buf(),
        attribute: name,
        reason: format!("{v} is out of range"),
    })
}

fn vec3(v: &[f64]) -> Option<[f64; 3]> {
    (v.len() == 3 && v.iter().all(|x| x.is_finite())).then(|| [v[0], v[1], v[2]])
}

fn vec6(v: &[f64]) -> Option<[f64; 6]> {
    (v.len() == 6 && v.iter().all(|x| x.is_finite())).then(|| [v[0], v[1], v[2], v[3], v[4], v[5]])
}

/// Looks an attribute up in a functional group: the per-frame item first,
/// then the shared item, then (for legacy habits) the top level.
struct Groups<'a> {
    top: &'a Obj,
    shared: Option<&'a Obj>,
    frame: Option<&'a Obj>,
}

impl<'a> Groups<'a> {
    fn macro_item(&self, seq: Tag) -> Option<&'a Obj> {
        self.frame.and_then(|f| first_item(f, seq)).or_else(|| self.shared.and_then(|s| first_item(s, seq)))
    }
}

fn frame_header(g: &Groups<'_>, path: &Path, index: u32) -> Result<FrameHeader, FileError> {
    let missing = |attribute| FileError::MissingAttribute { path: path.to_path_buf(), attribute };
    let invalid =
        |attribute, reason: String| FileError::InvalidAttribute { path: path.to_path_buf(), attribute, reason };
    let pos_obj = g.macro_item(tag::PLANE_POSITION_SEQUENCE).unwrap_or(g.top);
    let position = floats(pos_obj, tag::IMAGE_POSITION_PATIENT).ok_or_else(|| missing("ImagePositionPatient"))?;
    let position = vec3(&position).ok_or_else(|| {
        invalid("ImagePositionPatient", format!("frame {}: expected 3 finite numbers, found {position:?}", index + 1))
    })?;
    let ori_obj = g.macro_item(tag::PLANE_ORIENTATION_SEQUENCE).unwrap_or(g.top);
    let orientation =
        floats(ori_obj, tag::IMAGE_ORIENTATION_PATIENT).ok_or_else(|| missing("ImageOrientationPatient"))?;
    let orientation = vec6(&orientation).ok_or_else(|| {
        invalid(
            "ImageOrientationPatient",
            format!("frame {}: expected 6 finite numbers, found {orientation:?}", index + 1),
        )
    })?;
    check_orientation(&orientation).map_err(|r| invalid("ImageOrientationPatient", r))?;
    let pm_obj = g.macro_item(tag::PIXEL_MEASURES_SEQUENCE).unwrap_or(g.top);
    let ps = floats(pm_obj, tag::PIXEL_SPACING).ok_or_else(|| missing("PixelSpacing"))?;
    if ps.len() != 2 || !ps.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(invalid("PixelSpacing", format!("expected 2 positive numbers, found {ps:?}")));
    }
    let pv_obj = g.macro_item(tag::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).unwrap_or(g.top);
    let slope = float(pv_obj, tag::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = float(pv_obj, tag::RESCALE_INTERCEPT).unwrap_or(0.0);
    let acquisition = g
        .macro_item(tag::FRAME_CONTENT_SEQUENCE)
        .and_then(|fc| text(fc, tag::FRAME_ACQUISITION_DATE_TIME))
        .or_else(|| text(g.top, tag::ACQUISITION_DATE_TIME))
        .or_else(|| {
            let d = text(g.top, tag::ACQUISITION_DATE)?;
            let t = text(g.top, tag::ACQUISITION_TIME)?;
            Some(format!("{d}{t}"))
        });
    Ok(FrameHeader { position, orientation, pixel_spacing: [ps[0], ps[1]], slope, intercept, acquisition })
}

/// Row and column directions must be unit length and perpendicular.
fn check_orientation(o: &[f64; 6]) -> Result<(), String> {
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    let (nr, nc) = (crate::volume::norm(r), crate::volume::norm(c));
    if (nr - 1.0).abs() > 1e-2 || (nc - 1.0).abs() > 1e-2 {
        return Err(format!("direction cosines are not unit vectors: {o:?}"));
    }
    if crate::volume::dot(r, c).abs() > 1e-2 {
        return Err(format!("row and column directions are not perpendicular: {o:?}"));
    }
    Ok(())
}

/// Where PET attributes may live: the top level, then (multi-frame objects)
/// the macros of the shared functional group, such as the Unassigned Shared
/// Converted Attributes of a legacy-converted object.
fn pet_containers(obj: &Obj) -> Vec<&Obj> {
    let mut out = vec![obj];
    if let Some(shared) = first_item(obj, tag::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
        out.extend(shared.iter().filter_map(|e| e.items().and_then(|i| i.first())));
    }
    out
}

/// Enhanced PET carries its units as a UCUM code in the Real World Value
/// Mapping macro instead of Units (0054,1001).
fn units_from_real_world_value_mapping(obj: &Obj) -> Option<String> {
    let groups = [
        first_item(obj, tag::SHARED_FUNCTIONAL_GROUPS_SEQUENCE),
        items(obj, tag::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).first(),
    ];
    let code = groups.iter().flatten().find_map(|g| {
        let rwvm = first_item(g, tag::REAL_WORLD_VALUE_MAPPING_SEQUENCE)?;
        text(first_item(rwvm, tag::MEASUREMENT_UNITS_CODE_SEQUENCE)?, tag::CODE_VALUE)
    })?;
    match code.as_str() {
        "Bq/ml" | "Bq/mL" => Some("BQML".into()),
        "{SUVbw}g/ml" | "g/ml" | "{SUVbw}g/mL" => Some("GML".into()),
        "{counts}" | "{cnts}" => Some("CNTS".into()),
        _ => None,
    }
}

/// A Philips PET private factor: under its creator, or, for Manufacturer
/// Philips, at (7053,10xx) when no creator reserves block 10 of group 7053
/// (the element is then unambiguous). The flag says which.
fn philips_factor(cs: &[&Obj], philips: bool, element: u8) -> (Option<f64>, bool) {
    if let Some(v) = cs.iter().find_map(|c| private_float(c, 0x7053, "Philips PET Private Group", element)) {
        return (Some(v), false);
    }
    if !philips {
        return (None, false);
    }
    let bare = cs.iter().find_map(|c| {
        if text(c, Tag(0x7053, 0x0010)).is_some() {
            return None;
        }
        c.get(Tag(0x7053, 0x1000 | u16::from(element)))?.to_float64().ok().filter(|v| v.is_finite())
    });
    (bare, bare.is_some())
}

fn pet_header(obj: &Obj) -> PetHeader {
    let cs = pet_containers(obj);
    let find_text = |t| cs.iter().find_map(|c| text(c, t));
    let find_float = |t| cs.iter().find_map(|c| float(c, t));
    let rp = cs.iter().find_map(|c| first_item(c, tag::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE));
    let yes = |t| find_text(t).is_some_and(|v| v.eq_ignore_ascii_case("YES"));
    let mut corrected_image =
        cs.iter().map(|c| multi_text(c, tag::CORRECTED_IMAGE)).find(|v| !v.is_empty()).unwrap_or_default();
    if corrected_image.is_empty() {
        // Enhanced PET states the corrections as YES/NO flags.
        if yes(tag::ATTENUATION_CORRECTED) {
            corrected_image.push("ATTN".into());
        }
        if yes(tag::DECAY_CORRECTED) {
            corrected_image.push("DECY".into());
        }
    }
    let decay_correction_date_time = find_text(tag::DECAY_CORRECTION_DATE_TIME);
    let decay_correction = find_text(tag::DECAY_CORRECTION).map(|u| u.to_ascii_uppercase()).or_else(|| {
        // Enhanced PET: corrected to an explicit instant, which plays START's role.
        (yes(tag::DECAY_CORRECTED) && decay_correction_date_time.is_some()).then(|| "START".to_string())
    });
    let philips = find_text(tag::MANUFACTURER).is_some_and(|m| m.to_ascii_lowercase().contains("philips"));
    let (philips_suv_scale, suv_bare) = philips_factor(&cs, philips, 0x00);
    let (philips_activity_scale, activity_bare) = philips_factor(&cs, philips, 0x09);
    PetHeader {
        units: find_text(tag::UNITS)
            .map(|u| u.to_ascii_uppercase())
            .or_else(|| units_from_real_world_value_mapping(obj)),
        decay_correction,
        corrected_image,
        series_date: find_text(tag::SERIES_DATE),
        series_time: find_text(tag::SERIES_TIME),
        weight_kg: find_float(tag::PATIENT_WEIGHT),
        height_m: find_float(tag::PATIENT_SIZE),
        sex: find_text(tag::PATIENT_SEX).map(|v| v.to_ascii_uppercase()),
        suv_type: find_text(tag::SUV_TYPE).map(|v| v.to_ascii_uppercase()),
        total_dose_bq: rp.and_then(|r| float(r, tag::RADIONUCLIDE_TOTAL_DOSE)),
        half_life_s: rp.and_then(|r| float(r, tag::RADIONUCLIDE_HALF_LIFE)),
        start_time: rp.and_then(|r| text(r, tag::RADIOPHARMACEUTICAL_START_TIME)),
        start_date_time: rp.and_then(|r| text(r, tag::RADIOPHARMACEUTICAL_START_DATE_TIME)),
        frame_reference_time_ms: find_float(tag::FRAME_REFERENCE_TIME),
        actual_frame_duration_ms: find_float(tag::ACTUAL_FRAME_DURATION),
        philips_suv_scale,
        philips_activity_scale,
        philips_without_creator: suv_bare || activity_bare,
        ge_scan_date_time: cs
            .iter()
            .find_map(|c| private(c, 0x0009, "GEMS_PETD_01", 0x0D))
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        decay_correction_date_time,
    }
}

/// Extracts the header of one parsed instance.
pub fn parse(obj: &Obj, path: &Path, transfer_syntax: &str) -> Result<InstanceHeader, FileError> {
    let rows = required_u32(obj, tag::ROWS, path, "Rows")?;
    let columns = required_u32(obj, tag::COLUMNS, path, "Columns")?;
    for (v, name) in [(rows, "Rows"), (columns, "Columns")] {
        if v == 0 || v > MAX_ROWS_COLUMNS {
            return Err(FileError::InvalidAttribute {
                path: path.to_path_buf(),
                attribute: name,
                reason: format!("{v} is outside 1..={MAX_ROWS_COLUMNS}"),
            });
        }
    }
    let bits_allocated = u16::try_from(required_u32(obj, tag::BITS_ALLOCATED, path, "BitsAllocated")?).unwrap_or(0);
    if !matches!(bits_allocated, 8 | 16 | 32) {
        return Err(FileError::InvalidAttribute {
            path: path.to_path_buf(),
            attribute: "BitsAllocated",
            reason: format!("{bits_allocated} (8, 16 or 32 supported)"),
        });
    }
    let bits_stored = int(obj, tag::BITS_STORED)
        .and_then(|v| u16::try_from(v).ok())
        .filter(|&b| b >= 1 && b <= bits_allocated)
        .unwrap_or(bits_allocated);
    let samples_per_pixel = int(obj, tag::SAMPLES_PER_PIXEL).and_then(|v| u16::try_from(v).ok()).unwrap_or(1);
    if samples_per_pixel != 1 {
        return Err(FileError::InvalidAttribute {
            path: path.to_path_buf(),
            attribute: "SamplesPerPixel",
            reason: format!("{samples_per_pixel} (only grey-scale images are volumes)"),
        });
    }
    let number_of_frames = match int(obj, tag::NUMBER_OF_FRAMES) {
        None => 1,
        Some(n) if n >= 1 && n <= i64::from(MAX_FRAMES) => n as u32,
        Some(n) => {
            return Err(FileError::FrameCount {
                path: path.to_path_buf(),
                reason: format!("NumberOfFrames {n} is outside 1..={MAX_FRAMES}"),
            });
        }
    };

    let shared = first_item(obj, tag::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = items(obj, tag::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let frames = if number_of_frames > 1 || !per_frame.is_empty() {
        if per_frame.len() != number_of_frames as usize {
            return Err(FileError::FrameCount {
                path: path.to_path_buf(),
                reason: format!(
                    "NumberOfFrames {number_of_frames} but {} per-frame functional group items",
                    per_frame.len()
                ),
            });
        }
        per_frame
            .iter()
            .enumerate()
            .map(|(i, f)| frame_header(&Groups { top: obj, shared, frame: Some(f) }, path, i as u32))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![frame_header(&Groups { top: obj, shared, frame: None }, path, 0)?]
    };
    let (rows, columns, frames, mosaic) =
        match super::mosaic::detect(obj, path, rows, columns, bits_stored, number_of_frames, &frames)? {
            Some((m, tiles)) => (m.tile_rows(), m.tile_columns(), tiles, Some(m)),
            None => (rows, columns, frames, None),
        };

    let modality = text(obj, tag::MODALITY).unwrap_or_else(|| "OT".to_string());
    // PET: NumberOfSlices per time slice, times NumberOfTimeSlices (dynamic).
    let time_slices = int(obj, tag::NUMBER_OF_TIME_SLICES).and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 1);
    let expected_images = [tag::NUMBER_OF_SLICES, tag::IMAGES_IN_ACQUISITION]
        .iter()
        .find_map(|&t| int(obj, t))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .map(|n| match (int(obj, tag::NUMBER_OF_SLICES), time_slices) {
            (Some(_), Some(t)) => n.saturating_mul(t),
            _ => n,
        });
    Ok(InstanceHeader {
        path: path.to_path_buf(),
        transfer_syntax: transfer_syntax.to_string(),
        sop_class_uid: text(obj, tag::SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: required_text(obj, tag::SOP_INSTANCE_UID, path, "SOPInstanceUID")?,
        study_uid: required_text(obj, tag::STUDY_INSTANCE_UID, path, "StudyInstanceUID")?,
        series_uid: required_text(obj, tag::SERIES_INSTANCE_UID, path, "SeriesInstanceUID")?,
        frame_of_reference_uid: text(obj, tag::FRAME_OF_REFERENCE_UID),
        pet: (modality == "PT").then(|| pet_header(obj)),
        modality,
        manufacturer: text(obj, tag::MANUFACTURER),
        series_description: text(obj, tag::SERIES_DESCRIPTION),
        series_number: int(obj, tag::SERIES_NUMBER),
        instance_number: int(obj, tag::INSTANCE_NUMBER),
        rows,
        columns,
        bits_allocated,
        bits_stored,
        signed: int(obj, tag::PIXEL_REPRESENTATION) == Some(1),
        samples_per_pixel,
        number_of_frames,
        frames,
        expected_images,
        mosaic,
        meta_group_length_missing: false,
    })
}
