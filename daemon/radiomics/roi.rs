//! The regions of interest of the `ct-radiomics` profile: per lesion (a
//! 26-connected component of the tumour labels) and for all lesions together
//! the intra-tumoural ROI (the lesion), the peri-tumoural ROI (a ring of
//! voxels outside the lesion whose centre lies within a width in mm of a
//! lesion voxel's centre, Euclidean on the anisotropic grid, clipped to the
//! body and optionally to the organ), and once per study the whole organ
//! (its label, or its label minus the tumour). docs/radiomics.md "ROIs".

use crate::gpu::Connectivity;
use crate::gpu::cpu;

/// The kind of a ROI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoiKind {
    /// The lesion itself.
    Intratumoral,
    /// The ring outside the lesion.
    Peritumoral,
    /// The whole organ.
    Organ,
}

impl RoiKind {
    /// Every kind, in output order.
    pub const ALL: [RoiKind; 3] = [RoiKind::Intratumoral, RoiKind::Peritumoral, RoiKind::Organ];

    /// The name in radiomics.csv and report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            RoiKind::Intratumoral => "intratumoral",
            RoiKind::Peritumoral => "peritumoral",
            RoiKind::Organ => "organ",
        }
    }
}

/// How the ROIs are made (model.toml `[radiomics]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiSpec {
    /// Width of the peri-tumoural ring (mm).
    pub peritumoral_mm: f64,
    /// Clip the ring to the organ as well as to the body.
    pub peritumoral_within_organ: bool,
    /// The organ ROI leaves the tumour out.
    pub organ_minus_tumour: bool,
}

impl Default for RoiSpec {
    fn default() -> Self {
        RoiSpec { peritumoral_mm: 5.0, peritumoral_within_organ: false, organ_minus_tumour: false }
    }
}

/// One ROI: its name, kind, lesion and voxels (on the image grid).
#[derive(Debug, Clone, PartialEq)]
pub struct RoiMask {
    /// `lesion-1_intratumoral`, `all_peritumoral`, `organ`.
    pub name: String,
    /// Its kind.
    pub kind: RoiKind,
    /// The lesion number (None: all lesions together, or the organ).
    pub lesion: Option<u32>,
    /// Voxels (i fastest).
    pub mask: Vec<bool>,
}

impl RoiMask {
    /// Voxels in the ROI.
    pub fn voxels(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }
}

/// The lesions: 26-connected components of `tumour`, numbered by their first
/// voxel in raster order (i fastest); returns the instance map and the count.
pub fn lesions(tumour: &[bool], dims: [usize; 3]) -> (Vec<u32>, u32) {
    let m: Vec<u8> = tumour.iter().map(|&t| u8::from(t)).collect();
    let l = cpu::label(&m, dims, Connectivity::TwentySix);
    (l.data, l.count)
}

/// The body on a CT: voxels above `threshold_hu`, the largest 6-connected
/// component, holes filled slice by slice (the lungs are inside the body).
pub fn body_mask(ct: &[f32], dims: [usize; 3], threshold_hu: f64) -> Vec<bool> {
    let above: Vec<u8> = ct.iter().map(|&v| u8::from(f64::from(v) > threshold_hu)).collect();
    let l = cpu::label(&above, dims, Connectivity::Six);
    if l.count == 0 {
        return vec![false; ct.len()];
    }
    let mut counts = vec![0usize; l.count as usize + 1];
    for &v in &l.data {
        counts[v as usize] += 1;
    }
    // The largest; of equal ones the first.
    let mut largest = 1;
    for (c, &n) in counts.iter().enumerate().skip(1) {
        if n > counts[largest] {
            largest = c;
        }
    }
    let mut body: Vec<u8> = l.data.iter().map(|&v| u8::from(v as usize == largest)).collect();
    crate::post::pet::fill_holes_per_slice(&mut body, dims);
    body.into_iter().map(|v| v != 0).collect()
}

