//! The segments both DICOM outputs carry, in one order: "Lesion 1" … (the
//! lesion instance map's values, which are the report's lesion numbers), then
//! one segment per other class of the label map that has voxels (liver, …),
//! each with SNOMED CT codes and one display colour from `colour`, the
//! palette SEG and RTSTRUCT (and pictures) share.

use super::dicom_refs::Code;
use crate::volume::Volume;

/// What a segment is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Voxels of this value in the lesion instance map.
    Lesion(u32),
    /// Voxels of this class in the label map.
    Class(u8),
    /// Voxels of the set's extra ROI with this index (radiomics ROIs).
    Roi(usize),
}

/// A radiomics ROI written as a segment of its own after the lesions and
/// classes (the peri-tumoural rings, the whole organ): it may overlap them.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraRoi {
    /// SegmentLabel / ROIName ("Peritumoral region, lesion 1").
    pub label: String,
    /// Segmented Property Category.
    pub category: Code,
    /// Segmented Property Type.
    pub property: Code,
    /// RT ROI Interpreted Type ("ORGAN", or empty).
    pub interpreted_type: &'static str,
    /// Display colour.
    pub rgb: [u8; 3],
    /// 1 inside, on the label map's grid.
    pub mask: Volume<u8>,
}

/// "Peritumoral region": SNOMED CT has no concept for a ring of tissue
/// around a tumour, so the type is edgeseg's own (a private coding scheme,
/// PS3.16 8.2: designators beginning with "99").
pub const PERITUMORAL: Code = Code { value: "PERITUMORAL", scheme: "99EDGESEG", meaning: "Peritumoral region" };

/// The radiomics ROIs that are no lesion or class segment already: each
/// peri-tumoural ring, and the whole organ where it takes the lesions
/// touching it in (organ-minus-tumour is the organ's class segment).
pub fn radiomics_rois(
    rois: &[crate::radiomics::roi::RoiMask],
    organ: Option<&str>,
    like: &Volume<u8>,
    minus_tumour: bool,
) -> Vec<ExtraRoi> {
    use crate::radiomics::roi::RoiKind;
    let mut out = Vec::new();
    for r in rois {
        let mask = Volume { geometry: like.geometry.clone(), data: r.mask.iter().map(|&m| u8::from(m)).collect() };
        match (r.kind, r.lesion) {
            (RoiKind::Peritumoral, Some(n)) => out.push(ExtraRoi {
                label: format!("Peritumoral region, lesion {n}"),
                category: TISSUE,
                property: PERITUMORAL,
                interpreted_type: "",
                rgb: super::palette::lesion_colour(n).map(|c| ((u16::from(c) + 255) / 2) as u8),
                mask,
            }),
            (RoiKind::Peritumoral, None) => out.push(ExtraRoi {
                label: "Peritumoral region, all lesions".into(),
                category: TISSUE,
                property: PERITUMORAL,
                interpreted_type: "",
                rgb: [240, 230, 140],
                mask,
            }),
            (RoiKind::Organ, _) if !minus_tumour => {
                let name = organ.unwrap_or("organ");
                let (category, property) = class_entry(name).map_or((TISSUE, TISSUE), |e| (ANATOMICAL, e.1));
                out.push(ExtraRoi {
                    label: lo(&format!("{name}, whole organ with its lesions")),
                    category,
                    property,
                    interpreted_type: "ORGAN",
                    rgb: colour(SegmentKind::Class(0), name),
                    mask,
                });
            }
            _ => {}
        }
    }
    out
}

/// One segment (SEG) / ROI (RTSTRUCT).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// 1-based number (SegmentNumber, ROINumber).
    pub number: u16,
    /// "Lesion 3", "liver".
    pub label: String,
    /// Where its voxels are.
    pub kind: SegmentKind,
    /// Segmented Property Category.
    pub category: Code,
    /// Segmented Property Type.
    pub property: Code,
    /// Display colour (sRGB).
    pub rgb: [u8; 3],
    /// The slices k holding at least one voxel, ascending.
    pub slices: Vec<usize>,
}

