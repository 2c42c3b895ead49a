//! DICOM Segmentation (BINARY) of a study's segments on the reference series:
//! one multi-frame object, frames only for slices that hold a segment
//! (segment by segment, slices in the source's order), each frame referencing
//! its source image, bit-packed 1-bit pixels, explicit VR little endian.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dicom_refs::{
    Code, DicomExportError, NewSeries, SourceRefs, check_slices, ds, item, new_uid, now_utc, put_new_series, seq, text,
    texts, us,
};
use super::segments::{SegmentSet, cielab};

/// Segmentation Storage.
pub const SEG_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.66.4";

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

/// Writes `seg.dcm` for `set` (at least one segment) on the reference series
/// `src`, as series `series`. Returns the number of frames written.
pub fn write(
    path: &Path,
    src: &SourceRefs,
    set: &SegmentSet,
    algo: &Algorithm,
    series: &super::OutputSeries,
) -> Result<usize, DicomExportError> {
    let g = set.geometry();
    let [nx, ny, nz] = g.dims;
    check_slices(src, nz)?;
    if set.segments.is_empty() {
        return Err(DicomExportError::Mismatch("a segmentation needs at least one segment".into()));
    }
    let (date, time) = now_utc();
    let mut obj = InMemDicomObject::new_empty();
    let number = series.number.to_string();
    let new_series = NewSeries {
        sop_class_uid: SEG_SOP_CLASS_UID,
        modality: "SEG",
        description: &series.description,
        series_number: &number,
    };
    put_new_series(&mut obj, src, &new_series, &date, &time);
    let iop: Vec<String> = src.orientation.iter().map(|&v| ds(v)).collect();
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
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        // The radiomics ROIs (peri-tumoural rings, the whole organ) overlap
        // the lesions and classes.
        text(tags::SEGMENTS_OVERLAP, VR::CS, if set.overlapping() { "UNDEFINED" } else { "NO" }),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        // Image Pixel.
        us(tags::SAMPLES_PER_PIXEL, &[1]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, &[ny as u16]),
        us(tags::COLUMNS, &[nx as u16]),
        us(tags::BITS_ALLOCATED, &[1]),
        us(tags::BITS_STORED, &[1]),
        us(tags::HIGH_BIT, &[0]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
    ] {
        obj.put(e);
    }
    // Segment Sequence.
    let algo_item = item(vec![
        seq(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, vec![AI.item()]),
        text(tags::ALGORITHM_NAME, VR::LO, "edgeseg"),
        text(tags::ALGORITHM_VERSION, VR::LO, crate::version()),
        text(tags::ALGORITHM_PARAMETERS, VR::LT, &algo.parameters()),
    ]);
    let segments = set
        .segments
        .iter()
        .map(|s| {
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
        })
        .collect();
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
    // Multi-frame Dimension: segment number, then position.
    let dim_uid = new_uid();
    obj.put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(vec![text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)])],
    ));
    obj.put(text(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"));
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
    obj.put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "ReferencedSegmentNumber"),
            dim(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "ImagePositionPatient"),
        ],
    ));
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
    // Frames: per-frame groups and packed bits.
    let plane = nx * ny;
    let mut frames = Vec::new();
    let mut bits = BitPacker::default();
    for s in &set.segments {
        for &k in &s.slices {
            let sl = &src.slices[k];
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
            frames.push(item(vec![
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
                        PrimitiveValue::U32([u32::from(s.number), k as u32 + 1].into()),
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![texts(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        sl.position.iter().map(|&v| ds(v)).collect(),
                    )])],
                ),
                seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![us(tags::REFERENCED_SEGMENT_NUMBER, &[s.number])])],
                ),
            ]));
            let mask = set.mask(s, k);
            debug_assert_eq!(mask.len(), plane);
            for &m in &mask {
                bits.push(m != 0);
            }
        }
    }
    let count = frames.len();
    obj.put(text(tags::NUMBER_OF_FRAMES, VR::IS, &count.to_string()));
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames));
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bits.finish().into())));
    super::dicom_refs::write_part10(path, obj)?;
    Ok(count)
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
