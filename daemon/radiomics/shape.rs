//! 3D shape features as PyRadiomics' `shape` class: a marching-cubes mesh of
//! the mask (padded by one voxel, vertices on edge midpoints, the first half of
//! the classic triangle table with complemented cubes flipped, as PyRadiomics'
//! cshape.c) for surface and volume, maximum diameters between mesh vertices,
//! and the principal axes from the voxel coordinates' covariance.

use super::Features;

/// Shape features, with whether each is deprecated.
pub const FEATURES: &[(&str, bool)] = &[
    ("Compactness1", true),
    ("Compactness2", true),
    ("Elongation", false),
    ("Flatness", false),
    ("LeastAxisLength", false),
    ("MajorAxisLength", false),
    ("Maximum2DDiameterColumn", false),
    ("Maximum2DDiameterRow", false),
    ("Maximum2DDiameterSlice", false),
    ("Maximum3DDiameter", false),
    ("MeshVolume", false),
    ("MinorAxisLength", false),
    ("SphericalDisproportion", true),
    ("Sphericity", false),
    ("SurfaceArea", false),
    ("SurfaceVolumeRatio", false),
    ("VoxelVolume", false),
];

/// Cube corners (z, y, x) in the table's order.
const CORNERS: [[usize; 3]; 8] =
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]];

/// Cube edges as corner pairs in the table's order.
const EDGES: [[usize; 2]; 12] =
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]];

fn edge_midpoint(e: usize) -> [f64; 3] {
    let [a, b] = EDGES[e];
    let mut p = [0.0; 3];
    for d in 0..3 {
        p[d] = (CORNERS[a][d] + CORNERS[b][d]) as f64 / 2.0;
    }
    p
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - b[1] * a[2], a[2] * b[0] - b[2] * a[0], a[0] * b[1] - b[0] * a[1]]
}

