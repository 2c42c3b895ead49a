//! DICOM Segmentation of a study's segments on the reference series, as
//! `[output] seg_kind` says:
//!
//! - `binary` (Segmentation Storage, BINARY): one multi-frame object, frames
//!   only for slices that hold a segment (segment by segment, slices in the
//!   source's order), bit-packed 1-bit pixels.
//! - `labelmap` (Label Map Segmentation Storage, LABELMAP; DICOM 2024,
//!   Sup 243): one frame per slice from the first to the last slice holding
//!   a segment, each pixel the number of its segment (0, the Pixel Padding
//!   Value, is the background segment), 8-bit pixels, 16-bit where a segment
//!   number exceeds 255; no Segment Identification per frame.
//!
//! Each frame references its source image; explicit VR little endian.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dicom_refs::{
    Code, DicomExportError, NewSeries, SourceRefs, SourceSlice, check_slices, ds, item, new_uid, now_utc,
    put_new_series, seq, text, texts, us,
};
use super::segments::{SegmentSet, cielab};

/// Segmentation Storage.
pub const SEG_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Label Map Segmentation Storage (DICOM 2024, Sup 243).
pub const LABEL_MAP_SEG_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.66.7";

/// How seg.dcm encodes its segments (`[output] seg_kind`, `edgeseg process
/// --seg-kind`): parsed once, by [`FromStr`](std::str::FromStr), for both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SegKind {
    /// Segmentation Storage, BINARY: 1-bit frames per segment and slice.
    #[default]
    Binary,
    /// Label Map Segmentation Storage, LABELMAP: one frame per slice, pixel = segment number.
    Labelmap,
}

impl SegKind {
    /// `binary` or `labelmap`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegKind::Binary => "binary",
            SegKind::Labelmap => "labelmap",
        }
    }

    /// The SOP class seg.dcm has.
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            SegKind::Binary => SEG_SOP_CLASS_UID,
            SegKind::Labelmap => LABEL_MAP_SEG_SOP_CLASS_UID,
        }
    }

    /// The SOP class's name, for people.
    pub fn sop_class_name(self) -> &'static str {
        match self {
            SegKind::Binary => "Segmentation Storage (BINARY)",
            SegKind::Labelmap => "Label Map Segmentation Storage (LABELMAP)",
        }
    }
}

impl std::str::FromStr for SegKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "binary" => Ok(SegKind::Binary),
            "labelmap" => Ok(SegKind::Labelmap),
            other => Err(format!("\"{other}\": expected \"binary\" or \"labelmap\"")),
        }
    }
}

impl TryFrom<String> for SegKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The algorithm that made the segments (Segmentation Algorithm Identification).
#[derive(Debug, Clone, PartialEq)]
pub struct Algorithm {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Model package sha256.
    pub model_sha256: String,
}

impl Algorithm {
    /// AlgorithmParameters text (model name, version and sha256).
    pub fn parameters(&self) -> String {
        format!("model={} model_version={} model_sha256={}", self.model_name, self.model_version, self.model_sha256)
    }
}

/// Series number given to edgeseg's SEG series by `process` (an edit
/// writes the previous one + 1).
pub const SEG_SERIES_NUMBER: &str = "901";

/// DCM 113076 "Segmentation" (derivation).
const SEGMENTATION: Code = Code { value: "113076", scheme: "DCM", meaning: "Segmentation" };
/// DCM 121322 "Source image for image processing operation".
const SOURCE_FOR_PROCESSING: Code =
    Code { value: "121322", scheme: "DCM", meaning: "Source image for image processing operation" };
/// DCM 123110 "Artificial Intelligence" (algorithm family).
const AI: Code = Code { value: "123110", scheme: "DCM", meaning: "Artificial Intelligence" };

/// DCM 125040 "Background": the label map's segment 0.
const BACKGROUND: Code = Code { value: "125040", scheme: "DCM", meaning: "Background" };