/// SNOMED CT "Morphologically abnormal structure".
pub const ABNORMAL: Code = Code { value: "49755003", scheme: "SCT", meaning: "Morphologically abnormal structure" };
/// SNOMED CT "Neoplasm".
pub const NEOPLASM: Code = Code { value: "108369006", scheme: "SCT", meaning: "Neoplasm" };
/// SNOMED CT "Anatomical structure".
pub const ANATOMICAL: Code = Code { value: "123037004", scheme: "SCT", meaning: "Anatomical structure" };
/// SNOMED CT "Tissue": the category and type of a class edgeseg has no code for.
pub const TISSUE: Code = Code { value: "85756007", scheme: "SCT", meaning: "Tissue" };

/// Known class names (dataset.json labels, lower case) → SNOMED CT type and
/// a display colour (3D Slicer's terminology colours where it has one).
const CLASSES: &[(&str, Code, [u8; 3])] = &[
    ("liver", Code { value: "10200004", scheme: "SCT", meaning: "Liver" }, [221, 130, 101]),
    ("spleen", Code { value: "78961009", scheme: "SCT", meaning: "Spleen" }, [157, 108, 162]),
    ("kidney", Code { value: "64033007", scheme: "SCT", meaning: "Kidney" }, [185, 102, 83]),
    ("urinary bladder", Code { value: "89837001", scheme: "SCT", meaning: "Urinary bladder" }, [222, 154, 132]),
    ("bladder", Code { value: "89837001", scheme: "SCT", meaning: "Urinary bladder" }, [222, 154, 132]),
    ("brain", Code { value: "12738006", scheme: "SCT", meaning: "Brain" }, [250, 250, 225]),
    ("heart", Code { value: "80891009", scheme: "SCT", meaning: "Heart" }, [206, 110, 84]),
    ("lung", Code { value: "39607008", scheme: "SCT", meaning: "Lung" }, [197, 165, 145]),
];

/// The display colour of a segment: lesion n takes the one lesion palette's
/// colour (`palette::lesion_colour`, as in mip.png); a class its organ
/// colour, or grey-blue.
pub fn colour(kind: SegmentKind, class_name: &str) -> [u8; 3] {
    match kind {
        SegmentKind::Lesion(n) => super::palette::lesion_colour(n),
        SegmentKind::Class(_) | SegmentKind::Roi(_) => class_entry(class_name).map(|c| c.2).unwrap_or([128, 174, 200]),
    }
}

fn class_entry(name: &str) -> Option<&'static (&'static str, Code, [u8; 3])> {
    let n = name.trim().to_ascii_lowercase().replace('_', " ");
    CLASSES.iter().find(|c| c.0 == n)
}

/// The TrackingUID of lesion `n` of a study: `2.25.` and 128 bits of
/// SHA-256(study UID, `n`) (UUID version-8 bits set), the same in every
/// version of the study's seg.dcm, so a viewer follows the lesion across
/// edits even where its SegmentNumber moves (SEG numbers segments 1, 2, 3…
/// without gaps; the lesion's own number is in SegmentLabel and TrackingID).
pub fn tracking_uid(study_uid: &str, n: u32) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("edgeseg lesion {study_uid} {n}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// sRGB to DICOM's scaled CIELab (D65): L 0..100 → 0..65535, a and b
/// −128..127 → 0..65535 (PS3.3 C.10.7.1.1).
pub fn cielab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = rgb.map(|c| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    });
    let x = 0.4124564 * lin[0] + 0.3575761 * lin[1] + 0.1804375 * lin[2];
    let y = 0.2126729 * lin[0] + 0.7151522 * lin[1] + 0.0721750 * lin[2];
    let z = 0.0193339 * lin[0] + 0.1191920 * lin[1] + 0.9503041 * lin[2];
    let f = |t: f64| if t > 216.0 / 24389.0 { t.cbrt() } else { (24389.0 / 27.0 * t + 16.0) / 116.0 };
    let (fx, fy, fz) = (f(x / 0.95047), f(y), f(z / 1.08883));
    let (l, a, b) = (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz));
    let scale = |v: f64, lo: f64, hi: f64| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0).round() as u16;
    [scale(l, 0.0, 100.0), scale(a, -128.0, 127.0), scale(b, -128.0, 127.0)]
}

/// Class names that mean a lesion (without an instance map, e.g. the CT
/// radiomics profile, such a class is one segment coded as a neoplasm).
fn is_lesion_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["lesion", "tumor", "tumour", "neoplasm", "metasta"].iter().any(|w| n.contains(w))
}

