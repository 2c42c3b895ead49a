//! Marching squares on a binary slice: closed contours through the midpoints
//! between inside and outside pixel centres.
//!
//! Samples are pixel centres; the image is surrounded by a ring of outside
//! samples, so masks touching the border close there. Every contour keeps the
//! inside on the same side (outer boundaries run one way, holes the other),
//! saddle cells keep diagonally touching inside pixels apart (4-connected
//! inside, 8-connected outside: a background pixel touching the outside only
//! diagonally is a notch of the outer contour, not a hole, which plastimatch
//! rasterises more faithfully), and collinear vertices are dropped.
//!
//! Each vertex lies between an inside and an outside pixel centre, moved
//! `INSET` pixels from the midpoint towards the inside centre. Filling the
//! contours at pixel centres with the even-odd rule (plastimatch, most
//! planning systems) gives back exactly the mask's pixels, and so does
//! rounding the vertices to the nearest pixel and filling boundary pixels too
//! (rt-utils: `np.around` + OpenCV `fillPoly`), which exact midpoints
//! (x.5 rounded half to even) would not.

use std::collections::HashMap;

/// How far (pixels) a vertex sits from the midpoint towards the inside centre.
pub const INSET: f64 = 0.05;

/// One closed contour in pixel coordinates: `x` along columns (i), `y` along
/// rows (j), the pixel (i, j) centred at (i, j).
#[derive(Debug, Clone, PartialEq)]
pub struct Contour {
    /// Vertices (the closing edge back to the first is implied).
    pub points: Vec<[f64; 2]>,
    /// True when the contour bounds a hole (opposite orientation).
    pub hole: bool,
}

impl Contour {
    /// Signed area (pixels²): negative for outer boundaries (counter-clockwise
    /// on screen, y down), positive for holes.
    pub fn signed_area(&self) -> f64 {
        let n = self.points.len();
        (0..n)
            .map(|a| {
                let (p, q) = (self.points[a], self.points[(a + 1) % n]);
                p[0] * q[1] - q[0] * p[1]
            })
            .sum::<f64>()
            / 2.0
    }
}

/// Traces all contours of `mask` (`width` × `height`, x fastest; non-zero is
/// inside), outer boundaries and holes alike, in a deterministic order.
pub fn trace(mask: &[u8], width: usize, height: usize) -> Vec<Contour> {
    let (w, h) = (width as i64, height as i64);
    let at = |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h && mask[(x + w * y) as usize] != 0;
    // Vertices in doubled coordinates (2x, 2y); next[start] = end of the one
    // directed segment leaving each vertex.
    let mut next: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
    let mut starts = Vec::new();
    for y in -1..h {
        for x in -1..w {
            let corner = [at(x, y), at(x + 1, y), at(x + 1, y + 1), at(x, y + 1)];
            if corner.iter().all(|&c| c) || corner.iter().all(|&c| !c) {
                continue;
            }
            // Edge e runs from corner e to corner e+1 (clockwise on screen);
            // its midpoint in doubled coordinates.
            let mid = [(2 * x + 1, 2 * y), (2 * x + 2, 2 * y + 1), (2 * x + 1, 2 * y + 2), (2 * x, 2 * y + 1)];
            let entering = |e: usize| !corner[e] && corner[(e + 1) % 4];
            let leaving = |e: usize| corner[e] && !corner[(e + 1) % 4];
            let ins: Vec<usize> = (0..4).filter(|&e| entering(e)).collect();
            if ins.len() == 1 {
                let Some(out) = (0..4).find(|&e| leaving(e)) else { continue };
                next.insert(mid[ins[0]], mid[out]);
                starts.push(mid[ins[0]]);
            } else {
                // Saddle: cut off each inside corner; the edge after an
                // entering edge leaves the inside at that corner.
                for &e in &ins {
                    next.insert(mid[e], mid[(e + 1) % 4]);
                    starts.push(mid[e]);
                }
            }
        }
    }
    let mut out = Vec::new();
    for s in starts {
        if !next.contains_key(&s) {
            continue;
        }
        let mut ring = vec![s];
        let mut cur = s;
        while let Some(n) = next.remove(&cur) {
            if n == s {
                break;
            }
            ring.push(n);
            cur = n;
        }
        let points = simplify(&ring);
        if points.len() < 3 {
            continue;
        }
        let exact =
            Contour { points: points.iter().map(|&(x, y)| [x as f64 / 2.0, y as f64 / 2.0]).collect(), hole: false };
        let hole = exact.signed_area() > 0.0;
        let inset = points
            .iter()
            .map(|&(x, y)| {
                // The two samples the vertex lies between; move towards the inside one.
                let (a, b) = if x % 2 != 0 {
                    (((x - 1) / 2, y / 2), ((x + 1) / 2, y / 2))
                } else {
                    ((x / 2, (y - 1) / 2), (x / 2, (y + 1) / 2))
                };
                let (inside, outside) = if at(a.0, a.1) { (a, b) } else { (b, a) };
                let f = 0.5 - INSET;
                [
                    inside.0 as f64 + f * (outside.0 - inside.0) as f64,
                    inside.1 as f64 + f * (outside.1 - inside.1) as f64,
                ]
            })
            .collect();
        out.push(Contour { points: inset, hole });
    }
    out
}