/// The voxels not in `mask` whose centre lies within `width_mm` of the centre
/// of a `mask` voxel: sqrt((Δk·s_k)² + (Δj·s_j)² + (Δi·s_i)²) ≤ width, summed
/// in that order (scipy's `distance_transform_edt(~mask, sampling)` on a
/// z, y, x array, compared with ≤). The nearest mask voxel of any voxel is a
/// boundary voxel (one with a 6-neighbour outside the mask), so only those
/// are visited, each with every offset of the ellipsoid.
pub fn ring(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], width_mm: f64) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut out = vec![false; mask.len()];
    if width_mm.is_nan() || width_mm <= 0.0 || mask.len() != nx * ny * nz {
        return out;
    }
    let reach = [0, 1, 2].map(|a| if spacing[a] > 0.0 { (width_mm / spacing[a]).floor() as i64 } else { 0 });
    let mut offsets = Vec::new();
    for dz in -reach[2]..=reach[2] {
        for dy in -reach[1]..=reach[1] {
            for dx in -reach[0]..=reach[0] {
                let (a, b, c) = (dz as f64 * spacing[2], dy as f64 * spacing[1], dx as f64 * spacing[0]);
                let d = (a * a + b * b + c * c).sqrt();
                if d <= width_mm && (dx, dy, dz) != (0, 0, 0) {
                    offsets.push([dx, dy, dz]);
                }
            }
        }
    }
    let at = |x: i64, y: i64, z: i64| -> Option<usize> {
        (x >= 0 && y >= 0 && z >= 0 && (x as usize) < nx && (y as usize) < ny && (z as usize) < nz)
            .then(|| x as usize + nx * (y as usize + ny * z as usize))
    };
    for z in 0..nz as i64 {
        for y in 0..ny as i64 {
            for x in 0..nx as i64 {
                let Some(v) = at(x, y, z) else { continue };
                if !mask[v] {
                    continue;
                }
                let boundary = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
                    .iter()
                    .any(|&(dx, dy, dz)| at(x + dx, y + dy, z + dz).is_some_and(|u| !mask[u]));
                if !boundary {
                    continue;
                }
                for o in &offsets {
                    if let Some(u) = at(x + o[0], y + o[1], z + o[2])
                        && !mask[u]
                    {
                        out[u] = true;
                    }
                }
            }
        }
    }
    out
}

/// What `build` reads: the maps on one grid.
pub struct RoiInputs<'a> {
    /// Voxel counts.
    pub dims: [usize; 3],
    /// Spacing (mm), i, j, k.
    pub spacing: [f64; 3],
    /// Lesion instance map (0 outside).
    pub lesions: &'a [u32],
    /// Number of lesions.
    pub count: u32,
    /// The organ, where the model has one.
    pub organ: Option<&'a [bool]>,
    /// The body.
    pub body: &'a [bool],
}

/// The peri-tumoural ring of `lesion` (its voxels), outside every tumour
/// voxel, inside the body and, when asked, the organ.
pub fn peritumoral(lesion: &[bool], tumour: &[bool], inp: &RoiInputs<'_>, spec: &RoiSpec) -> Vec<bool> {
    let mut r = ring(lesion, inp.dims, inp.spacing, spec.peritumoral_mm);
    for (i, v) in r.iter_mut().enumerate() {
        *v = *v && !tumour[i] && inp.body[i] && (!spec.peritumoral_within_organ || inp.organ.is_some_and(|o| o[i]));
    }
    r
}

/// The organ ROI. The label map gives organ and tumour voxels disjoint
/// classes, so the whole organ is the organ label plus every lesion that
/// touches it (a lesion voxel with an organ voxel among its 6 neighbours);
/// minus the tumour it is the organ label alone.
pub fn organ_roi(organ: &[bool], inp: &RoiInputs<'_>, spec: &RoiSpec) -> Vec<bool> {
    let mut out = organ.to_vec();
    if spec.organ_minus_tumour {
        return out;
    }
    let [nx, ny, nz] = inp.dims;
    let mut touching = vec![false; inp.count as usize + 1];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let v = x + nx * (y + ny * z);
                let l = inp.lesions[v] as usize;
                if l == 0 || touching[l] {
                    continue;
                }
                let n = [
                    (x > 0).then(|| v - 1),
                    (x + 1 < nx).then(|| v + 1),
                    (y > 0).then(|| v - nx),
                    (y + 1 < ny).then(|| v + nx),
                    (z > 0).then(|| v - nx * ny),
                    (z + 1 < nz).then(|| v + nx * ny),
                ];
                if n.iter().flatten().any(|&u| organ[u]) {
                    touching[l] = true;
                }
            }
        }
    }
    for (o, &l) in out.iter_mut().zip(inp.lesions) {
        if l != 0 && touching.get(l as usize).copied().unwrap_or(false) {
            *o = true;
        }
    }
    out
}

