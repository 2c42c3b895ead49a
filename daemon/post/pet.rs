//! The PET/CT total-tumour profile (seed 003, Carlsen et al. 2022): body mask
//! from the PET, predictions outside it removed, components under 0.1 ml
//! removed, one label per lesion, lesion and patient figures (total tumour
//! volume, lowest lesion SUVmean), the liver reference and its threshold
//! (1.5·SUVmean + 2·SD; spleen 0.67·SUVmean + 2·SD), the semi-automatic
//! liver-threshold segmentation, and a lesion grown from a seed point.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::components::{centroids, keep_at_least, voxels_for_ml};
use crate::gpu::{Backend, Connectivity, GpuError, Labels, cpu};
use crate::volume::{Geometry, Volume};

/// Rules of the profile; every value has the seed's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PetRules {
    /// Class value of lesions in the model's label map.
    pub lesion_label: u8,
    /// Class value of the liver (the reference region), if the model has one.
    pub liver_label: Option<u8>,
    /// Class value of the spleen (reference when the liver is fully involved).
    pub spleen_label: Option<u8>,
    /// Remove predictions outside the body outlined from the PET.
    pub remove_outside_body: bool,
    /// SUV above which a voxel belongs to the body (before the largest
    /// component and hole filling).
    pub body_threshold_suv: f32,
    /// Components smaller than this are removed (seed 003: 0.1 ml).
    pub min_lesion_ml: f64,
    /// Connectivity of lesions (26 joins diagonal neighbours; autoPET's
    /// evaluation uses 18).
    pub connectivity: u32,
    /// SUVpeak sphere volume (PERCIST: 1 ml).
    pub suv_peak_ml: f64,
    /// Voxels shaved off the reference region's surface (partial volume).
    pub reference_erosion_voxels: u32,
    /// Liver threshold = a·SUVmean + b·SD.
    pub liver_threshold: [f64; 2],
    /// Spleen threshold = a·SUVmean + b·SD.
    pub spleen_threshold: [f64; 2],
}

impl Default for PetRules {
    fn default() -> Self {
        Self {
            lesion_label: 1,
            liver_label: Some(2),
            spleen_label: None,
            remove_outside_body: true,
            body_threshold_suv: 0.1,
            min_lesion_ml: 0.1,
            connectivity: 26,
            suv_peak_ml: 1.0,
            reference_erosion_voxels: 1,
            liver_threshold: [1.5, 2.0],
            spleen_threshold: [0.67, 2.0],
        }
    }
}

impl PetRules {
    fn conn(&self) -> Result<Connectivity, GpuError> {
        Connectivity::from_number(self.connectivity)
            .ok_or_else(|| GpuError::Invalid(format!("connectivity {} (6, 18 or 26)", self.connectivity)))
    }
}

/// One lesion's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesion {
    /// Number (label in the instance map), in raster order of first voxel.
    pub number: u32,
    /// Voxels.
    pub voxels: u64,
    /// Volume, ml.
    pub volume_ml: f64,
    /// Highest SUV.
    pub suv_max: f64,
    /// Mean SUV.
    pub suv_mean: f64,
    /// SD of SUV (population).
    pub suv_sd: f64,
    /// Mean SUV in a sphere of `suv_peak_ml` centred at the hottest voxel
    /// (all voxels whose centres lie inside, lesion or not).
    pub suv_peak: f64,
    /// Total lesion glycolysis / uptake: SUVmean × volume (ml).
    pub tlg: f64,
    /// Centroid, LPS mm.
    pub centroid_lps_mm: [f64; 3],
    /// Hottest voxel, LPS mm.
    pub max_lps_mm: [f64; 3],
    /// Bounding box, voxel indices (inclusive).
    pub bbox_min: [u32; 3],
    /// See `bbox_min`.
    pub bbox_max: [u32; 3],
}

/// A reference region (liver or spleen) and the threshold it gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    /// "liver" or "spleen".
    pub region: String,
    /// Voxels used (after erosion, lesions excluded).
    pub voxels: u64,
    /// Mean SUV.
    pub suv_mean: f64,
    /// SD of SUV.
    pub suv_sd: f64,
    /// a·mean + b·SD.
    pub threshold: f64,
}

