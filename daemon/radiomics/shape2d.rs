//! 2D shape features as PyRadiomics' `shape2D` class: the mask (one voxel
//! thick along force2Ddimension, squeezed to 2D and padded by one pixel)
//! traced by marching squares with vertices on edge midpoints (cshape.c's
//! `calculate_coefficients2D`: signed area by the shoelace sum, perimeter,
//! diameter between the stored vertices), and the principal axes from the
//! covariance of the pixel centres.

use super::Features;

/// 2D shape features, with whether each is deprecated.
pub const FEATURES: &[(&str, bool)] = &[
    ("Elongation", false),
    ("MajorAxisLength", false),
    ("MaximumDiameter", false),
    ("MeshSurface", false),
    ("MinorAxisLength", false),
    ("Perimeter", false),
    ("PerimeterSurfaceRatio", false),
    ("PixelSurface", false),
    ("SphericalDisproportion", true),
    ("Sphericity", false),
];

/// Square corners (row, column) in cshape.c's order.
const CORNERS: [[usize; 2]; 4] = [[0, 0], [0, 1], [1, 1], [1, 0]];
/// Edge midpoints (row, column) in cshape.c's order.
const VERTS: [[f64; 2]; 4] = [[0.0, 0.5], [0.5, 1.0], [1.0, 0.5], [0.5, 0.0]];
/// Lines (pairs of edge indices) per square index, -1 ends.
const LINES: [[i8; 4]; 16] = [
    [-1, -1, -1, -1],
    [3, 0, -1, -1],
    [0, 1, -1, -1],
    [3, 1, -1, -1],
    [1, 2, -1, -1],
    [1, 2, 3, 0],
    [0, 2, -1, -1],
    [3, 2, -1, -1],
    [2, 3, -1, -1],
    [2, 0, -1, -1],
    [0, 1, 2, 3],
    [2, 1, -1, -1],
    [1, 3, -1, -1],
    [1, 0, -1, -1],
    [0, 3, -1, -1],
    [-1, -1, -1, -1],
];

/// Perimeter, mesh surface and maximum diameter of a padded 2D mask
/// (`dims` rows, columns; columns fastest; `spacing` in the same order).
pub fn coefficients(mask: &[bool], dims: [usize; 2], spacing: [f64; 2]) -> (f64, f64, f64) {
    let [rows, cols] = dims;
    let mut perimeter = 0.0;
    let mut surface = 0.0;
    let mut vertices: Vec<[f64; 2]> = Vec::new();
    for iy in 0..rows.saturating_sub(1) {
        for ix in 0..cols.saturating_sub(1) {
            let mut sq = 0u8;
            for (k, c) in CORNERS.iter().enumerate() {
                if mask[(iy + c[0]) * cols + ix + c[1]] {
                    sq |= 1 << k;
                }
            }
            if sq == 0 || sq == 0xF {
                continue;
            }
            for l in LINES[sq as usize].chunks_exact(2) {
                if l[0] < 0 {
                    break;
                }
                let (va, vb) = (VERTS[l[0] as usize], VERTS[l[1] as usize]);
                let mut a = [iy as f64, ix as f64];
                let mut b = a;
                for d in 0..2 {
                    a[d] += va[d];
                    b[d] += vb[d];
                    a[d] *= spacing[d];
                    b[d] *= spacing[d];
                }
                surface += a[0] * b[1] - b[0] * a[1];
                let mut sum = 0.0;
                for d in 0..2 {
                    let t = a[d] - b[d];
                    sum += t * t;
                }
                perimeter += f64::sqrt(sum);
            }
            // Vertices on edges 3 and 2, found from corners 0 and 2 (flipped squares).
            let flipped = if sq > 7 { sq ^ 0xF } else { sq };
            for (corner, edge) in [(0usize, 3usize), (2, 2)] {
                if flipped & (1 << corner) != 0 {
                    vertices
                        .push([(iy as f64 + VERTS[edge][0]) * spacing[0], (ix as f64 + VERTS[edge][1]) * spacing[1]]);
                }
            }
        }
    }
    surface /= 2.0;
    let mut diameter: f64 = 0.0;
    for (i, a) in vertices.iter().enumerate() {
        for b in &vertices[..i] {
            let (d0, d1) = (a[0] - b[0], a[1] - b[1]);
            let dist = d0 * d0 + d1 * d1;
            if dist > diameter {
                diameter = dist;
            }
        }
    }
    (perimeter, surface, diameter.sqrt())
}

