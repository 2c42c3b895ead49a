//! Component-level operations built on the kernels: size filtering with
//! canonical renumbering, centroids, and the per-component figures that
//! `edgeseg components --json` prints.

use serde::Serialize;

use crate::gpu::{Backend, ComponentStats, Connectivity, GpuError, Labels};
use crate::volume::Geometry;

/// Keeps the components with at least `min_voxels` voxels and renumbers the
/// survivors 1..=n in their original (raster-first-voxel) order.
pub fn keep_at_least(labels: &Labels, voxel_counts: &[u64], min_voxels: u64) -> Labels {
    let mut map = vec![0u32; labels.count as usize + 1];
    let mut next = 0;
    for (i, &n) in voxel_counts.iter().enumerate() {
        if n >= min_voxels {
            next += 1;
            map[i + 1] = next;
        }
    }
    relabel(labels, &map, next)
}

/// Applies `map[old] = new` (0 removes) to every voxel.
pub fn relabel(labels: &Labels, map: &[u32], count: u32) -> Labels {
    use rayon::prelude::*;
    let data = labels.data.par_iter().map(|&l| map[l as usize]).collect();
    Labels { data, count }
}

/// Smallest voxel count of a component of at least `ml` millilitres.
pub fn voxels_for_ml(ml: f64, geometry: &Geometry) -> u64 {
    (ml / geometry.voxel_volume_ml() - 1e-9).ceil().max(0.0) as u64
}

/// Mean voxel coordinate (i, j, k) of each component.
pub fn centroids(labels: &Labels, dims: [usize; 3]) -> Vec<[f64; 3]> {
    let mut sums = vec![[0u64; 4]; labels.count as usize];
    let plane = dims[0] * dims[1];
    for (i, &l) in labels.data.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let s = &mut sums[(l - 1) as usize];
        s[0] += (i % dims[0]) as u64;
        s[1] += ((i / dims[0]) % dims[1]) as u64;
        s[2] += (i / plane) as u64;
        s[3] += 1;
    }
    sums.iter().map(|s| [0, 1, 2].map(|a| s[a] as f64 / s[3].max(1) as f64)).collect()
}

/// One component as `edgeseg components --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentFigures {
    /// Label in the output map.
    pub label: u32,
    /// Voxel count.
    pub voxels: u64,
    /// Volume in ml.
    pub volume_ml: f64,
    /// Smallest (i, j, k).
    pub bbox_min: [u32; 3],
    /// Largest (i, j, k).
    pub bbox_max: [u32; 3],
    /// Centroid in voxel coordinates.
    pub centroid_ijk: [f64; 3],
    /// Centroid in patient coordinates (LPS, mm).
    pub centroid_lps_mm: [f64; 3],
    /// Intensity statistics, when an image was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intensity: Option<IntensityFigures>,
}

/// Intensity statistics of one component.
#[derive(Debug, Clone, Serialize)]
pub struct IntensityFigures {
    /// Sum.
    pub sum: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Maximum.
    pub max: f32,
    /// Voxel (i, j, k) of the maximum (first in raster order).
    pub max_ijk: [u64; 3],
}

/// What `analyse` found.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The (filtered) label map.
    pub labels: Labels,
    /// One entry per label.
    pub figures: Vec<ComponentFigures>,
    /// Seconds spent labelling.
    pub label_seconds: f64,
    /// Seconds spent on statistics, filtering and centroids.
    pub stats_seconds: f64,
}

/// Labels a mask (any non-zero voxel is foreground), optionally drops
/// components under `min_ml`, and computes each component's figures.
pub fn analyse(
    backend: &Backend,
    mask: &[u8],
    geometry: &Geometry,
    conn: Connectivity,
    min_ml: Option<f64>,
    image: Option<&[f32]>,
) -> Result<Analysis, GpuError> {
    let dims = geometry.dims;
    let t = std::time::Instant::now();
    let mut labels = backend.label(mask, dims, conn)?;
    let label_seconds = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    // Voxel counts (and intensity statistics) come from the stats kernel; with
    // no image, a zero image gives the counts and boxes.
    let zeros;
    let values = match image {
        Some(v) => v,
        None => {
            zeros = vec![0f32; mask.len()];
            &zeros
        }
    };
    let mut stats = backend.stats(&labels, values, dims)?;
    if let Some(ml) = min_ml {
        let counts: Vec<u64> = stats.iter().map(|s| s.voxels).collect();
        labels = keep_at_least(&labels, &counts, voxels_for_ml(ml, geometry));
        let kept: Vec<ComponentStats> = stats.into_iter().filter(|s| s.voxels >= voxels_for_ml(ml, geometry)).collect();
        stats = kept;
    }
    let cents = centroids(&labels, dims);
    let figures = stats
        .iter()
        .zip(&cents)
        .enumerate()
        .map(|(i, (s, c))| ComponentFigures {
            label: i as u32 + 1,
            voxels: s.voxels,
            volume_ml: s.voxels as f64 * geometry.voxel_volume_ml(),
            bbox_min: s.bbox_min,
            bbox_max: s.bbox_max,
            centroid_ijk: *c,
            centroid_lps_mm: geometry.voxel_to_lps(*c),
            intensity: image.map(|_| IntensityFigures {
                sum: s.sum(),
                mean: s.mean(),
                std: s.std(),
                max: s.max,
                max_ijk: [
                    s.max_index % dims[0] as u64,
                    (s.max_index / dims[0] as u64) % dims[1] as u64,
                    s.max_index / (dims[0] * dims[1]) as u64,
                ],
            }),
        })
        .collect();
    Ok(Analysis { labels, figures, label_seconds, stats_seconds: t.elapsed().as_secs_f64() })
}