/// Writes `seg.dcm` for `set` (at least one segment) on the reference series
/// `src`, as series `series`, encoded as `kind` says. Returns the number of
/// frames written.
pub fn write(
    path: &Path,
    src: &SourceRefs,
    set: &SegmentSet,
    algo: &Algorithm,
    series: &super::OutputSeries,
    kind: SegKind,
) -> Result<usize, DicomExportError> {
    let g = set.geometry();
    let [nx, ny, nz] = g.dims;
    check_slices(src, nz)?;
    if set.segments.is_empty() {
        return Err(DicomExportError::Mismatch("a segmentation needs at least one segment".into()));
    }
    if kind == SegKind::Labelmap && set.overlapping() {
        return Err(DicomExportError::Mismatch(
            "a label map holds one segment per voxel: overlapping segments (radiomics ROIs) need a binary seg.dcm"
                .into(),
        ));
    }
    // A label map's pixels hold segment numbers: 8 bits up to 255, else 16.
    let largest = set.segments.iter().map(|s| s.number).max().unwrap_or(0);
    let bits: u16 = match kind {
        SegKind::Binary => 1,
        SegKind::Labelmap if largest <= 255 => 8,
        SegKind::Labelmap => 16,
    };
    let (date, time) = now_utc();
    let mut obj = InMemDicomObject::new_empty();
    let number = series.number.to_string();
    let new_series = NewSeries {
        sop_class_uid: kind.sop_class_uid(),
        modality: "SEG",
        description: &series.description,
        series_number: &number,
    };
    put_new_series(&mut obj, src, &new_series, &date, &time);
    let iop: Vec<String> = src.orientation.iter().map(|&v| ds(v)).collect();
    let segmentation_type = match kind {
        SegKind::Binary => "BINARY",
        SegKind::Labelmap => "LABELMAP",
    };
    for e in [
        texts(tags::IMAGE_TYPE, VR::CS, vec!["DERIVED".into(), "PRIMARY".into()]),
        text(tags::CONTENT_DATE, VR::DA, &date),
        text(tags::CONTENT_TIME, VR::TM, &time),
        // Enhanced General Equipment (the rest in put_new_series).
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        // Segmentation Image.
        text(tags::CONTENT_LABEL, VR::CS, "EDGESEG"),
        text(tags::CONTENT_DESCRIPTION, VR::LO, "Automatic segmentation (not for clinical use unless cleared)"),
        text(tags::CONTENT_CREATOR_NAME, VR::PN, ""),
        text(tags::SEGMENTATION_TYPE, VR::CS, segmentation_type),
        // The radiomics ROIs (peri-tumoural rings, the whole organ) overlap
        // the lesions and classes.
        text(tags::SEGMENTS_OVERLAP, VR::CS, if set.overlapping() { "UNDEFINED" } else { "NO" }),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        // Image Pixel.
        us(tags::SAMPLES_PER_PIXEL, &[1]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, &[ny as u16]),
        us(tags::COLUMNS, &[nx as u16]),
        us(tags::BITS_ALLOCATED, &[bits]),
        us(tags::BITS_STORED, &[bits]),
        us(tags::HIGH_BIT, &[bits - 1]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
    ] {
        obj.put(e);
    }
    if kind == SegKind::Labelmap {
        // The background: pixel value 0, described as segment 0 below.
        obj.put(us(tags::PIXEL_PADDING_VALUE, &[0]));
    }
    // Segment Sequence.
    let algo_item = item(vec![
        seq(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, vec![AI.item()]),
        text(tags::ALGORITHM_NAME, VR::LO, "edgeseg"),
        text(tags::ALGORITHM_VERSION, VR::LO, crate::version()),
        text(tags::ALGORITHM_PARAMETERS, VR::LT, &algo.parameters()),
    ]);
    let mut segments = Vec::with_capacity(set.segments.len() + 1);
    if kind == SegKind::Labelmap {
        // Every pixel value a label map holds is a described segment: 0 too.
        segments.push(item(vec![
            us(tags::SEGMENT_NUMBER, &[0]),
            text(tags::SEGMENT_LABEL, VR::LO, "Background"),
            text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
            text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "edgeseg"),
            seq(tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![algo_item.clone()]),
            seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![BACKGROUND.item()]),
            seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![BACKGROUND.item()]),
            us(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &cielab([0, 0, 0])),
        ]));
    }
    segments.extend(set.segments.iter().map(|s| {
        let mut tracking = Vec::new();
        if let super::segments::SegmentKind::Lesion(n) = s.kind {
            tracking.push(text(tags::TRACKING_ID, VR::UT, &s.label));
            tracking.push(text(tags::TRACKING_UID, VR::UI, &super::segments::tracking_uid(&src.study_uid, n)));
        }
        let mut e = vec![
            us(tags::SEGMENT_NUMBER, &[s.number]),
            text(tags::SEGMENT_LABEL, VR::LO, &s.label),
            text(tags::SEGMENT_DESCRIPTION, VR::ST, &format!("{} ({})", s.label, algo.model_name)),
            text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
            text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "edgeseg"),
            seq(tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![algo_item.clone()]),
            seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![s.category.item()]),
            seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![s.property.item()]),
            us(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &cielab(s.rgb)),
        ];
        e.extend(tracking);
        item(e)
    }));
    obj.put(seq(tags::SEGMENT_SEQUENCE, segments));
    // A private code (the radiomics ROIs' "Peritumoral region") is described
    // in the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.2).
    if set.segments.iter().any(|s| s.property.scheme == super::segments::PERITUMORAL.scheme) {
        obj.put(seq(
            tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
            vec![item(vec![
                text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, super::segments::PERITUMORAL.scheme),
                text(tags::CODING_SCHEME_NAME, VR::ST, "edgeseg local codes"),
                text(tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "edgeseg"),
            ])],
        ));
    }
    // Common Instance Reference: the source series and its instances.
    let instances = src
        .instances()
        .into_iter()
        .map(|(class, uid)| {
            item(vec![
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid),
            ])
        })
        .collect();
    obj.put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &src.series_uid),
        ])],
    ));
    // Multi-frame Dimension: segment number (BINARY only: a label map's
    // frame holds every segment), then position.
    let dim_uid = new_uid();
    obj.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(vec![text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)])],
    ));
    // A label map's frames are consecutive slices: a 3D volume where the
    // slices are evenly spaced (not where the grid was resampled from them).
    if kind == SegKind::Binary || src.resampled.is_none() {
        obj.put(text(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"));
    }
    let dim = |pointer, group, label: &str| {
        item(vec![
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags(std::iter::once(pointer).collect()),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags(std::iter::once(group).collect()),
            ),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let position = dim(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "ImagePositionPatient");
    let dimensions = match kind {
        SegKind::Binary => vec![
            dim(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "ReferencedSegmentNumber"),
            position,
        ],
        SegKind::Labelmap => vec![position],
    };
    obj.put(seq(tags::DIMENSION_INDEX_SEQUENCE, dimensions));
    // Shared functional groups: pixel measures, orientation.
    let pixel_spacing = vec![ds(g.spacing[1]), ds(g.spacing[0])];
    let mut measures =
        vec![texts(tags::PIXEL_SPACING, VR::DS, pixel_spacing), text(tags::SLICE_THICKNESS, VR::DS, &ds(g.spacing[2]))];
    // Source slices of a resampled series are not evenly spaced: no spacing
    // is claimed; each frame has its own position.
    if src.resampled.is_none() {
        measures.push(text(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing[2])));
    }
    obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![
            seq(tags::PIXEL_MEASURES_SEQUENCE, vec![item(measures)]),
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(vec![texts(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, iop)])],
            ),
        ])],
    ));
    // Frames: per-frame groups and pixels.
    let plane = nx * ny;
    let mut frames = Vec::new();
    let pixels = match kind {
        SegKind::Binary => {
            let mut bits = BitPacker::default();
            for s in &set.segments {
                for &k in &s.slices {
                    let mut groups = frame_groups(&src.slices[k], &[u32::from(s.number), k as u32 + 1]);
                    groups.push(seq(
                        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                        vec![item(vec![us(tags::REFERENCED_SEGMENT_NUMBER, &[s.number])])],
                    ));
                    frames.push(item(groups));
                    let mask = set.mask(s, k);
                    debug_assert_eq!(mask.len(), plane);
                    for &m in &mask {
                        bits.push(m != 0);
                    }
                }
            }
            PrimitiveValue::U8(bits.finish().into())
        }
        SegKind::Labelmap => {
            // The slices from the first to the last that holds a segment.
            let first = set.segments.iter().filter_map(|s| s.slices.first()).min().copied().unwrap_or(0);
            let last = set.segments.iter().filter_map(|s| s.slices.last()).max().copied().unwrap_or(0);
            let numbers = set.numbering();
            let mut values: Vec<u16> = Vec::with_capacity((last + 1 - first) * plane);
            for (f, k) in (first..=last).enumerate() {
                frames.push(item(frame_groups(&src.slices[k], &[f as u32 + 1])));
                values.extend(set.numbers(k, &numbers));
            }
            if bits == 8 {
                let mut bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
                if !bytes.len().is_multiple_of(2) {
                    bytes.push(0);
                }
                PrimitiveValue::U8(bytes.into())
            } else {
                PrimitiveValue::U16(values.into())
            }
        }
    };
    let count = frames.len();
    obj.put(text(tags::NUMBER_OF_FRAMES, VR::IS, &count.to_string()));
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames));
    let vr = if bits == 16 { VR::OW } else { VR::OB };
    obj.put(DataElement::new(tags::PIXEL_DATA, vr, pixels));
    super::dicom_refs::write_part10(path, obj)?;
    Ok(count)
}

