//! Grey-level discretisation as PyRadiomics' `imageoperations.binImage`: bin
//! edges from the ROI's values (fixed bin width from a multiple of the width
//! below the minimum, or numpy.histogram's equal bins for a bin count), then
//! numpy.digitize. The arithmetic follows numpy's (arange, linspace) so that
//! values on an edge fall in the same bin.

use super::params::Settings;

/// Bin edges for the ROI values.
pub fn bin_edges(values: &[f64], s: &Settings) -> Vec<f64> {
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if let Some(count) = s.bin_count {
        // numpy.histogram(values, count)[1]: linspace(min, max, count + 1).
        let (mut first, mut last) = (min, max);
        if first == last {
            first -= 0.5;
            last += 0.5;
        }
        let n = usize::try_from(count).unwrap_or(1).max(1);
        let step = (last - first) / n as f64;
        let mut edges: Vec<f64> = (0..=n).map(|k| k as f64 * step + first).collect();
        edges[n] = last;
        edges[n] += 1.0;
        edges
    } else {
        let w = s.bin_width;
        // Python's modulo takes the divisor's sign.
        let r = min % w;
        let r = if r != 0.0 && (r < 0.0) != (w < 0.0) { r + w } else { r };
        let low = min - r;
        let high = max + 2.0 * w;
        // numpy.arange: length ceil((stop - start) / step), values start + i * delta
        // with delta = (start + step) - start.
        let len = ((high - low) / w).ceil().max(0.0) as usize;
        let delta = (low + w) - low;
        let edges: Vec<f64> = (0..len).map(|i| low + i as f64 * delta).collect();
        if edges.len() == 1 { vec![edges[0] - 0.5, edges[0] + 0.5] } else { edges }
    }
}

/// numpy.digitize for increasing edges: the number of edges <= v.
pub fn digitize(v: f64, edges: &[f64]) -> u32 {
    edges.partition_point(|&e| e <= v) as u32
}

/// Discretised image: grey level (1-based) inside the ROI, 0 outside, plus
/// the grey levels present and the highest one (PyRadiomics' `Ng`).
pub struct Binned {
    /// Levels per voxel, 0 outside the mask.
    pub levels: Vec<u32>,
    /// Sorted levels present in the ROI.
    pub grey_levels: Vec<u32>,
    /// Highest level in the ROI.
    pub ng: u32,
}

/// Discretises the ROI voxels of `image`.
pub fn bin_image(image: &[f64], mask: &[bool], s: &Settings) -> Binned {
    let values: Vec<f64> = image.iter().zip(mask).filter(|(_, m)| **m).map(|(v, _)| *v).collect();
    let edges = bin_edges(&values, s);
    let mut levels = vec![0u32; image.len()];
    let mut present = vec![false; edges.len() + 1];
    for (i, (&v, &m)) in image.iter().zip(mask).enumerate() {
        if m {
            let l = digitize(v, &edges);
            levels[i] = l;
            present[l as usize] = true;
        }
    }
    let grey_levels: Vec<u32> = (0..present.len() as u32).filter(|&l| present[l as usize]).collect();
    let ng = grey_levels.last().copied().unwrap_or(0);
    Binned { levels, grey_levels, ng }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_starts_at_a_multiple_below_the_minimum() {
        let s = Settings::default();
        let e = bin_edges(&[-1010.0, 40.0], &s);
        assert_eq!(e[0], -1025.0);
        assert_eq!(digitize(-1010.0, &e), 1);
        assert_eq!(digitize(-1000.0, &e), 2);
        assert_eq!(digitize(40.0, &e), 43);
    }

    #[test]
    fn bin_count_puts_the_maximum_in_the_last_bin() {
        let s = Settings { bin_count: Some(4), ..Settings::default() };
        let e = bin_edges(&[0.0, 8.0], &s);
        assert_eq!(e, vec![0.0, 2.0, 4.0, 6.0, 9.0]);
        assert_eq!(digitize(8.0, &e), 4);
        assert_eq!(digitize(0.0, &e), 1);
    }
}
