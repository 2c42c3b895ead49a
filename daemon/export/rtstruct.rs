//! RT Structure Set of a study's segments on the reference series: one ROI
//! per segment (same numbers, names and colours as the SEG), CLOSED_PLANAR
//! contours per slice from marching squares (`contour.rs`) in patient LPS
//! coordinates computed from each slice's own ImagePositionPatient and the
//! series' orientation, so every contour lies exactly in its slice's plane,
//! oblique series included. Holes are separate contours of opposite
//! orientation; viewers combine the contours of one slice by the even-odd
//! rule (PS3.3 C.8.8.6.3).

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::contour;
use super::dicom_refs::{
    DicomExportError, NewSeries, SourceRefs, SourceSlice, check_slices, ds, item, now_utc, put_new_series, seq, text,
    texts,
};
use super::segments::SegmentSet;

/// RT Structure Set Storage.
pub const RTSTRUCT_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.481.3";
/// The SOP class RT Referenced Study items name (Study Component Management).
const STUDY_SOP_CLASS_UID: &str = "1.2.840.10008.3.1.2.3.1";
/// Series number given to edgeseg's RTSTRUCT series by `process` (an edit
/// writes the previous one + 1).
pub const RTSTRUCT_SERIES_NUMBER: &str = "902";

/// What `write` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtStructSummary {
    /// ROIs.
    pub rois: usize,
    /// Contours over all ROIs.
    pub contours: usize,
    /// Of which holes.
    pub holes: usize,
}

fn contour_image(sl: &SourceSlice) -> InMemDicomObject {
    let mut v = vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &sl.sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &sl.sop_instance_uid),
    ];
    if let Some(f) = sl.frame {
        v.push(text(tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string()));
    }
    item(v)
}

/// LPS position of pixel coordinate (x along the row, y down the column) on slice `sl`.
fn to_patient(src: &SourceRefs, spacing: [f64; 3], sl: &SourceSlice, p: [f64; 2]) -> [f64; 3] {
    let o = &src.orientation;
    [0, 1, 2].map(|a| sl.position[a] + p[0] * spacing[0] * o[a] + p[1] * spacing[1] * o[3 + a])
}

/// Writes `rtstruct.dcm` for `set` on the reference series `src`, as series
/// `series`.
pub fn write(
    path: &Path,
    src: &SourceRefs,
    set: &SegmentSet,
    series: &super::OutputSeries,
) -> Result<RtStructSummary, DicomExportError> {
    let g = set.geometry();
    let [nx, ny, nz] = g.dims;
    check_slices(src, nz)?;
    let (date, time) = now_utc();
    let mut obj = InMemDicomObject::new_empty();
    let number = series.number.to_string();
    let new_series = NewSeries {
        sop_class_uid: RTSTRUCT_SOP_CLASS_UID,
        modality: "RTSTRUCT",
        description: &series.description,
        series_number: &number,
    };
    put_new_series(&mut obj, src, &new_series, &date, &time);
    for e in [
        text(tags::OPERATORS_NAME, VR::PN, ""),
        text(tags::STRUCTURE_SET_LABEL, VR::SH, "EDGESEG"),
        text(tags::STRUCTURE_SET_NAME, VR::LO, "edgeseg"),
        text(tags::STRUCTURE_SET_DATE, VR::DA, &date),
        text(tags::STRUCTURE_SET_TIME, VR::TM, &time),
    ] {
        obj.put(e);
    }
    // Referenced Frame of Reference → Study → Series → every slice.
    let all_images = src.slices.iter().map(contour_image).collect();
    obj.put(seq(
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![item(vec![
            text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &src.frame_of_reference_uid),
            seq(
                tags::RT_REFERENCED_STUDY_SEQUENCE,
                vec![item(vec![
                    text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, STUDY_SOP_CLASS_UID),
                    text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &src.study_uid),
                    seq(
                        tags::RT_REFERENCED_SERIES_SEQUENCE,
                        vec![item(vec![
                            text(tags::SERIES_INSTANCE_UID, VR::UI, &src.series_uid),
                            seq(tags::CONTOUR_IMAGE_SEQUENCE, all_images),
                        ])],
                    ),
                ])],
            ),
        ])],
    ));
    let mut summary = RtStructSummary { rois: set.segments.len(), contours: 0, holes: 0 };
    let (mut rois, mut roi_contours, mut observations) = (Vec::new(), Vec::new(), Vec::new());
    for s in &set.segments {
        let number = s.number.to_string();
        rois.push(item(vec![
            text(tags::ROI_NUMBER, VR::IS, &number),
            text(tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, &src.frame_of_reference_uid),
            text(tags::ROI_NAME, VR::LO, &s.label),
            text(tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC"),
            text(tags::ROI_GENERATION_DESCRIPTION, VR::LO, "edgeseg"),
        ]));
        let mut contours = Vec::new();
        for &k in &s.slices {
            let sl = &src.slices[k];
            for c in contour::trace(&set.mask(s, k), nx, ny) {
                if c.points.len() < 3 {
                    continue;
                }
                summary.holes += usize::from(c.hole);
                let data: Vec<String> =
                    c.points.iter().flat_map(|&p| to_patient(src, g.spacing, sl, p)).map(ds).collect();
                contours.push(item(vec![
                    seq(tags::CONTOUR_IMAGE_SEQUENCE, vec![contour_image(sl)]),
                    text(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR"),
                    text(tags::NUMBER_OF_CONTOUR_POINTS, VR::IS, &c.points.len().to_string()),
                    text(tags::CONTOUR_NUMBER, VR::IS, &(contours.len() + 1).to_string()),
                    texts(tags::CONTOUR_DATA, VR::DS, data),
                ]));
            }
        }
        summary.contours += contours.len();
        let mut roi = vec![
            texts(tags::ROI_DISPLAY_COLOR, VR::IS, s.rgb.iter().map(|c| c.to_string()).collect()),
            text(tags::REFERENCED_ROI_NUMBER, VR::IS, &number),
        ];
        if !contours.is_empty() {
            roi.push(seq(tags::CONTOUR_SEQUENCE, contours));
        }
        roi_contours.push(item(roi));
        let interpreted = set.interpreted_type(s);
        observations.push(item(vec![
            text(tags::OBSERVATION_NUMBER, VR::IS, &number),
            text(tags::REFERENCED_ROI_NUMBER, VR::IS, &number),
            text(tags::RTROI_INTERPRETED_TYPE, VR::CS, interpreted),
            text(tags::ROI_INTERPRETER, VR::PN, ""),
        ]));
    }
    obj.put(seq(tags::STRUCTURE_SET_ROI_SEQUENCE, rois));
    obj.put(seq(tags::ROI_CONTOUR_SEQUENCE, roi_contours));
    obj.put(seq(tags::RTROI_OBSERVATIONS_SEQUENCE, observations));
    super::dicom_refs::write_part10(path, obj)?;
    Ok(summary)
}