/// Patient-level figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientFigures {
    /// Lesions kept.
    pub lesion_count: usize,
    /// Σ lesion volumes, ml.
    pub total_tumour_volume_ml: f64,
    /// Σ TLG.
    pub total_lesion_uptake: f64,
    /// Lowest lesion SUVmean (seed 003's prognostic figure).
    pub lowest_lesion_suv_mean: Option<f64>,
    /// Which lesion has it.
    pub lowest_suv_mean_lesion: Option<u32>,
    /// Highest lesion SUVmax.
    pub highest_suv_max: Option<f64>,
    /// The reference region, where the model gave one.
    pub reference: Option<Reference>,
    /// Body voxels (PET-derived body mask).
    pub body_voxels: u64,
    /// Lesion voxels removed as outside the body.
    pub removed_outside_body_voxels: u64,
    /// Components removed as smaller than `min_lesion_ml`.
    pub removed_small_components: u32,
}

/// The profile's result.
#[derive(Debug, Clone)]
pub struct TumourResult {
    /// Cleaned class map (lesion voxels outside the body or in small
    /// components set to 0; other classes untouched).
    pub classes: Volume<u8>,
    /// Instance map: lesion number per voxel.
    pub lesions: Labels,
    /// One entry per lesion, in instance order.
    pub table: Vec<Lesion>,
    /// Patient figures.
    pub patient: PatientFigures,
}

/// Body mask from the PET: SUV above a threshold, the largest 6-connected
/// component, holes filled slice by slice (lungs and bowel gas included).
pub fn body_mask(backend: &Backend, suv: &Volume<f32>, threshold: f32) -> Result<Vec<u8>, GpuError> {
    let g = &suv.geometry;
    let above: Vec<u8> = suv.data.par_iter().map(|&v| u8::from(v > threshold)).collect();
    let labels = backend.label(&above, g.dims, Connectivity::Six)?;
    if labels.count == 0 {
        return Ok(above);
    }
    let zeros = vec![0f32; above.len()];
    let stats = backend.stats(&labels, &zeros, g.dims)?;
    let largest = stats.iter().enumerate().max_by_key(|(_, s)| s.voxels).map(|(i, _)| i as u32 + 1).unwrap_or(0);
    let mut body: Vec<u8> = labels.data.par_iter().map(|&l| u8::from(l == largest)).collect();
    fill_holes_per_slice(&mut body, g.dims);
    Ok(body)
}

/// Fills, in every axial slice, the background regions that do not reach the
/// slice's edge.
pub fn fill_holes_per_slice(mask: &mut [u8], dims: [usize; 3]) {
    let [nx, ny, _] = dims;
    mask.par_chunks_mut((nx * ny).max(1)).for_each(|slice| {
        let background: Vec<u8> = slice.iter().map(|&v| u8::from(v == 0)).collect();
        let l = cpu::label(&background, [nx, ny, 1], Connectivity::Six);
        let mut touches = vec![false; l.count as usize + 1];
        for y in 0..ny {
            for x in 0..nx {
                if x == 0 || y == 0 || x + 1 == nx || y + 1 == ny {
                    touches[l.data[x + nx * y] as usize] = true;
                }
            }
        }
        for (v, &lab) in slice.iter_mut().zip(&l.data) {
            if lab != 0 && !touches[lab as usize] {
                *v = 1;
            }
        }
    });
}

/// Erodes a binary mask by `n` voxels (6-neighbourhood; the border erodes).
fn erode(mask: &[u8], dims: [usize; 3], n: u32) -> Vec<u8> {
    let [nx, ny, nz] = dims;
    let mut cur = mask.to_vec();
    for _ in 0..n {
        let prev = cur.clone();
        cur.par_iter_mut().enumerate().for_each(|(i, v)| {
            if *v == 0 {
                return;
            }
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            let inside = x > 0
                && y > 0
                && z > 0
                && x + 1 < nx
                && y + 1 < ny
                && z + 1 < nz
                && prev[i - 1] != 0
                && prev[i + 1] != 0
                && prev[i - nx] != 0
                && prev[i + nx] != 0
                && prev[i - nx * ny] != 0
                && prev[i + nx * ny] != 0;
            if !inside {
                *v = 0;
            }
        });
    }
    cur
}