/// Drops vertices on the straight line between their neighbours.
fn simplify(ring: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let n = ring.len();
    if n < 3 {
        return ring.to_vec();
    }
    (0..n)
        .filter(|&a| {
            let (p, c, q) = (ring[(a + n - 1) % n], ring[a], ring[(a + 1) % n]);
            (c.0 - p.0) * (q.1 - c.1) - (c.1 - p.1) * (q.0 - c.0) != 0
        })
        .map(|a| ring[a])
        .collect()
}

/// Even-odd fill of contours at pixel centres (the way a viewer reads holes
/// as separate contours); used to check `trace`.
pub fn fill_even_odd(contours: &[Contour], width: usize, height: usize) -> Vec<u8> {
    let mut m = vec![0u8; width * height];
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f64, y as f64);
            let mut inside = false;
            for c in contours {
                let n = c.points.len();
                for a in 0..n {
                    let (p, q) = (c.points[a], c.points[(a + 1) % n]);
                    if (p[1] > py) != (q[1] > py) && px < p[0] + (py - p[1]) * (q[0] - p[0]) / (q[1] - p[1]) {
                        inside = !inside;
                    }
                }
            }
            m[x + width * y] = u8::from(inside);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let m = rows.iter().flat_map(|r| r.bytes().map(|b| u8::from(b == b'#'))).collect();
        (m, w, h)
    }

    fn check(rows: &[&str]) -> Vec<Contour> {
        let (m, w, h) = grid(rows);
        let cs = trace(&m, w, h);
        assert_eq!(fill_even_odd(&cs, w, h), m, "even-odd fill gives the mask back: {cs:?}");
        for c in &cs {
            assert!(c.points.len() >= 3);
            assert_eq!(c.hole, c.signed_area() > 0.0);
        }
        cs
    }

    #[test]
    fn square() {
        let cs = check(&["....", ".##.", ".##.", "...."]);
        assert_eq!(cs.len(), 1);
        assert!(!cs[0].hole);
        // Octagon near the edge midpoints: 2×2 pixels less four corners, inset.
        assert_eq!(cs[0].points.len(), 8);
        let f = 0.5 - INSET;
        let side = 1.0 + 2.0 * f;
        assert!((cs[0].signed_area() + side * side - 2.0 * f * f).abs() < 1e-12);
    }

    #[test]
    fn single_voxel_is_a_diamond() {
        let cs = check(&["...", ".#.", "..."]);
        assert_eq!(cs.len(), 1);
        let mut p = cs[0].points.clone();
        p.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let f = 0.5 - INSET;
        let want = [[1.0 - f, 1.0], [1.0, 1.0 - f], [1.0, 1.0 + f], [1.0 + f, 1.0]];
        for (a, b) in p.iter().zip(want) {
            assert!((a[0] - b[0]).abs() < 1e-12 && (a[1] - b[1]).abs() < 1e-12, "{p:?}");
        }
        assert!((cs[0].signed_area() + 2.0 * f * f).abs() < 1e-12);
    }

    #[test]
    fn ring_with_hole_gives_outer_and_hole_of_opposite_orientation() {
        let cs = check(&[".....", ".###.", ".#.#.", ".###.", "....."]);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs.iter().filter(|c| c.hole).count(), 1);
        let outer = cs.iter().find(|c| !c.hole).expect("outer");
        let hole = cs.iter().find(|c| c.hole).expect("hole");
        assert!(outer.signed_area() < 0.0 && hole.signed_area() > 0.0);
        // The hole's diamond around the centre pixel (2, 2), inset away from it.
        let f = 0.5 + INSET;
        assert!((hole.signed_area() - 2.0 * f * f).abs() < 1e-12);
    }

    #[test]
    fn diagonal_touching_voxels_get_separate_contours() {
        let cs = check(&["....", ".#..", "..#.", "...."]);
        assert_eq!(cs.len(), 2, "4-connected inside: {cs:?}");
        assert!(cs.iter().all(|c| !c.hole && c.points.len() == 4));
        let cs = check(&["....", "..#.", ".#..", "...."]);
        assert_eq!(cs.len(), 2);
        // A pixel touching the outside diagonally only is a notch, not a hole.
        let cs = check(&[".###", "#.##", "####"]);
        assert_eq!(cs.len(), 1);
        assert!(!cs[0].hole);
        // A checkerboard keeps every inside pixel and each outside pixel.
        check(&["#.#.", ".#.#", "#.#.", ".#.#"]);
    }

    #[test]
    fn masks_touching_the_image_border_close_outside_it() {
        let cs = check(&["##", "##"]);
        assert_eq!(cs.len(), 1);
        assert!(cs[0].points.iter().any(|p| p[0] < 0.0) && cs[0].points.iter().any(|p| p[1] > 1.0));
        let cs = check(&["###", "#.#", "###"]);
        assert_eq!(cs.len(), 2);
        check(&["#..", "...", "..#"]);
        assert!(trace(&[0; 9], 3, 3).is_empty());
    }

    #[test]
    fn random_masks_fill_back_exactly() {
        let mut state = 12345u64;
        for _ in 0..50 {
            let (w, h) = (9, 7);
            let m: Vec<u8> = (0..w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    u8::from((state >> 33).is_multiple_of(3))
                })
                .collect();
            let cs = trace(&m, w, h);
            assert_eq!(fill_even_odd(&cs, w, h), m);
        }
    }
}