/// Surface area (mm²) and volume (mm³) of the mesh of a padded mask
/// (`dims` and `spacing` in z, y, x order; x fastest in memory).
pub fn mesh_area_volume(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> (f64, f64) {
    let verts: Vec<[f64; 3]> = (0..12).map(edge_midpoint).collect();
    let [nz, ny, nx] = dims;
    let idx = |z: usize, y: usize, x: usize| (z * ny + y) * nx + x;
    let mut area = 0.0;
    let mut volume = 0.0;
    for iz in 0..nz.saturating_sub(1) {
        for iy in 0..ny.saturating_sub(1) {
            for ix in 0..nx.saturating_sub(1) {
                let mut cube = 0u8;
                for (c, off) in CORNERS.iter().enumerate() {
                    if mask[idx(iz + off[0], iy + off[1], ix + off[2])] {
                        cube |= 1 << c;
                    }
                }
                let mut sign = 1.0;
                if cube & 0x80 != 0 {
                    cube ^= 0xff;
                    sign = -1.0;
                }
                if cube == 0 {
                    continue;
                }
                let base = [iz as f64, iy as f64, ix as f64];
                for t in TRIANGLES[cube as usize].chunks_exact(3) {
                    let mut p = [[0.0; 3]; 3];
                    for (k, &e) in t.iter().enumerate() {
                        for d in 0..3 {
                            p[k][d] = (base[d] + verts[e as usize][d]) * spacing[d];
                        }
                    }
                    let [a, b, c] = p;
                    let ab = cross(a, b);
                    volume += sign * (ab[0] * c[0] + ab[1] * c[1] + ab[2] * c[2]);
                    let ac = [a[0] - c[0], a[1] - c[1], a[2] - c[2]];
                    let bc = [b[0] - c[0], b[1] - c[1], b[2] - c[2]];
                    let n = cross(ac, bc);
                    area += 0.5 * (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
                }
            }
        }
    }
    (area, volume / 6.0)
}

fn brute_max(a: &[[f64; 3]], b: &[[f64; 3]], best: &mut f64) {
    for p in a {
        for q in b {
            let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2);
            if d > *best {
                *best = d;
            }
        }
    }
}

/// Largest squared distance between any two points (already in mm). Exact:
/// points are binned into cells, and cell pairs are visited by decreasing
/// upper bound until no pair can beat the best distance found.
fn max_dist2(points: &[[f64; 3]]) -> f64 {
    let mut best = 0.0f64;
    if points.len() < 2 {
        return best;
    }
    if points.len() <= 256 {
        brute_max(points, points, &mut best);
        return best;
    }
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in points {
        for d in 0..3 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    const K: usize = 16;
    let cell = |p: &[f64; 3]| -> usize {
        let mut c = 0;
        for d in 0..3 {
            let w = hi[d] - lo[d];
            let i = if w > 0.0 { (((p[d] - lo[d]) / w) * K as f64) as usize } else { 0 };
            c = c * K + i.min(K - 1);
        }
        c
    };
    let mut cells: std::collections::HashMap<usize, Vec<[f64; 3]>> = std::collections::HashMap::new();
    for p in points {
        cells.entry(cell(p)).or_default().push(*p);
    }
    type Cell = (Vec<[f64; 3]>, [f64; 3], [f64; 3]);
    let boxes: Vec<Cell> = cells
        .into_values()
        .map(|pts| {
            let mut l = [f64::INFINITY; 3];
            let mut h = [f64::NEG_INFINITY; 3];
            for p in &pts {
                for d in 0..3 {
                    l[d] = l[d].min(p[d]);
                    h[d] = h[d].max(p[d]);
                }
            }
            (pts, l, h)
        })
        .collect();
    // A distance reached, to start from: among the points extreme along 13
    // directions. Cell pairs that cannot beat it are never listed (a hollow
    // ROI fills most cells, and sorting every pair dominated its shape).
    const DIRS: [[f64; 3]; 13] = [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, -1.0, 0.0],
        [1.0, 0.0, 1.0],
        [1.0, 0.0, -1.0],
        [0.0, 1.0, 1.0],
        [0.0, 1.0, -1.0],
        [1.0, 1.0, 1.0],
        [1.0, 1.0, -1.0],
        [1.0, -1.0, 1.0],
        [-1.0, 1.0, 1.0],
    ];
    let mut extreme = Vec::with_capacity(2 * DIRS.len());
    for dir in DIRS {
        let dot = |p: &[f64; 3]| p[0] * dir[0] + p[1] * dir[1] + p[2] * dir[2];
        let (mut lo_p, mut hi_p) = (points[0], points[0]);
        let (mut lo_v, mut hi_v) = (dot(&points[0]), dot(&points[0]));
        for p in points {
            let v = dot(p);
            if v < lo_v {
                (lo_v, lo_p) = (v, *p);
            }
            if v > hi_v {
                (hi_v, hi_p) = (v, *p);
            }
        }
        extreme.push(lo_p);
        extreme.push(hi_p);
    }
    brute_max(&extreme, &extreme, &mut best);
    let mut pairs = Vec::new();
    for i in 0..boxes.len() {
        for j in i..boxes.len() {
            let (a, b) = (&boxes[i], &boxes[j]);
            let ub: f64 = (0..3).map(|d| (a.2[d] - b.1[d]).abs().max((b.2[d] - a.1[d]).abs()).powi(2)).sum();
            if ub > best {
                pairs.push((ub, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ub, i, j) in pairs {
        if ub <= best {
            break;
        }
        brute_max(&boxes[i].0, &boxes[j].0, &mut best);
    }
    best
}

/// Maximum diameters (slice, column, row, 3D) between the mesh vertices
/// (midpoints of edges joining an ROI and a non-ROI voxel of the padded
/// mask), as PyRadiomics; 2D diameters between vertices in the same plane.
pub fn diameters(mask: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> [f64; 4] {
    let [nz, ny, nx] = dims;
    let idx = |z: usize, y: usize, x: usize| (z * ny + y) * nx + x;
    // Vertices in doubled voxel coordinates (integers), z, y, x.
    let mut verts: Vec<[usize; 3]> = Vec::new();
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let m = mask[idx(z, y, x)];
                if z + 1 < nz && mask[idx(z + 1, y, x)] != m {
                    verts.push([2 * z + 1, 2 * y, 2 * x]);
                }
                if y + 1 < ny && mask[idx(z, y + 1, x)] != m {
                    verts.push([2 * z, 2 * y + 1, 2 * x]);
                }
                if x + 1 < nx && mask[idx(z, y, x + 1)] != m {
                    verts.push([2 * z, 2 * y, 2 * x + 1]);
                }
            }
        }
    }
    let phys = |v: &[usize; 3]| [0, 1, 2].map(|d| v[d] as f64 / 2.0 * spacing[d]);
    // The four maxima side by side (a maximum is the same in any order).
    use rayon::prelude::*;
    let mut out = [0.0; 4];
    out.par_iter_mut().enumerate().for_each(|(axis, o)| {
        *o = if axis == 3 {
            max_dist2(&verts.iter().map(phys).collect::<Vec<_>>())
        } else {
            let mut groups: std::collections::BTreeMap<usize, Vec<[f64; 3]>> = std::collections::BTreeMap::new();
            for v in &verts {
                groups.entry(v[axis]).or_default().push(phys(v));
            }
            groups.values().map(|g| max_dist2(g)).fold(0.0, f64::max)
        };
    });
    out.map(f64::sqrt)
}

/// Eigenvalues of a symmetric 3×3 matrix, ascending (Jacobi rotations).
pub fn sym_eigen3(mut a: [[f64; 3]; 3]) -> [f64; 3] {
    let v = super::glcm::jacobi_eigenvalues(&mut a.iter_mut().map(|r| r.to_vec()).collect::<Vec<_>>());
    let mut e = [v[0], v[1], v[2]];
    e.sort_by(f64::total_cmp);
    e
}

/// Shape features of the ROI (`mask` cropped to its bounding box; dims and
/// spacing x, y, z).
pub fn compute(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], enabled: &[&str], out: &mut Features) {
    // Pad by one voxel on every side, in z, y, x order.
    let pd = [dims[2] + 2, dims[1] + 2, dims[0] + 2];
    let sp = [spacing[2], spacing[1], spacing[0]];
    let mut padded = vec![false; pd[0] * pd[1] * pd[2]];
    let mut coords: Vec<[f64; 3]> = Vec::new();
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                if mask[x + dims[0] * (y + dims[1] * z)] {
                    padded[((z + 1) * pd[1] + y + 1) * pd[2] + x + 1] = true;
                    coords.push([(z + 1) as f64 * sp[0], (y + 1) as f64 * sp[1], (x + 1) as f64 * sp[2]]);
                }
            }
        }
    }
    // The mesh (summed in its own order) beside the diameters.
    let ((area, volume), diam) = rayon::join(|| mesh_area_volume(&padded, pd, sp), || diameters(&padded, pd, sp));
    let np = coords.len() as f64;
    let mut mean = [0.0; 3];
    for c in &coords {
        for d in 0..3 {
            mean[d] += c[d];
        }
    }
    for m in &mut mean {
        *m /= np;
    }
    let mut cov = [[0.0; 3]; 3];
    let s = np.sqrt();
    for c in &coords {
        let v = [(c[0] - mean[0]) / s, (c[1] - mean[1]) / s, (c[2] - mean[2]) / s];
        for i in 0..3 {
            for j in 0..3 {
                cov[i][j] += v[i] * v[j];
            }
        }
    }
    let mut eig = sym_eigen3(cov);
    for e in &mut eig {
        if *e < 0.0 && *e > -1e-10 {
            *e = 0.0;
        }
    }
    let axis = |e: f64| if e < 0.0 { f64::NAN } else { e.sqrt() * 4.0 };
    for &name in enabled {
        let v = match name {
            "MeshVolume" => volume,
            "VoxelVolume" => np * sp[0] * sp[1] * sp[2],
            "SurfaceArea" => area,
            "SurfaceVolumeRatio" => area / volume,
            "Sphericity" => (36.0 * std::f64::consts::PI * volume * volume).powf(1.0 / 3.0) / area,
            "Compactness1" => volume / (area.powf(1.5) * std::f64::consts::PI.sqrt()),
            "Compactness2" => 36.0 * std::f64::consts::PI * volume * volume / area.powi(3),
            "SphericalDisproportion" => area / (36.0 * std::f64::consts::PI * volume * volume).powf(1.0 / 3.0),
            "Maximum3DDiameter" => diam[3],
            "Maximum2DDiameterSlice" => diam[0],
            "Maximum2DDiameterColumn" => diam[1],
            "Maximum2DDiameterRow" => diam[2],
            "MajorAxisLength" => axis(eig[2]),
            "MinorAxisLength" => axis(eig[1]),
            "LeastAxisLength" => axis(eig[0]),
            "Elongation" => {
                if eig[1] < 0.0 || eig[2] < 0.0 {
                    f64::NAN
                } else {
                    (eig[1] / eig[2]).sqrt()
                }
            }
            "Flatness" => {
                if eig[0] < 0.0 || eig[2] < 0.0 {
                    f64::NAN
                } else {
                    (eig[0] / eig[2]).sqrt()
                }
            }
            _ => continue,
        };
        out.push(name.to_string(), v);
    }
}