/// A name as a LO value: at most 64 characters, no backslash or control character.
fn lo(name: &str) -> String {
    let s: String = name.chars().map(|c| if c == '\\' || c.is_control() { '_' } else { c }).take(64).collect();
    if s.trim().is_empty() { "class".into() } else { s }
}

/// A study's segments and the maps their voxels come from.
#[derive(Debug)]
pub struct SegmentSet<'a> {
    /// Segments in output order.
    pub segments: Vec<Segment>,
    labels: &'a Volume<u8>,
    lesions: Option<&'a Volume<u32>>,
    extra: &'a [ExtraRoi],
}

impl<'a> SegmentSet<'a> {
    /// Lesion segments from the instance map (values 1..=max, in order), then
    /// one segment per class of `classes` (value, name) that has voxels, other
    /// than background (0) and the lesion class when there is an instance map.
    /// Without one, the lesion class (or a class named like a lesion) is one
    /// segment with the lesion codes.
    /// Empty lesion numbers and empty classes get no segment. At most 65535
    /// segments (SegmentNumber is 16-bit); further ones are dropped.
    pub fn new(
        labels: &'a Volume<u8>,
        lesions: Option<&'a Volume<u32>>,
        lesion_label: Option<u8>,
        classes: &[(u8, String)],
    ) -> Self {
        let [nx, ny, nz] = labels.geometry.dims;
        let plane = nx * ny;
        let mut segments = Vec::new();
        let mut push = |kind: SegmentKind, label: String, category: Code, property: Code, name: &str, slices| {
            if segments.len() < usize::from(u16::MAX) {
                let number = segments.len() as u16 + 1;
                segments.push(Segment { number, label, kind, category, property, rgb: colour(kind, name), slices });
            }
        };
        if let Some(l) = lesions {
            let count = l.data.iter().copied().max().unwrap_or(0) as usize;
            let mut present: Vec<Vec<usize>> = vec![Vec::new(); count + 1];
            let mut seen = vec![usize::MAX; count + 1];
            for k in 0..nz {
                for &v in &l.data[k * plane..(k + 1) * plane] {
                    let v = v as usize;
                    if v != 0 && seen[v] != k {
                        seen[v] = k;
                        present[v].push(k);
                    }
                }
            }
            for (n, slices) in present.into_iter().enumerate().skip(1) {
                if !slices.is_empty() {
                    push(SegmentKind::Lesion(n as u32), format!("Lesion {n}"), ABNORMAL, NEOPLASM, "", slices);
                }
            }
        }
        let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); 256];
        for k in 0..nz {
            let mut here = [false; 256];
            for &c in &labels.data[k * plane..(k + 1) * plane] {
                here[usize::from(c)] = true;
            }
            for (c, &h) in here.iter().enumerate() {
                if h {
                    per_class[c].push(k);
                }
            }
        }
        let mut classes: Vec<&(u8, String)> = classes.iter().collect();
        classes.sort_by_key(|c| c.0);
        for (value, name) in classes {
            let skip = *value == 0 || (lesions.is_some() && Some(*value) == lesion_label);
            let slices = std::mem::take(&mut per_class[usize::from(*value)]);
            if skip || slices.is_empty() {
                continue;
            }
            let lesion_class = Some(*value) == lesion_label || is_lesion_name(name);
            let (category, property) = match (class_entry(name), lesion_class) {
                (_, true) => (ABNORMAL, NEOPLASM),
                (Some(e), false) => (ANATOMICAL, e.1),
                (None, false) => (TISSUE, TISSUE),
            };
            push(SegmentKind::Class(*value), lo(name), category, property, name, slices);
        }
        Self { segments, labels, lesions, extra: &[] }
    }

    /// The set with the extra ROIs appended as segments (those with voxels).
    pub fn with_rois(mut self, rois: &'a [ExtraRoi]) -> Self {
        let plane = self.labels.geometry.dims[0] * self.labels.geometry.dims[1];
        for (i, r) in rois.iter().enumerate() {
            if self.segments.len() >= usize::from(u16::MAX) || r.mask.data.len() != self.labels.data.len() {
                continue;
            }
            let slices: Vec<usize> = (0..self.labels.geometry.dims[2])
                .filter(|&k| r.mask.data[k * plane..(k + 1) * plane].iter().any(|&v| v != 0))
                .collect();
            if slices.is_empty() {
                continue;
            }
            let number = self.segments.len() as u16 + 1;
            self.segments.push(Segment {
                number,
                label: r.label.clone(),
                kind: SegmentKind::Roi(i),
                category: r.category,
                property: r.property,
                rgb: r.rgb,
                slices,
            });
        }
        self.extra = rois;
        self
    }

    /// Whether segments may overlap (extra ROIs overlap the lesions' and classes').
    pub fn overlapping(&self) -> bool {
        self.segments.iter().any(|s| matches!(s.kind, SegmentKind::Roi(_)))
    }

    /// The RT ROI Interpreted Type of a segment.
    pub fn interpreted_type(&self, segment: &Segment) -> &'static str {
        match segment.kind {
            SegmentKind::Lesion(_) => "GTV",
            SegmentKind::Class(_) if segment.property == NEOPLASM => "GTV",
            SegmentKind::Class(_) => "ORGAN",
            SegmentKind::Roi(i) => self.extra.get(i).map_or("", |r| r.interpreted_type),
        }
    }

    /// The geometry the masks lie on.
    pub fn geometry(&self) -> &crate::volume::Geometry {
        &self.labels.geometry
    }

    /// The segment's mask on slice k (1 inside, 0 outside), i fastest.
    pub fn mask(&self, segment: &Segment, k: usize) -> Vec<u8> {
        match segment.kind {
            SegmentKind::Lesion(n) => match self.lesions {
                Some(l) => l.slice(k).iter().map(|&v| u8::from(v == n)).collect(),
                None => vec![0; self.labels.slice(k).len()],
            },
            SegmentKind::Class(c) => self.labels.slice(k).iter().map(|&v| u8::from(v == c)).collect(),
            SegmentKind::Roi(i) => match self.extra.get(i) {
                Some(r) => r.mask.slice(k).iter().map(|&v| u8::from(v != 0)).collect(),
                None => vec![0; self.labels.slice(k).len()],
            },
        }
    }
}