/// The eigenvalues, ascending, of the symmetric 2×2 matrix [[a, b], [b, c]].
fn eigen2(a: f64, b: f64, c: f64) -> [f64; 2] {
    let mean = 0.5 * (a + c);
    let half = 0.5 * (a - c);
    let r = half.hypot(b);
    let major = mean + r;
    let det = a * c - b * b;
    // The smaller one from the determinant: mean − r cancels when the shape
    // is elongated.
    let minor = if major != 0.0 { det / major } else { mean - r };
    [minor.min(major), minor.max(major)]
}

/// The shape2D features of a 2D mask cropped to its bounding box (`dims`
/// rows, columns, columns fastest; `spacing` rows, columns).
pub fn compute(mask: &[bool], dims: [usize; 2], spacing: [f64; 2], enabled: &[&str], out: &mut Features) {
    // Pad by one pixel of background, as PyRadiomics.
    let pd = [dims[0] + 2, dims[1] + 2];
    let mut padded = vec![false; pd[0] * pd[1]];
    let mut coords: Vec<[f64; 2]> = Vec::new();
    for r in 0..dims[0] {
        for c in 0..dims[1] {
            if mask[r * dims[1] + c] {
                padded[(r + 1) * pd[1] + c + 1] = true;
            }
        }
    }
    for r in 0..pd[0] {
        for c in 0..pd[1] {
            if padded[r * pd[1] + c] {
                coords.push([r as f64 * spacing[0], c as f64 * spacing[1]]);
            }
        }
    }
    let np = coords.len();
    let (perimeter, surface, diameter) = coefficients(&padded, pd, spacing);
    // numpy: centre, divide by sqrt(Np), then X^T X.
    let n = np as f64;
    let mut mean = [0.0; 2];
    for d in 0..2 {
        mean[d] = coords.iter().map(|p| p[d]).sum::<f64>() / n;
    }
    let sq = n.sqrt();
    let centred: Vec<[f64; 2]> = coords.iter().map(|p| [(p[0] - mean[0]) / sq, (p[1] - mean[1]) / sq]).collect();
    let mut cov = [[0.0; 2]; 2];
    for (i, row) in cov.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = centred.iter().map(|p| p[i] * p[j]).sum();
        }
    }
    let mut ev = eigen2(cov[0][0], 0.5 * (cov[0][1] + cov[1][0]), cov[1][1]);
    for e in ev.iter_mut() {
        if *e < 0.0 && *e > -1e-10 {
            *e = 0.0;
        }
    }
    let sphericity = (2.0 * (std::f64::consts::PI * surface).sqrt()) / perimeter;
    for &name in enabled {
        let v = match name {
            "MeshSurface" => surface,
            "PixelSurface" => n * (spacing[1] * spacing[0]),
            "Perimeter" => perimeter,
            "PerimeterSurfaceRatio" => perimeter / surface,
            "Sphericity" => sphericity,
            "SphericalDisproportion" => 1.0 / sphericity,
            "MaximumDiameter" => diameter,
            "MajorAxisLength" => {
                if ev[1] < 0.0 {
                    f64::NAN
                } else {
                    ev[1].sqrt() * 4.0
                }
            }
            "MinorAxisLength" => {
                if ev[0] < 0.0 {
                    f64::NAN
                } else {
                    ev[0].sqrt() * 4.0
                }
            }
            "Elongation" => {
                if ev[0] < 0.0 || ev[1] < 0.0 {
                    f64::NAN
                } else {
                    (ev[0] / ev[1]).sqrt()
                }
            }
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_of_pixels() {
        // A 3×2 rectangle of 1 mm pixels: the mesh cuts the corners.
        let mask = vec![true; 6];
        let mut f = Features::default();
        let names: Vec<&str> = FEATURES.iter().map(|(n, _)| *n).collect();
        compute(&mask, [2, 3], [1.0, 1.0], &names, &mut f);
        let get = |n: &str| f.items.iter().find(|(k, _)| k == n).map(|(_, v)| *v).unwrap_or(f64::NAN);
        // 6 pixels minus four corner triangles of 1/8.
        assert!((get("MeshSurface") - 5.5).abs() < 1e-12);
        assert!((get("PixelSurface") - 6.0).abs() < 1e-12);
        // Four sides of 1 and 2 minus corners, plus 4 diagonals of sqrt(0.5).
        let p = 2.0 * (2.0 + 1.0) + 4.0 * 0.5f64.sqrt();
        assert!((get("Perimeter") - p).abs() < 1e-12);
    }
}