/// Every ROI of a study: per lesion its intra- and peri-tumoural ROI, then
/// all lesions together (`all_intratumoral`, `all_peritumoral`), then the
/// organ. ROIs without a voxel are left out.
pub fn build(inp: &RoiInputs<'_>, spec: &RoiSpec) -> Vec<RoiMask> {
    let tumour: Vec<bool> = inp.lesions.iter().map(|&l| l != 0).collect();
    let mut out = Vec::new();
    let mut push = |name: String, kind, lesion, mask: Vec<bool>| {
        if mask.iter().any(|m| *m) {
            out.push(RoiMask { name, kind, lesion, mask });
        }
    };
    for n in 1..=inp.count {
        let lesion: Vec<bool> = inp.lesions.iter().map(|&l| l == n).collect();
        let peri = peritumoral(&lesion, &tumour, inp, spec);
        push(format!("lesion-{n}_intratumoral"), RoiKind::Intratumoral, Some(n), lesion);
        push(format!("lesion-{n}_peritumoral"), RoiKind::Peritumoral, Some(n), peri);
    }
    if inp.count > 0 {
        let peri = peritumoral(&tumour, &tumour, inp, spec);
        push("all_intratumoral".into(), RoiKind::Intratumoral, None, tumour.clone());
        push("all_peritumoral".into(), RoiKind::Peritumoral, None, peri);
    }
    if let Some(o) = inp.organ {
        push("organ".into(), RoiKind::Organ, None, organ_roi(o, inp, spec));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: the distance from every voxel to every mask voxel.
    fn brute(mask: &[bool], dims: [usize; 3], s: [f64; 3], w: f64) -> Vec<bool> {
        let [nx, ny, nz] = dims;
        let mut out = vec![false; mask.len()];
        for v in 0..mask.len() {
            if mask[v] {
                continue;
            }
            let (x, y, z) = ((v % nx) as f64, ((v / nx) % ny) as f64, (v / (nx * ny)) as f64);
            for u in (0..mask.len()).filter(|&u| mask[u]) {
                let (a, b, c) = ((u % nx) as f64, ((u / nx) % ny) as f64, (u / (nx * ny)) as f64);
                let d = (((c - z) * s[2]).powi(2) + ((b - y) * s[1]).powi(2) + ((a - x) * s[0]).powi(2)).sqrt();
                if d <= w {
                    out[v] = true;
                    break;
                }
            }
        }
        let _ = nz;
        out
    }

    #[test]
    fn ring_equals_the_brute_force_distance() {
        let dims = [14, 12, 9];
        let mut mask = vec![false; 14 * 12 * 9];
        // An L-shaped blob and a lone voxel.
        for z in 3..6 {
            for y in 4..8 {
                for x in 3..9 {
                    if x < 5 || y < 6 {
                        mask[x + 14 * (y + 12 * z)] = true;
                    }
                }
            }
        }
        mask[12 + 14 * (1 + 12 * 8)] = true;
        for (s, w) in [([1.0, 1.0, 1.0], 2.0), ([0.7, 0.9, 2.5], 3.0), ([1.25, 1.25, 2.5], 5.0)] {
            assert_eq!(ring(&mask, dims, s, w), brute(&mask, dims, s, w), "{s:?} {w}");
        }
    }

    #[test]
    fn rois_per_lesion_all_and_organ() {
        let dims = [10, 10, 3];
        let n = 300;
        let mut lesions = vec![0u32; n];
        lesions[2 + 10 * (2 + 10)] = 1;
        lesions[3 + 10 * (2 + 10)] = 1;
        lesions[7 + 10 * (7 + 10)] = 2;
        let mut organ = vec![true; n];
        for (o, &l) in organ.iter_mut().zip(&lesions) {
            *o = l == 0;
        }
        let body: Vec<bool> = (0..n).map(|i| i % 10 < 9).collect();
        let inp = RoiInputs { dims, spacing: [1.0; 3], lesions: &lesions, count: 2, organ: Some(&organ), body: &body };
        let spec = RoiSpec { peritumoral_mm: 1.5, organ_minus_tumour: true, ..RoiSpec::default() };
        let whole = organ_roi(&organ, &inp, &RoiSpec::default());
        assert!(whole.iter().all(|v| *v), "the whole organ takes the lesions inside it back");
        let rois = build(&inp, &spec);
        let names: Vec<&str> = rois.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lesion-1_intratumoral",
                "lesion-1_peritumoral",
                "lesion-2_intratumoral",
                "lesion-2_peritumoral",
                "all_intratumoral",
                "all_peritumoral",
                "organ"
            ]
        );
        assert_eq!(rois[0].voxels(), 2);
        assert_eq!(rois[6].voxels(), n - 3);
        // The ring of lesion 2 at x = 7 reaches x = 8 but not the x = 9 column outside the body.
        assert!(!rois[3].mask[9 + 10 * (7 + 10)] && rois[3].mask[8 + 10 * (7 + 10)]);
        assert!(rois[1].mask.iter().zip(&lesions).all(|(r, &l)| !(*r && l != 0)), "no tumour in a ring");
    }
}
