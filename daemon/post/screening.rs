//! The CT screening profile of seed 002 (Zhu et al., Segmentation for
//! Classification of pancreatic NETs in dual-phase CT): keep a predicted
//! component when it is larger than 20% of the largest one or lies within 27
//! voxels of it; a phase is abnormal with ≥ 40 tumour voxels or ≥ 500
//! dilated-duct voxels; a study is abnormal if either phase is (arterial OR
//! venous). Every number is a rule value with the paper's default.

use serde::{Deserialize, Serialize};

use super::edt::squared_distance;
use crate::gpu::{Backend, Connectivity, GpuError};
use crate::volume::Volume;

/// Rules of the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScreeningRules {
    /// Class of the tumour (the paper: 2; 1 is pancreas).
    pub tumour_label: u8,
    /// Class of the dilated pancreatic duct (the paper: 3).
    pub duct_label: u8,
    /// Keep components larger than this fraction of the largest.
    pub keep_fraction_of_largest: f64,
    /// …or closer than this many voxels to the largest.
    pub keep_within_voxels: f64,
    /// A phase is abnormal with at least this many tumour voxels…
    pub tumour_voxels: u64,
    /// …or at least this many dilated-duct voxels.
    pub duct_voxels: u64,
    /// Connectivity of components.
    pub connectivity: u32,
}

impl Default for ScreeningRules {
    fn default() -> Self {
        Self {
            tumour_label: 2,
            duct_label: 3,
            keep_fraction_of_largest: 0.2,
            keep_within_voxels: 27.0,
            tumour_voxels: 40,
            duct_voxels: 500,
            connectivity: 26,
        }
    }
}

/// The verdict on one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseVerdict {
    /// Predicted components (all foreground classes together).
    pub components: u32,
    /// Components removed by the size/distance rule.
    pub components_removed: u32,
    /// Tumour voxels after the rule.
    pub tumour_voxels: u64,
    /// Dilated-duct voxels after the rule.
    pub duct_voxels: u64,
    /// Abnormal?
    pub abnormal: bool,
    /// Which rule fired ("tumour ≥ 40 voxels", "duct ≥ 500 voxels"), if any.
    pub rule: Option<String>,
}

/// The verdict on a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyVerdict {
    /// Abnormal if any phase is.
    pub abnormal: bool,
    /// The arterial phase, where present.
    pub arterial: Option<PhaseVerdict>,
    /// The venous phase, where present.
    pub venous: Option<PhaseVerdict>,
    /// Which phase(s) and rule made it abnormal.
    pub reason: Option<String>,
}

/// Applies the component rule to a phase's class map (in place) and counts.
pub fn screen_phase(
    backend: &Backend,
    classes: &mut Volume<u8>,
    rules: &ScreeningRules,
) -> Result<PhaseVerdict, GpuError> {
    let g = classes.geometry.clone();
    let conn = Connectivity::from_number(rules.connectivity)
        .ok_or_else(|| GpuError::Invalid(format!("connectivity {}", rules.connectivity)))?;
    let fg: Vec<u8> = classes.data.iter().map(|&c| u8::from(c != 0)).collect();
    let labels = backend.label(&fg, g.dims, conn)?;
    let mut removed = 0;
    if labels.count > 1 {
        let zeros = vec![0f32; fg.len()];
        let stats = backend.stats(&labels, &zeros, g.dims)?;
        let (largest_i, largest) = stats
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.voxels)
            .map(|(i, s)| (i as u32 + 1, s.voxels))
            .unwrap_or((0, 0));
        let seed: Vec<bool> = labels.data.iter().map(|&l| l == largest_i).collect();
        let d2 = squared_distance(&seed, g.dims);
        // Smallest distance of each component to the largest one.
        let mut nearest = vec![f64::INFINITY; labels.count as usize + 1];
        for (&l, &d) in labels.data.iter().zip(&d2) {
            if l != 0 && d < nearest[l as usize] {
                nearest[l as usize] = d;
            }
        }
        let limit2 = rules.keep_within_voxels * rules.keep_within_voxels;
        let keep: Vec<bool> = (0..=labels.count as usize)
            .map(|l| {
                l != 0
                    && (l as u32 == largest_i
                        || stats[l - 1].voxels as f64 > rules.keep_fraction_of_largest * largest as f64
                        || nearest[l] < limit2)
            })
            .collect();
        removed = keep.iter().skip(1).filter(|k| !**k).count() as u32;
        for (c, &l) in classes.data.iter_mut().zip(&labels.data) {
            if !keep[l as usize] {
                *c = 0;
            }
        }
    }
    let tumour = classes.data.iter().filter(|&&c| c == rules.tumour_label).count() as u64;
    let duct = classes.data.iter().filter(|&&c| c == rules.duct_label).count() as u64;
    let rule = if tumour >= rules.tumour_voxels {
        Some(format!("tumour {tumour} ≥ {} voxels", rules.tumour_voxels))
    } else if duct >= rules.duct_voxels {
        Some(format!("dilated duct {duct} ≥ {} voxels", rules.duct_voxels))
    } else {
        None
    };
    Ok(PhaseVerdict {
        components: labels.count,
        components_removed: removed,
        tumour_voxels: tumour,
        duct_voxels: duct,
        abnormal: rule.is_some(),
        rule,
    })
}

/// Arterial OR venous.
pub fn fuse(arterial: Option<PhaseVerdict>, venous: Option<PhaseVerdict>) -> StudyVerdict {
    let mut reasons = Vec::new();
    for (name, v) in [("arterial", &arterial), ("venous", &venous)] {
        if let Some(PhaseVerdict { abnormal: true, rule: Some(r), .. }) = v {
            reasons.push(format!("{name}: {r}"));
        }
    }
    StudyVerdict {
        abnormal: !reasons.is_empty(),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        arterial,
        venous,
    }
}