/// Mean and population SD of the SUV over a region given as a class value,
/// eroded, with `exclude` voxels left out.
pub fn reference_region(
    classes: &Volume<u8>,
    suv: &Volume<f32>,
    class: u8,
    erosion: u32,
    exclude: &[u32],
    name: &str,
    coef: [f64; 2],
) -> Option<Reference> {
    let mask: Vec<u8> = classes.data.iter().map(|&c| u8::from(c == class)).collect();
    let eroded = erode(&mask, classes.geometry.dims, erosion);
    let (mut n, mut s, mut ss) = (0u64, 0f64, 0f64);
    for i in 0..eroded.len() {
        if eroded[i] != 0 && exclude[i] == 0 {
            let v = f64::from(suv.data[i]);
            n += 1;
            s += v;
            ss += v * v;
        }
    }
    if n == 0 {
        return None;
    }
    let mean = s / n as f64;
    let sd = (ss / n as f64 - mean * mean).max(0.0).sqrt();
    Some(Reference {
        region: name.to_string(),
        voxels: n,
        suv_mean: mean,
        suv_sd: sd,
        threshold: coef[0] * mean + coef[1] * sd,
    })
}

/// SUVpeak: mean over voxel centres within the sphere of `ml` around voxel `c`.
fn suv_peak(suv: &Volume<f32>, c: [usize; 3], ml: f64) -> f64 {
    let g = &suv.geometry;
    let r = (3.0 * ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
    let reach: Vec<i64> = (0..3).map(|a| (r / g.spacing[a]).floor() as i64).collect();
    let (mut s, mut n) = (0f64, 0u64);
    for dz in -reach[2]..=reach[2] {
        for dy in -reach[1]..=reach[1] {
            for dx in -reach[0]..=reach[0] {
                let d2 = (dx as f64 * g.spacing[0]).powi(2)
                    + (dy as f64 * g.spacing[1]).powi(2)
                    + (dz as f64 * g.spacing[2]).powi(2);
                let (x, y, z) = (c[0] as i64 + dx, c[1] as i64 + dy, c[2] as i64 + dz);
                if d2 > r * r || x < 0 || y < 0 || z < 0 {
                    continue;
                }
                let (x, y, z) = (x as usize, y as usize, z as usize);
                if x >= g.dims[0] || y >= g.dims[1] || z >= g.dims[2] {
                    continue;
                }
                s += f64::from(suv.data[g.index(x, y, z)]);
                n += 1;
            }
        }
    }
    s / n.max(1) as f64
}

fn ijk(index: u64, dims: [usize; 3]) -> [usize; 3] {
    let i = index as usize;
    [i % dims[0], (i / dims[0]) % dims[1], i / (dims[0] * dims[1])]
}

/// Lesion figures of an instance map over an SUV volume.
pub fn lesion_table(
    backend: &Backend,
    lesions: &Labels,
    suv: &Volume<f32>,
    rules: &PetRules,
) -> Result<Vec<Lesion>, GpuError> {
    let g = &suv.geometry;
    let stats = backend.stats(lesions, &suv.data, g.dims)?;
    let cents = centroids(lesions, g.dims);
    Ok(stats
        .iter()
        .zip(&cents)
        .enumerate()
        .map(|(i, (s, c))| {
            let hot = ijk(s.max_index, g.dims);
            let volume_ml = s.voxels as f64 * g.voxel_volume_ml();
            Lesion {
                number: i as u32 + 1,
                voxels: s.voxels,
                volume_ml,
                suv_max: f64::from(s.max),
                suv_mean: s.mean(),
                suv_sd: s.std(),
                suv_peak: suv_peak(suv, hot, rules.suv_peak_ml),
                tlg: s.mean() * volume_ml,
                centroid_lps_mm: g.voxel_to_lps(*c),
                max_lps_mm: g.voxel_to_lps([hot[0] as f64, hot[1] as f64, hot[2] as f64]),
                bbox_min: s.bbox_min,
                bbox_max: s.bbox_max,
            }
        })
        .collect())
}

fn same_grid(a: &Geometry, b: &Geometry) -> Result<(), GpuError> {
    if a.dims != b.dims {
        return Err(GpuError::Invalid(format!("label map {:?} and PET {:?} are on different grids", a.dims, b.dims)));
    }
    Ok(())
}

/// Runs the profile on a model's class map and the PET SUV (same grid).
pub fn total_tumour(
    backend: &Backend,
    classes: &Volume<u8>,
    suv: &Volume<f32>,
    rules: &PetRules,
) -> Result<TumourResult, GpuError> {
    same_grid(&classes.geometry, &suv.geometry)?;
    let g = &suv.geometry;
    let conn = rules.conn()?;
    let body = if rules.remove_outside_body {
        body_mask(backend, suv, rules.body_threshold_suv)?
    } else {
        vec![1u8; suv.data.len()]
    };
    let body_voxels = body.iter().filter(|&&b| b != 0).count() as u64;
    let mut out = classes.clone();
    let mut removed_outside = 0u64;
    for (c, &b) in out.data.iter_mut().zip(&body) {
        if *c == rules.lesion_label && b == 0 {
            *c = 0;
            removed_outside += 1;
        }
    }
    let lesion_mask: Vec<u8> = out.data.par_iter().map(|&c| u8::from(c == rules.lesion_label)).collect();
    let all = backend.label(&lesion_mask, g.dims, conn)?;
    let zeros = vec![0f32; lesion_mask.len()];
    let counts: Vec<u64> = backend.stats(&all, &zeros, g.dims)?.iter().map(|s| s.voxels).collect();
    let lesions = keep_at_least(&all, &counts, voxels_for_ml(rules.min_lesion_ml, g));
    for (c, &l) in out.data.iter_mut().zip(&lesions.data) {
        if *c == rules.lesion_label && l == 0 {
            *c = 0;
        }
    }
    let table = lesion_table(backend, &lesions, suv, rules)?;
    let reference = rules
        .liver_label
        .and_then(|l| {
            reference_region(
                &out,
                suv,
                l,
                rules.reference_erosion_voxels,
                &lesions.data,
                "liver",
                rules.liver_threshold,
            )
        })
        .or_else(|| {
            rules.spleen_label.and_then(|l| {
                reference_region(
                    &out,
                    suv,
                    l,
                    rules.reference_erosion_voxels,
                    &lesions.data,
                    "spleen",
                    rules.spleen_threshold,
                )
            })
        });
    let lowest = table.iter().min_by(|a, b| a.suv_mean.total_cmp(&b.suv_mean));
    let patient = PatientFigures {
        lesion_count: table.len(),
        total_tumour_volume_ml: table.iter().map(|l| l.volume_ml).sum(),
        total_lesion_uptake: table.iter().map(|l| l.tlg).sum(),
        lowest_lesion_suv_mean: lowest.map(|l| l.suv_mean),
        lowest_suv_mean_lesion: lowest.map(|l| l.number),
        highest_suv_max: table.iter().map(|l| l.suv_max).max_by(f64::total_cmp),
        reference,
        body_voxels,
        removed_outside_body_voxels: removed_outside,
        removed_small_components: all.count - lesions.count,
    };
    Ok(TumourResult { classes: out, lesions, table, patient })
}

/// The semi-automatic reference segmentation (seed 003's ground-truth method
/// before manual correction): every body voxel with SUV above the threshold,
/// components under `min_lesion_ml` removed, one label per component.
pub fn threshold_segmentation(
    backend: &Backend,
    suv: &Volume<f32>,
    threshold: f64,
    rules: &PetRules,
) -> Result<Labels, GpuError> {
    let g = &suv.geometry;
    let body = if rules.remove_outside_body {
        body_mask(backend, suv, rules.body_threshold_suv)?
    } else {
        vec![1u8; suv.data.len()]
    };
    let t = threshold as f32;
    let mask: Vec<u8> = suv.data.par_iter().zip(&body).map(|(&v, &b)| u8::from(b != 0 && v > t)).collect();
    let all = backend.label(&mask, g.dims, rules.conn()?)?;
    let zeros = vec![0f32; mask.len()];
    let counts: Vec<u64> = backend.stats(&all, &zeros, g.dims)?.iter().map(|s| s.voxels).collect();
    Ok(keep_at_least(&all, &counts, voxels_for_ml(rules.min_lesion_ml, g)))
}

/// How a seeded lesion's outline is found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedThreshold {
    /// The patient's liver (or spleen) reference threshold.
    Reference,
    /// A fraction of the local SUVmax (0.4 = 40%).
    FractionOfMax(f64),
    /// A fixed SUV.
    Suv(f64),
}