/// The per-frame groups both kinds share for a frame on source slice `sl`:
/// Derivation Image (its source image), Frame Content (the dimension index
/// values) and Plane Position (the slice's own position).
fn frame_groups(sl: &SourceSlice, index: &[u32]) -> Vec<DataElement<InMemDicomObject>> {
    let mut source = vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &sl.sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &sl.sop_instance_uid),
    ];
    if let Some(f) = sl.frame {
        source.push(text(tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string()));
    }
    source.push(seq(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![SOURCE_FOR_PROCESSING.item()]));
    // Same grid as the source: a pixel of the frame is the source's pixel.
    source.push(text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
    vec![
        seq(
            tags::DERIVATION_IMAGE_SEQUENCE,
            vec![item(vec![
                seq(tags::SOURCE_IMAGE_SEQUENCE, vec![item(source)]),
                seq(tags::DERIVATION_CODE_SEQUENCE, vec![SEGMENTATION.item()]),
            ])],
        ),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32(index.iter().copied().collect()),
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![item(vec![texts(tags::IMAGE_POSITION_PATIENT, VR::DS, sl.position.iter().map(|&v| ds(v)).collect())])],
        ),
    ]
}

/// Packs pixels one bit each, the first pixel in the least significant bit
/// of the first byte, frames back to back (PS3.5 8.1.1); padded to even length.
#[derive(Default)]
struct BitPacker {
    bytes: Vec<u8>,
    n: usize,
}

impl BitPacker {
    fn push(&mut self, on: bool) {
        if self.n.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if on && let Some(b) = self.bytes.last_mut() {
            *b |= 1 << (self.n % 8);
        }
        self.n += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        if !self.bytes.len().is_multiple_of(2) {
            self.bytes.push(0);
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_lsb_first_across_frames_and_pad_to_even() {
        let mut b = BitPacker::default();
        for i in 0..10 {
            b.push(i == 0 || i == 7 || i == 9);
        }
        assert_eq!(b.finish(), vec![0b1000_0001, 0b0000_0010]);
        let mut b = BitPacker::default();
        b.push(true);
        assert_eq!(b.finish(), vec![1, 0]);
    }
}