/// Which segment number each map value takes (see [`SegmentSet::numbering`]).
#[derive(Debug, Clone)]
pub struct Numbering {
    /// Lesion instance value → segment number (0: none).
    lesion: Vec<u16>,
    /// Class value → segment number (0: none).
    class: [u16; 256],
}

impl SegmentSet<'_> {
    /// The segment number of every lesion value and class value that has a
    /// segment, for [`SegmentSet::numbers`].
    pub fn numbering(&self) -> Numbering {
        let mut n = Numbering { lesion: Vec::new(), class: [0; 256] };
        for s in &self.segments {
            match s.kind {
                SegmentKind::Lesion(v) => {
                    let v = v as usize;
                    if n.lesion.len() <= v {
                        n.lesion.resize(v + 1, 0);
                    }
                    n.lesion[v] = s.number;
                }
                SegmentKind::Class(c) => n.class[usize::from(c)] = s.number,
                // ROIs overlap; the pipeline writes such a set binary, never as a label map.
                SegmentKind::Roi(_) => {}
            }
        }
        n
    }

    /// Slice k as a label map (i fastest): each voxel the number of its
    /// segment, 0 where it has none. A voxel of a lesion segment takes the
    /// lesion's number; the segments do not overlap (with an instance map the
    /// lesion class has no segment of its own, and a lesion's voxels are
    /// lesion-class voxels), so every other voxel has at most its class's.
    pub fn numbers(&self, k: usize, numbering: &Numbering) -> Vec<u16> {
        let classes = self.labels.slice(k);
        match self.lesions {
            Some(l) => l
                .slice(k)
                .iter()
                .zip(classes)
                .map(|(&v, &c)| match numbering.lesion.get(v as usize) {
                    Some(&n) if n != 0 => n,
                    _ => numbering.class[usize::from(c)],
                })
                .collect(),
            None => classes.iter().map(|&c| numbering.class[usize::from(c)]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn geometry() -> Geometry {
        Geometry {
            dims: [4, 3, 3],
            spacing: [1.0, 1.0, 2.0],
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn lesions_first_then_classes_with_voxels() {
        let g = geometry();
        let mut labels = Volume::filled(g.clone(), 0u8);
        let mut lesions = Volume::filled(g.clone(), 0u32);
        // Lesion 1 on slice 2, lesion 2 on slices 0 and 1; liver (2) on slice 1; class 3 empty.
        for (k, n) in [(2, 1u32), (0, 2), (1, 2)] {
            let i = g.index(1, 1, k);
            lesions.data[i] = n;
            labels.data[i] = 1;
        }
        labels.data[g.index(3, 2, 1)] = 2;
        let classes = vec![(0, "background".into()), (1, "lesion".into()), (2, "liver".into()), (3, "spleen".into())];
        let set = SegmentSet::new(&labels, Some(&lesions), Some(1), &classes);
        let names: Vec<&str> = set.segments.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, ["Lesion 1", "Lesion 2", "liver"]);
        assert_eq!(set.segments[0].slices, [2]);
        assert_eq!(set.segments[1].slices, [0, 1]);
        assert_eq!(set.segments[2].slices, [1]);
        assert_eq!(set.segments[2].property.value, "10200004");
        assert_eq!(set.segments[0].property, NEOPLASM);
        assert_eq!(set.mask(&set.segments[1], 0).iter().filter(|&&m| m == 1).count(), 1);
        assert_eq!(set.segments.iter().map(|s| s.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn numbers_are_the_segment_numbers_of_lesions_then_classes() {
        let g = geometry();
        let mut labels = Volume::filled(g.clone(), 0u8);
        let mut lesions = Volume::filled(g.clone(), 0u32);
        // Lesion 4 (segment 1) and lesion 7 (segment 2) in class 1; liver (2, segment 3).
        for (i, n) in [(0, 4u32), (1, 7)] {
            let x = g.index(i, 0, 0);
            lesions.data[x] = n;
            labels.data[x] = 1;
        }
        labels.data[g.index(2, 0, 0)] = 2;
        labels.data[g.index(3, 0, 0)] = 3; // a class without a name: no segment
        let classes = vec![(0, "background".into()), (1, "lesion".into()), (2, "liver".into())];
        let set = SegmentSet::new(&labels, Some(&lesions), Some(1), &classes);
        let numbering = set.numbering();
        assert_eq!(&set.numbers(0, &numbering)[..4], &[1, 2, 3, 0]);
        assert!(set.numbers(1, &numbering).iter().all(|&v| v == 0));
        let without = SegmentSet::new(&labels, None, Some(1), &classes);
        assert_eq!(&without.numbers(0, &without.numbering())[..4], &[1, 1, 2, 0]);
    }

    #[test]
    fn without_an_instance_map_the_lesion_class_is_one_coded_segment() {
        let g = geometry();
        let mut labels = Volume::filled(g.clone(), 0u8);
        labels.data[g.index(0, 0, 0)] = 1;
        labels.data[g.index(1, 0, 0)] = 2;
        let classes = vec![(0, "background".into()), (1, "tumour".into()), (2, "kidney".into())];
        let set = SegmentSet::new(&labels, None, None, &classes);
        assert_eq!(set.segments.len(), 2);
        assert_eq!((set.segments[0].category, set.segments[0].property), (ABNORMAL, NEOPLASM));
        assert_eq!(set.segments[1].property.value, "64033007");
        assert_eq!(set.segments[1].category, ANATOMICAL);
    }

    #[test]
    fn tracking_uids_are_stable_per_study_and_lesion() {
        let a = tracking_uid("1.2.3", 4);
        assert_eq!(a, tracking_uid("1.2.3", 4));
        assert_ne!(a, tracking_uid("1.2.3", 5));
        assert_ne!(a, tracking_uid("1.2.4", 4));
        assert!(a.len() <= 64 && a.starts_with("2.25.") && !a[5..].starts_with('0'), "{a}");
    }

    #[test]
    fn class_names_become_valid_lo_values() {
        assert_eq!(lo("liver"), "liver");
        assert_eq!(lo("a\\b\nc"), "a_b_c");
        assert_eq!(lo(&"x".repeat(80)).len(), 64);
        assert_eq!(lo(" "), "class");
    }

    #[test]
    fn cielab_of_white_black_and_red() {
        assert_eq!(cielab([255, 255, 255])[0], 65535);
        assert_eq!(cielab([0, 0, 0]), [0, 32896, 32896]);
        let red = cielab([255, 0, 0]);
        // L* 53.24, a* 80.09, b* 67.20
        assert!((f64::from(red[0]) / 65535.0 * 100.0 - 53.24).abs() < 0.05);
        assert!((f64::from(red[1]) / 65535.0 * 255.0 - 128.0 - 80.09).abs() < 0.05);
        assert!((f64::from(red[2]) / 65535.0 * 255.0 - 128.0 - 67.20).abs() < 0.05);
    }
}