/// Grows a lesion from a seed voxel: the voxels connected to the seed with
/// SUV ≥ the threshold, inside a box of ±`max_radius_mm` around it. For
/// `FractionOfMax`, the local maximum is searched within `max_search_mm`.
pub fn grow_from_seed(
    backend: &Backend,
    suv: &Volume<f32>,
    seed: [usize; 3],
    threshold: SeedThreshold,
    reference: Option<&Reference>,
    max_radius_mm: f64,
) -> Result<(Vec<u8>, f64), GpuError> {
    let g = &suv.geometry;
    if (0..3).any(|a| seed[a] >= g.dims[a]) {
        return Err(GpuError::Invalid(format!("seed {seed:?} outside the volume {:?}", g.dims)));
    }
    let lo: Vec<usize> =
        (0..3).map(|a| seed[a].saturating_sub((max_radius_mm / g.spacing[a]).ceil() as usize)).collect();
    let hi: Vec<usize> =
        (0..3).map(|a| (seed[a] + (max_radius_mm / g.spacing[a]).ceil() as usize + 1).min(g.dims[a])).collect();
    let thr = match threshold {
        SeedThreshold::Suv(t) => t,
        SeedThreshold::Reference => reference
            .map(|r| r.threshold)
            .ok_or_else(|| GpuError::Invalid("no reference region (liver/spleen) for a reference threshold".into()))?,
        SeedThreshold::FractionOfMax(f) => {
            // Local maximum: within 15 mm of the seed, where the lesion's peak sits.
            let reach: Vec<i64> = (0..3).map(|a| (15.0 / g.spacing[a]).ceil() as i64).collect();
            let mut m = f32::NEG_INFINITY;
            for z in (seed[2] as i64 - reach[2]).max(0)..=(seed[2] as i64 + reach[2]).min(g.dims[2] as i64 - 1) {
                for y in (seed[1] as i64 - reach[1]).max(0)..=(seed[1] as i64 + reach[1]).min(g.dims[1] as i64 - 1) {
                    for x in (seed[0] as i64 - reach[0]).max(0)..=(seed[0] as i64 + reach[0]).min(g.dims[0] as i64 - 1)
                    {
                        m = m.max(suv.data[g.index(x as usize, y as usize, z as usize)]);
                    }
                }
            }
            f * f64::from(m)
        }
    };
    let sv = f64::from(suv.data[g.index(seed[0], seed[1], seed[2])]);
    if sv < thr {
        return Err(GpuError::Invalid(format!("the seed's SUV {sv:.2} is below the threshold {thr:.2}")));
    }
    let t = thr as f32;
    let mut mask = vec![0u8; suv.data.len()];
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                let i = g.index(x, y, z);
                mask[i] = u8::from(suv.data[i] >= t);
            }
        }
    }
    let l = backend.label(&mask, g.dims, Connectivity::TwentySix)?;
    let want = l.data[g.index(seed[0], seed[1], seed[2])];
    let grown: Vec<u8> = l.data.par_iter().map(|&v| u8::from(v == want && want != 0)).collect();
    Ok((grown, thr))
}