/// The public-domain marching-cubes triangle table (Bourke / Bloyd), first
/// 128 cases: edge indices, three per triangle.
pub(super) const TRIANGLES: [&[u8]; 128] = [
    &[],
    &[0, 8, 3],
    &[0, 1, 9],
    &[1, 8, 3, 9, 8, 1],
    &[1, 2, 10],
    &[0, 8, 3, 1, 2, 10],
    &[9, 2, 10, 0, 2, 9],
    &[2, 8, 3, 2, 10, 8, 10, 9, 8],
    &[3, 11, 2],
    &[0, 11, 2, 8, 11, 0],
    &[1, 9, 0, 2, 3, 11],
    &[1, 11, 2, 1, 9, 11, 9, 8, 11],
    &[3, 10, 1, 11, 10, 3],
    &[0, 10, 1, 0, 8, 10, 8, 11, 10],
    &[3, 9, 0, 3, 11, 9, 11, 10, 9],
    &[9, 8, 10, 10, 8, 11],
    &[4, 7, 8],
    &[4, 3, 0, 7, 3, 4],
    &[0, 1, 9, 8, 4, 7],
    &[4, 1, 9, 4, 7, 1, 7, 3, 1],
    &[1, 2, 10, 8, 4, 7],
    &[3, 4, 7, 3, 0, 4, 1, 2, 10],
    &[9, 2, 10, 9, 0, 2, 8, 4, 7],
    &[2, 10, 9, 2, 9, 7, 2, 7, 3, 7, 9, 4],
    &[8, 4, 7, 3, 11, 2],
    &[11, 4, 7, 11, 2, 4, 2, 0, 4],
    &[9, 0, 1, 8, 4, 7, 2, 3, 11],
    &[4, 7, 11, 9, 4, 11, 9, 11, 2, 9, 2, 1],
    &[3, 10, 1, 3, 11, 10, 7, 8, 4],
    &[1, 11, 10, 1, 4, 11, 1, 0, 4, 7, 11, 4],
    &[4, 7, 8, 9, 0, 11, 9, 11, 10, 11, 0, 3],
    &[4, 7, 11, 4, 11, 9, 9, 11, 10],
    &[9, 5, 4],
    &[9, 5, 4, 0, 8, 3],
    &[0, 5, 4, 1, 5, 0],
    &[8, 5, 4, 8, 3, 5, 3, 1, 5],
    &[1, 2, 10, 9, 5, 4],
    &[3, 0, 8, 1, 2, 10, 4, 9, 5],
    &[5, 2, 10, 5, 4, 2, 4, 0, 2],
    &[2, 10, 5, 3, 2, 5, 3, 5, 4, 3, 4, 8],
    &[9, 5, 4, 2, 3, 11],
    &[0, 11, 2, 0, 8, 11, 4, 9, 5],
    &[0, 5, 4, 0, 1, 5, 2, 3, 11],
    &[2, 1, 5, 2, 5, 8, 2, 8, 11, 4, 8, 5],
    &[10, 3, 11, 10, 1, 3, 9, 5, 4],
    &[4, 9, 5, 0, 8, 1, 8, 10, 1, 8, 11, 10],
    &[5, 4, 0, 5, 0, 11, 5, 11, 10, 11, 0, 3],
    &[5, 4, 8, 5, 8, 10, 10, 8, 11],
    &[9, 7, 8, 5, 7, 9],
    &[9, 3, 0, 9, 5, 3, 5, 7, 3],
    &[0, 7, 8, 0, 1, 7, 1, 5, 7],
    &[1, 5, 3, 3, 5, 7],
    &[9, 7, 8, 9, 5, 7, 10, 1, 2],
    &[10, 1, 2, 9, 5, 0, 5, 3, 0, 5, 7, 3],
    &[8, 0, 2, 8, 2, 5, 8, 5, 7, 10, 5, 2],
    &[2, 10, 5, 2, 5, 3, 3, 5, 7],
    &[7, 9, 5, 7, 8, 9, 3, 11, 2],
    &[9, 5, 7, 9, 7, 2, 9, 2, 0, 2, 7, 11],
    &[2, 3, 11, 0, 1, 8, 1, 7, 8, 1, 5, 7],
    &[11, 2, 1, 11, 1, 7, 7, 1, 5],
    &[9, 5, 8, 8, 5, 7, 10, 1, 3, 10, 3, 11],
    &[5, 7, 0, 5, 0, 9, 7, 11, 0, 1, 0, 10, 11, 10, 0],
    &[11, 10, 0, 11, 0, 3, 10, 5, 0, 8, 0, 7, 5, 7, 0],
    &[11, 10, 5, 7, 11, 5],
    &[10, 6, 5],
    &[0, 8, 3, 5, 10, 6],
    &[9, 0, 1, 5, 10, 6],
    &[1, 8, 3, 1, 9, 8, 5, 10, 6],
    &[1, 6, 5, 2, 6, 1],
    &[1, 6, 5, 1, 2, 6, 3, 0, 8],
    &[9, 6, 5, 9, 0, 6, 0, 2, 6],
    &[5, 9, 8, 5, 8, 2, 5, 2, 6, 3, 2, 8],
    &[2, 3, 11, 10, 6, 5],
    &[11, 0, 8, 11, 2, 0, 10, 6, 5],
    &[0, 1, 9, 2, 3, 11, 5, 10, 6],
    &[5, 10, 6, 1, 9, 2, 9, 11, 2, 9, 8, 11],
    &[6, 3, 11, 6, 5, 3, 5, 1, 3],
    &[0, 8, 11, 0, 11, 5, 0, 5, 1, 5, 11, 6],
    &[3, 11, 6, 0, 3, 6, 0, 6, 5, 0, 5, 9],
    &[6, 5, 9, 6, 9, 11, 11, 9, 8],
    &[5, 10, 6, 4, 7, 8],
    &[4, 3, 0, 4, 7, 3, 6, 5, 10],
    &[1, 9, 0, 5, 10, 6, 8, 4, 7],
    &[10, 6, 5, 1, 9, 7, 1, 7, 3, 7, 9, 4],
    &[6, 1, 2, 6, 5, 1, 4, 7, 8],
    &[1, 2, 5, 5, 2, 6, 3, 0, 4, 3, 4, 7],
    &[8, 4, 7, 9, 0, 5, 0, 6, 5, 0, 2, 6],
    &[7, 3, 9, 7, 9, 4, 3, 2, 9, 5, 9, 6, 2, 6, 9],
    &[3, 11, 2, 7, 8, 4, 10, 6, 5],
    &[5, 10, 6, 4, 7, 2, 4, 2, 0, 2, 7, 11],
    &[0, 1, 9, 4, 7, 8, 2, 3, 11, 5, 10, 6],
    &[9, 2, 1, 9, 11, 2, 9, 4, 11, 7, 11, 4, 5, 10, 6],
    &[8, 4, 7, 3, 11, 5, 3, 5, 1, 5, 11, 6],
    &[5, 1, 11, 5, 11, 6, 1, 0, 11, 7, 11, 4, 0, 4, 11],
    &[0, 5, 9, 0, 6, 5, 0, 3, 6, 11, 6, 3, 8, 4, 7],
    &[6, 5, 9, 6, 9, 11, 4, 7, 9, 7, 11, 9],
    &[10, 4, 9, 6, 4, 10],
    &[4, 10, 6, 4, 9, 10, 0, 8, 3],
    &[10, 0, 1, 10, 6, 0, 6, 4, 0],
    &[8, 3, 1, 8, 1, 6, 8, 6, 4, 6, 1, 10],
    &[1, 4, 9, 1, 2, 4, 2, 6, 4],
    &[3, 0, 8, 1, 2, 9, 2, 4, 9, 2, 6, 4],
    &[0, 2, 4, 4, 2, 6],
    &[8, 3, 2, 8, 2, 4, 4, 2, 6],
    &[10, 4, 9, 10, 6, 4, 11, 2, 3],
    &[0, 8, 2, 2, 8, 11, 4, 9, 10, 4, 10, 6],
    &[3, 11, 2, 0, 1, 6, 0, 6, 4, 6, 1, 10],
    &[6, 4, 1, 6, 1, 10, 4, 8, 1, 2, 1, 11, 8, 11, 1],
    &[9, 6, 4, 9, 3, 6, 9, 1, 3, 11, 6, 3],
    &[8, 11, 1, 8, 1, 0, 11, 6, 1, 9, 1, 4, 6, 4, 1],
    &[3, 11, 6, 3, 6, 0, 0, 6, 4],
    &[6, 4, 8, 11, 6, 8],
    &[7, 10, 6, 7, 8, 10, 8, 9, 10],
    &[0, 7, 3, 0, 10, 7, 0, 9, 10, 6, 7, 10],
    &[10, 6, 7, 1, 10, 7, 1, 7, 8, 1, 8, 0],
    &[10, 6, 7, 10, 7, 1, 1, 7, 3],
    &[1, 2, 6, 1, 6, 8, 1, 8, 9, 8, 6, 7],
    &[2, 6, 9, 2, 9, 1, 6, 7, 9, 0, 9, 3, 7, 3, 9],
    &[7, 8, 0, 7, 0, 6, 6, 0, 2],
    &[7, 3, 2, 6, 7, 2],
    &[2, 3, 11, 10, 6, 8, 10, 8, 9, 8, 6, 7],
    &[2, 0, 7, 2, 7, 11, 0, 9, 7, 6, 7, 10, 9, 10, 7],
    &[1, 8, 0, 1, 7, 8, 1, 10, 7, 6, 7, 10, 2, 3, 11],
    &[11, 2, 1, 11, 1, 7, 10, 6, 1, 6, 7, 1],
    &[8, 9, 6, 8, 6, 7, 9, 1, 6, 11, 6, 3, 1, 3, 6],
    &[0, 9, 1, 11, 6, 7],
    &[7, 8, 0, 7, 0, 6, 3, 11, 0, 11, 6, 0],
    &[7, 11, 6],
];
