//! `mip.png`: the picture a physician glances at first.
//!
//! PET profiles: a coronal maximum-intensity projection of the PET in SUV on
//! the reference grid, in inverted grey as nuclear medicine reads it (white =
//! SUV [`SUV_WHITE`], black = SUV [`SUV_BLACK`] and above), head at the top,
//! the patient's right on the image's left (radiological convention). Each
//! lesion's projected footprint is outlined (1 pixel) in its palette colour
//! ([`super::palette::lesion_colour`]) and its number, as in report.json, is
//! written beside it in the same colour (a built-in 5×7 digit font).
//!
//! CT-only profiles: three axial slices (at 25, 50 and 75% of the largest
//! finding's extent, or the middle slice when there is none) side by side,
//! CT window W400/L40, anterior at the top, the patient's right on the left,
//! each class outlined in the palette colour of its class value.
//!
//! Orientation comes from the direction cosines (LPS): each picture axis is
//! the voxel axis nearest to the wanted patient axis (columns: +x, towards
//! the patient's left; rows: −z, towards the feet, for the coronal picture
//! and +y, towards the back, for the axial one), reversed where it points the
//! other way. A few degrees of obliquity are thus not undone: the picture is
//! for looking, not for measuring.
//!
//! Pixels are square in mm: the pixel size is
//! `min(column spacing, row spacing) / s`, with `s` the smallest integer ≥ 1
//! (at most [`MAX_UPSCALE`]) that makes the picture at least [`MIN_HEIGHT`]
//! pixels tall; a picture axis of `n` voxels of spacing `d` is
//! `round(n·d / pixel)` pixels long, and pixel `x` shows voxel
//! `floor((x + 0.5)·pixel / d)` (nearest neighbour).

use super::palette::lesion_colour;
use crate::gpu::{Connectivity, cpu};
use crate::volume::{Geometry, Volume};

/// SUV shown white in the coronal MIP.
pub const SUV_WHITE: f32 = 0.0;
/// SUV shown black (and everything above it).
pub const SUV_BLACK: f32 = 10.0;
/// CT window level (HU) of the axial picture.
pub const CT_LEVEL: f32 = 40.0;
/// CT window width (HU) of the axial picture.
pub const CT_WIDTH: f32 = 400.0;
/// Pictures are upscaled (integer factor) to at least this many pixels tall.
pub const MIN_HEIGHT: usize = 512;
/// The largest upscaling factor.
pub const MAX_UPSCALE: usize = 8;
/// White gap (pixels) between the axial panels.
pub const PANEL_GAP: usize = 8;

/// An 8-bit RGB picture, row by row, top row first.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width × height × 3` bytes.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// A picture of one colour.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Self {
        Self { width, height, rgb: colour.repeat(width * height) }
    }

    /// The colour at (x, y).
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let o = 3 * (x + self.width * y);
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    /// Sets (x, y) when it lies inside the picture.
    pub fn set(&mut self, x: i64, y: i64, colour: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let o = 3 * (x as usize + self.width * y as usize);
            self.rgb[o..o + 3].copy_from_slice(&colour);
        }
    }

    /// Fills the `w × h` rectangle with its top-left corner at (x, y).
    pub fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, colour: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, colour);
            }
        }
    }

    /// Copies `other` in with its top-left corner at (x, y).
    fn blit(&mut self, other: &Picture, x: usize, y: usize) {
        for row in 0..other.height {
            for col in 0..other.width {
                self.set((x + col) as i64, (y + row) as i64, other.get(col, row));
            }
        }
    }

    /// The picture as a PNG file (8-bit RGB).
    pub fn encode_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width.max(1) as u32, self.height.max(1) as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        if self.width == 0 || self.height == 0 {
            w.write_image_data(&[255, 255, 255])?;
        } else {
            w.write_image_data(&self.rgb)?;
        }
        w.finish()?;
        Ok(out)
    }
}

/// The 5×7 digits 0–9, one row per byte, the leftmost pixel in bit 4.
const DIGITS: [[u8; 7]; 10] = [
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
];

/// The 5×7 glyphs of the other characters the pictures write (capitals;
/// lower case is written as capitals), same layout as [`DIGITS`].
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        d @ '0'..='9' => DIGITS[usize::from(d as u8 - b'0')],
        'A' => [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'B' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
        'C' => [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        'D' => [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        'F' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
        'G' => [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        'H' => [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'I' => [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        'J' => [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        'K' => [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        'M' => [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
        'N' => [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
        'O' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        'Q' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        'T' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        'U' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'V' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        'W' => [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
        'X' => [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
        'Y' => [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
        'Z' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        '/' => [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        '>' => [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        _ => [0; 7],
    }
}

/// Width in pixels of `text` written at `scale` (5 per character, 1 between).
pub fn text_width(text: &str, scale: usize) -> usize {
    (6 * text.chars().count()).saturating_sub(1) * scale
}

/// Writes `text` (digits, capitals, `. - / : > +` and space) with its
/// top-left corner at (x, y), each font pixel a `scale × scale` square.
pub fn draw_text(pic: &mut Picture, text: &str, x: i64, y: i64, scale: usize, colour: [u8; 3]) {
    let s = scale.max(1) as i64;
    for (d, ch) in text.chars().enumerate() {
        let left = x + d as i64 * 6 * s;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5 {
                if bits & (0b10000 >> col) != 0 {
                    pic.fill(left + col * s, y + row as i64 * s, s, s, colour);
                }
            }
        }
    }
}

/// Width in pixels of `n` written at `scale` (5 per digit, 1 between digits).
pub fn number_width(n: u32, scale: usize) -> usize {
    let digits = n.to_string().len();
    (6 * digits - 1) * scale
}

/// Writes the decimal number `n` with its top-left corner at (x, y), each font
/// pixel a `scale × scale` square; pixels outside the picture are dropped.
pub fn draw_number(pic: &mut Picture, n: u32, x: i64, y: i64, scale: usize, colour: [u8; 3]) {
    let s = scale.max(1) as i64;
    for (d, ch) in n.to_string().bytes().enumerate() {
        let glyph = &DIGITS[usize::from(ch - b'0')];
        let left = x + d as i64 * 6 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..5 {
                if bits & (0b10000 >> col) != 0 {
                    for dy in 0..s {
                        for dx in 0..s {
                            pic.set(left + col * s + dx, y + row as i64 * s + dy, colour);
                        }
                    }
                }
            }
        }
    }
}

/// Which voxel axis runs along the picture's columns, rows and depth, and
/// whether the column and row axes are reversed.
#[derive(Debug, Clone, PartialEq)]
struct View {
    /// Voxel axes of columns, rows and depth.
    axes: [usize; 3],
    /// Reversed (column, row).
    flip: [bool; 2],
    /// Voxels along columns, rows and depth.
    n: [usize; 3],
    /// Spacing along columns, rows and depth, mm.
    sp: [f64; 3],
}

impl View {
    /// The view whose columns run along `col` (LPS axis, sign) and rows along
    /// `row`: of the six assignments of voxel axes, the one best aligned.
    fn new(g: &Geometry, col: (usize, f64), row: (usize, f64)) -> Self {
        let depth_lps = 3 - col.0 - row.0;
        let d = &g.direction;
        let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let score = |p: &[usize; 3]| d[p[0]][col.0].abs() + d[p[1]][row.0].abs() + d[p[2]][depth_lps].abs();
        let mut best = perms[0];
        for p in perms {
            if score(&p) > score(&best) + 1e-12 {
                best = p;
            }
        }
        View {
            axes: best,
            flip: [d[best[0]][col.0] * col.1 < 0.0, d[best[1]][row.0] * row.1 < 0.0],
            n: best.map(|a| g.dims[a]),
            sp: best.map(|a| g.spacing[a]),
        }
    }

    /// (u, v, depth) of voxel (i, j, k).
    fn uvd(&self, ijk: [usize; 3]) -> [usize; 3] {
        let mut p = self.axes.map(|a| ijk[a]);
        for t in 0..2 {
            if self.flip[t] {
                p[t] = self.n[t] - 1 - p[t];
            }
        }
        p
    }

    /// Voxel (i, j, k) of (u, v, depth).
    fn voxel(&self, uvd: [usize; 3]) -> [usize; 3] {
        let mut p = uvd;
        for t in 0..2 {
            if self.flip[t] {
                p[t] = self.n[t] - 1 - p[t];
            }
        }
        let mut ijk = [0; 3];
        for t in 0..3 {
            ijk[self.axes[t]] = p[t];
        }
        ijk
    }
}

/// The pixel grid of a view: square pixels of `pixel` mm.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Raster {
    width: usize,
    height: usize,
    pixel: f64,
    sp: [f64; 2],
    n: [usize; 2],
}

impl Raster {
    fn new(view: &View) -> Self {
        let [nc, nr, _] = view.n;
        let [sc, sr, _] = view.sp;
        let base = sc.min(sr);
        let h0 = ((nr as f64 * sr / base).round() as usize).max(1);
        let scale = MIN_HEIGHT.div_ceil(h0).clamp(1, MAX_UPSCALE);
        let pixel = base / scale as f64;
        let width = ((nc as f64 * sc / pixel).round() as usize).max(1);
        let height = ((nr as f64 * sr / pixel).round() as usize).max(1);
        Raster { width, height, pixel, sp: [sc, sr], n: [nc, nr] }
    }

    /// The view's (u, v) shown at pixel (x, y).
    fn source(&self, x: usize, y: usize) -> (usize, usize) {
        let u = (((x as f64 + 0.5) * self.pixel / self.sp[0]).floor() as usize).min(self.n[0].saturating_sub(1));
        let v = (((y as f64 + 0.5) * self.pixel / self.sp[1]).floor() as usize).min(self.n[1].saturating_sub(1));
        (u, v)
    }

    /// The pixel range (inclusive) that shows source columns `lo..=hi` along
    /// picture axis `t` (0: x, 1: y).
    fn pixels(&self, t: usize, lo: usize, hi: usize) -> (usize, usize) {
        let r = self.sp[t] / self.pixel;
        let len = if t == 0 { self.width } else { self.height };
        let a = (lo as f64 * r - 0.5).floor().max(0.0) as usize;
        let b = (((hi + 1) as f64 * r - 0.5).ceil().max(0.0) as usize).min(len.saturating_sub(1));
        (a, b)
    }
}

/// A projected footprint: a bitmap over the view's (u, v) box.
struct Footprint {
    u0: usize,
    v0: usize,
    w: usize,
    h: usize,
    bits: Vec<bool>,
}

impl Footprint {
    fn contains(&self, u: usize, v: usize) -> bool {
        u >= self.u0 && v >= self.v0 && u < self.u0 + self.w && v < self.v0 + self.h && {
            self.bits[(u - self.u0) + self.w * (v - self.v0)]
        }
    }
}

/// Footprints of labels 1..=count (`label_at`: the label of a voxel by its
/// linear index) projected along the view's depth, or only in the slice at
/// depth `slice` (which alone is then read).
fn footprints(
    view: &View,
    dims: [usize; 3],
    count: u32,
    slice: Option<usize>,
    label_at: impl Fn(usize) -> u32,
) -> Vec<Footprint> {
    let n = count as usize;
    let mut boxes = vec![[usize::MAX, usize::MAX, 0usize, 0usize]; n + 1];
    let visit = |f: &mut dyn FnMut(usize, usize, usize)| match slice {
        None => {
            for k in 0..dims[2] {
                for j in 0..dims[1] {
                    let row = dims[0] * (j + dims[1] * k);
                    for i in 0..dims[0] {
                        let l = label_at(row + i) as usize;
                        if l != 0 && l <= n {
                            let [u, v, _] = view.uvd([i, j, k]);
                            f(l, u, v);
                        }
                    }
                }
            }
        }
        Some(d) => {
            for v in 0..view.n[1] {
                for u in 0..view.n[0] {
                    let [i, j, k] = view.voxel([u, v, d]);
                    let l = label_at(i + dims[0] * (j + dims[1] * k)) as usize;
                    if l != 0 && l <= n {
                        f(l, u, v);
                    }
                }
            }
        }
    };
    visit(&mut |l, u, v| {
        let b = &mut boxes[l];
        b[0] = b[0].min(u);
        b[1] = b[1].min(v);
        b[2] = b[2].max(u);
        b[3] = b[3].max(v);
    });
    let mut out: Vec<Footprint> = boxes
        .iter()
        .map(|b| {
            if b[0] == usize::MAX {
                Footprint { u0: 0, v0: 0, w: 0, h: 0, bits: Vec::new() }
            } else {
                let (w, h) = (b[2] - b[0] + 1, b[3] - b[1] + 1);
                Footprint { u0: b[0], v0: b[1], w, h, bits: vec![false; w * h] }
            }
        })
        .collect();
    visit(&mut |l, u, v| {
        let f = &mut out[l];
        f.bits[(u - f.u0) + f.w * (v - f.v0)] = true;
    });
    out
}

/// Outlines a footprint (pixels inside with a 4-neighbour outside) in
/// `colour`; returns the pixel box it covers (x0, y0, x1, y1), if any.
fn outline(pic: &mut Picture, r: &Raster, f: &Footprint, colour: [u8; 3]) -> Option<(usize, usize, usize, usize)> {
    if f.w == 0 {
        return None;
    }
    let (x0, x1) = r.pixels(0, f.u0, f.u0 + f.w - 1);
    let (y0, y1) = r.pixels(1, f.v0, f.v0 + f.h - 1);
    let inside = |x: i64, y: i64| {
        x >= 0 && y >= 0 && (x as usize) < r.width && (y as usize) < r.height && {
            let (u, v) = r.source(x as usize, y as usize);
            f.contains(u, v)
        }
    };
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (xi, yi) = (x as i64, y as i64);
            if inside(xi, yi) {
                bbox = Some(match bbox {
                    None => (x, y, x, y),
                    Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
                });
                if !(inside(xi - 1, yi) && inside(xi + 1, yi) && inside(xi, yi - 1) && inside(xi, yi + 1)) {
                    pic.set(xi, yi, colour);
                }
            }
        }
    }
    bbox
}

/// The digit scale for a picture this tall.
fn font_scale(height: usize) -> usize {
    (height / 256).clamp(1, 4)
}

/// The coronal MIP of `suv` with the lesions of `lesions` outlined and
/// numbered, marked as not for clinical use ([`coronal_marked`]).
pub fn coronal(suv: &Volume<f32>, lesions: Option<&Volume<u32>>) -> Picture {
    coronal_marked(suv, lesions, false)
}

/// The coronal MIP of `suv` with the lesions of `lesions` (instance map on
/// the same grid, values as in the report) outlined and numbered (numbers
/// placed so that none overlaps another, [`place_labels`]), R and L at the
/// image's top corners, and the panel to its right ([`panel`]): the
/// "NOT FOR CLINICAL USE" mark unless `clinical_use`, the SUV scale and the
/// legend (lesion number, colour, SUVmax).
pub fn coronal_marked(suv: &Volume<f32>, lesions: Option<&Volume<u32>>, clinical_use: bool) -> Picture {
    let g = &suv.geometry;
    let view = View::new(g, (0, 1.0), (2, -1.0));
    let [nc, nr, _] = view.n;
    let mut mip = vec![f32::NEG_INFINITY; nc * nr];
    let [nx, ny, nz] = g.dims;
    for k in 0..nz {
        for j in 0..ny {
            let row = nx * (j + ny * k);
            for i in 0..nx {
                let [u, v, _] = view.uvd([i, j, k]);
                let m = &mut mip[u + nc * v];
                let s = suv.data[row + i];
                if s > *m {
                    *m = s;
                }
            }
        }
    }
    let r = Raster::new(&view);
    let mut pic = Picture::filled(r.width, r.height, [255, 255, 255]);
    for y in 0..r.height {
        for x in 0..r.width {
            let (u, v) = r.source(x, y);
            let s = mip[u + nc * v];
            pic.set(x as i64, y as i64, suv_grey(s));
        }
    }
    let scale = font_scale(r.height);
    let mut legend = Vec::new();
    if let Some(l) = lesions.filter(|l| l.geometry.dims == g.dims) {
        let count = l.data.iter().copied().max().unwrap_or(0);
        let prints = footprints(&view, g.dims, count, None, |i| l.data[i]);
        let mut suv_max = vec![f32::NEG_INFINITY; count as usize + 1];
        for (&n, &s) in l.data.iter().zip(&suv.data) {
            if n != 0 && s > suv_max[n as usize] {
                suv_max[n as usize] = s;
            }
        }
        let boxes: Vec<(u32, Rect)> = (1..=count)
            .filter_map(|n| outline(&mut pic, &r, &prints[n as usize], lesion_colour(n)).map(|b| (n, b)))
            .collect();
        let sizes: Vec<(usize, usize)> = boxes.iter().map(|&(n, _)| (number_width(n, scale), 7 * scale)).collect();
        let placed = place_labels(r.width, r.height, &boxes.iter().map(|b| b.1).collect::<Vec<_>>(), &sizes, scale);
        for ((n, b), p) in boxes.iter().zip(placed) {
            if let Some(p) = p {
                if p.leader {
                    leader(&mut pic, *b, p.rect, lesion_colour(*n));
                }
                draw_number(&mut pic, *n, p.rect.0 as i64, p.rect.1 as i64, scale, lesion_colour(*n));
            }
            legend.push((*n, f64::from(suv_max[*n as usize])));
        }
    }
    side_markers(&mut pic, scale);
    panel(&pic, scale, clinical_use, true, &legend)
}

/// The grey of an SUV in the inverted-grey window ([`SUV_WHITE`]..[`SUV_BLACK`]).
fn suv_grey(s: f32) -> [u8; 3] {
    let t = if s.is_finite() { ((s - SUV_WHITE) / (SUV_BLACK - SUV_WHITE)).clamp(0.0, 1.0) } else { 0.0 };
    let grey = (255.0 - 255.0 * t).round() as u8;
    [grey, grey, grey]
}

/// A pixel box (x0, y0, x1, y1), inclusive.
pub type Rect = (usize, usize, usize, usize);

/// Where a lesion's number goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The number's box.
    pub rect: Rect,
    /// Placed away from its lesion: a leader line joins them.
    pub leader: bool,
}

fn overlaps(a: Rect, b: Rect, margin: usize) -> bool {
    a.0 <= b.2 + margin && b.0 <= a.2 + margin && a.1 <= b.3 + margin && b.1 <= a.3 + margin
}

/// Places each lesion's number (box `sizes[i]`, w × h) next to its footprint
/// box `boxes[i]` inside a `width × height` picture so that no two numbers
/// overlap (1 pixel apart at least): the first free place of right, left,
/// above, below the box (top- then bottom-aligned), then, with a leader
/// line, the free place nearest the box on a grid of the number's size,
/// avoiding other footprints where it can. `None` only where the picture has
/// no free place left (the legend still lists the lesion).
pub fn place_labels(
    width: usize,
    height: usize,
    boxes: &[Rect],
    sizes: &[(usize, usize)],
    scale: usize,
) -> Vec<Option<Placed>> {
    let gap = 2 * scale as i64;
    let mut placed: Vec<Rect> = Vec::new();
    let mut out = Vec::new();
    let fits =
        |x: i64, y: i64, w: usize, h: usize| x >= 0 && y >= 0 && x as usize + w <= width && y as usize + h <= height;
    for (i, (&b, &(w, h))) in boxes.iter().zip(sizes).enumerate() {
        let (x0, y0, x1, y1) = (b.0 as i64, b.1 as i64, b.2 as i64, b.3 as i64);
        let (wi, hi) = (w as i64, h as i64);
        let rect = |x: i64, y: i64| (x as usize, y as usize, x as usize + w - 1, y as usize + h - 1);
        let free = |x: i64, y: i64, placed: &[Rect], strict: bool| {
            fits(x, y, w, h)
                && !placed.iter().any(|p| overlaps(*p, rect(x, y), 1))
                && (!strict || !boxes.iter().enumerate().any(|(j, o)| j != i && overlaps(*o, rect(x, y), 0)))
        };
        let near = [
            (x1 + 1 + gap, y0),
            (x0 - gap - wi, y0),
            (x1 + 1 + gap, y1 - hi + 1),
            (x0 - gap - wi, y1 - hi + 1),
            (x0, y0 - gap - hi),
            (x0, y1 + 1 + gap),
            (x1 - wi + 1, y0 - gap - hi),
            (x1 - wi + 1, y1 + 1 + gap),
        ];
        let mut found = None;
        for strict in [true, false] {
            if let Some(&(x, y)) = near.iter().find(|&&(x, y)| free(x, y, &placed, strict)) {
                found = Some(Placed { rect: rect(x, y), leader: false });
                break;
            }
        }
        if found.is_none() {
            // Rings of places on the number's own grid around the box, nearest first.
            let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
            let (sx, sy) = (wi + gap, hi + gap);
            let reach = (width.max(height) as i64 / sx.min(sy).max(1)) + 1;
            'rings: for strict in [true, false] {
                for ring in 1..=reach {
                    let mut cands = Vec::new();
                    for dy in -ring..=ring {
                        for dx in -ring..=ring {
                            if dx.abs() == ring || dy.abs() == ring {
                                cands.push((cx + dx * sx - wi / 2, cy + dy * sy - hi / 2));
                            }
                        }
                    }
                    cands.sort_by_key(|&(x, y)| (x + wi / 2 - cx).pow(2) + (y + hi / 2 - cy).pow(2));
                    if let Some(&(x, y)) = cands.iter().find(|&&(x, y)| free(x, y, &placed, strict)) {
                        found = Some(Placed { rect: rect(x, y), leader: true });
                        break 'rings;
                    }
                }
            }
        }
        if let Some(p) = found {
            placed.push(p.rect);
        }
        out.push(found);
    }
    out
}

/// A 1-pixel line from the number's box to the nearest point of its lesion's box.
fn leader(pic: &mut Picture, b: Rect, label: Rect, colour: [u8; 3]) {
    let (lx, ly) = ((label.0 + label.2) as f64 / 2.0, (label.1 + label.3) as f64 / 2.0);
    let tx = lx.clamp(b.0 as f64, b.2 as f64);
    let ty = ly.clamp(b.1 as f64, b.3 as f64);
    let steps = (tx - lx).abs().max((ty - ly).abs()).ceil() as usize;
    for t in 0..=steps {
        let f = if steps == 0 { 0.0 } else { t as f64 / steps as f64 };
        let (x, y) = (lx + (tx - lx) * f, ly + (ty - ly) * f);
        let (xi, yi) = (x.round() as usize, y.round() as usize);
        let in_label = xi >= label.0 && xi <= label.2 && yi >= label.1 && yi <= label.3;
        if !in_label {
            pic.set(xi as i64, yi as i64, colour);
        }
    }
}

/// R at the image's top-left corner and L at its top-right (the patient's
/// right is on the image's left), black on a white box.
fn side_markers(pic: &mut Picture, scale: usize) {
    let s = scale as i64;
    let w = pic.width as i64;
    for (text, x) in [("R", 3 * s), ("L", w - 3 * s - 5 * s)] {
        pic.fill(x - s, 2 * s, 7 * s, 9 * s, [255, 255, 255]);
        draw_text(pic, text, x, 3 * s, scale, [0, 0, 0]);
    }
}

/// The colour of the "NOT FOR CLINICAL USE" mark (in no palette).
pub const NOTICE_COLOUR: [u8; 3] = [255, 0, 0];
/// Width of the panel right of the image, in font scales: `96 × scale` pixels.
pub const PANEL_WIDTH: usize = 96;
/// Lesions listed in the legend; more are summed up in one line.
pub const LEGEND_ROWS: usize = 40;

/// The image with the panel to its right (`PANEL_WIDTH × scale` pixels,
/// white): the "NOT FOR CLINICAL USE" mark in red unless `clinical_use`,
/// then for PET (`suv_scale`) the SUV scale (the window, g/mL, black at the
/// top) and the legend: each lesion's colour, number and SUVmax. The
/// picture is as tall as the image or the panel, whichever is taller.
fn panel(image: &Picture, scale: usize, clinical_use: bool, suv_scale: bool, legend: &[(u32, f64)]) -> Picture {
    let s = scale as i64;
    let line = 10 * s;
    let mut items: Vec<(String, [u8; 3], Option<[u8; 3]>)> = Vec::new();
    if !clinical_use {
        items.push(("NOT FOR".into(), NOTICE_COLOUR, None));
        items.push(("CLINICAL USE".into(), NOTICE_COLOUR, None));
        items.push((String::new(), [0, 0, 0], None));
    }
    let bar_at = items.len();
    let bar_rows = if suv_scale { 12 } else { 0 };
    let mut height = 2 * s + line * (items.len() as i64 + bar_rows);
    if suv_scale && !legend.is_empty() {
        height += line * (2 + legend.len().min(LEGEND_ROWS + 1) as i64);
    }
    let width = image.width + PANEL_WIDTH * scale;
    let mut pic = Picture::filled(width, image.height.max(height as usize + 1), [255, 255, 255]);
    pic.blit(image, 0, 0);
    let x = image.width as i64 + 4 * s;
    let mut y = 2 * s;
    for (text, colour, _) in &items {
        draw_text(&mut pic, text, x, y, scale, *colour);
        y += line;
    }
    debug_assert_eq!(bar_at as i64 * line + 2 * s, y);
    if suv_scale {
        draw_text(&mut pic, "SUV G/ML", x, y, scale, [0, 0, 0]);
        y += line;
        // The window as a bar, SUV_BLACK at the top, SUV_WHITE at the bottom, framed.
        let (bar_h, bar_w) = (10 * line - 2 * s, 8 * s);
        for t in 0..bar_h {
            let v = SUV_BLACK - (SUV_BLACK - SUV_WHITE) * t as f32 / (bar_h - 1).max(1) as f32;
            pic.fill(x, y + t, bar_w, 1, suv_grey(v));
        }
        for (fx, fy, fw, fh) in [
            (x - 1, y - 1, bar_w + 2, 1),
            (x - 1, y + bar_h, bar_w + 2, 1),
            (x - 1, y - 1, 1, bar_h + 2),
            (x + bar_w, y - 1, 1, bar_h + 2),
        ] {
            pic.fill(fx, fy, fw, fh, [0, 0, 0]);
        }
        let tx = x + bar_w + 3 * s;
        let top = format!("{SUV_BLACK:.0}+");
        draw_text(&mut pic, &top, tx, y, scale, [0, 0, 0]);
        draw_text(
            &mut pic,
            &format!("{:.0}", (SUV_BLACK + SUV_WHITE) / 2.0),
            tx,
            y + bar_h / 2 - 3 * s,
            scale,
            [0, 0, 0],
        );
        draw_text(&mut pic, &format!("{SUV_WHITE:.0}"), tx, y + bar_h - 7 * s, scale, [0, 0, 0]);
        y += bar_h + 2 * s + line - 8 * s;
        if !legend.is_empty() {
            y += line;
            draw_text(&mut pic, "N  SUVMAX", x, y, scale, [0, 0, 0]);
            y += line;
            for &(n, suv_max) in legend.iter().take(LEGEND_ROWS) {
                pic.fill(x, y, 5 * s, 7 * s, lesion_colour(n));
                let text = if suv_max.is_finite() { format!("{n} {suv_max:.1}") } else { format!("{n}") };
                draw_text(&mut pic, &text, x + 7 * s, y, scale, [0, 0, 0]);
                y += line;
            }
            if legend.len() > LEGEND_ROWS {
                draw_text(&mut pic, &format!("+{} MORE", legend.len() - LEGEND_ROWS), x, y, scale, [0, 0, 0]);
            }
        }
    }
    pic
}

/// Axial slices of the CT (window [`CT_LEVEL`]/[`CT_WIDTH`]) through the
/// largest finding (26-connected component of class `focus` where there is
/// one, e.g. the screening profile's tumour, else of any non-zero class),
/// each class outlined in the palette colour of its value; R and L on each
/// slice, and the panel right of them with the "NOT FOR CLINICAL USE" mark
/// ([`axial_marked`] with `clinical_use` false).
pub fn axial(ct: &Volume<f32>, classes: &Volume<u8>, focus: Option<u8>) -> Picture {
    axial_marked(ct, classes, focus, false)
}

/// [`axial`], with the "NOT FOR CLINICAL USE" panel only unless `clinical_use`.
pub fn axial_marked(ct: &Volume<f32>, classes: &Volume<u8>, focus: Option<u8>, clinical_use: bool) -> Picture {
    let g = &ct.geometry;
    let view = View::new(g, (0, 1.0), (1, 1.0));
    let same = classes.geometry.dims == g.dims;
    let depths = if same { finding_depths(&view, classes, focus) } else { Vec::new() };
    let depths = if depths.is_empty() { vec![view.n[2] / 2] } else { depths };
    let r = Raster::new(&view);
    let lo = CT_LEVEL - CT_WIDTH / 2.0;
    let top = u32::from(classes.data.iter().copied().max().unwrap_or(0));
    let panels: Vec<Picture> = depths
        .iter()
        .map(|&d| {
            let mut pic = Picture::filled(r.width, r.height, [0, 0, 0]);
            for y in 0..r.height {
                for x in 0..r.width {
                    let (u, v) = r.source(x, y);
                    let ijk = view.voxel([u, v, d]);
                    let hu = ct.data[g.index(ijk[0], ijk[1], ijk[2])];
                    let t = if hu.is_finite() { ((hu - lo) / CT_WIDTH).clamp(0.0, 1.0) } else { 0.0 };
                    let grey = (255.0 * t).round() as u8;
                    pic.set(x as i64, y as i64, [grey, grey, grey]);
                }
            }
            if same {
                let prints = footprints(&view, g.dims, top, Some(d), |i| u32::from(classes.data[i]));
                for c in 1..=top {
                    outline(&mut pic, &r, &prints[c as usize], lesion_colour(c));
                }
            }
            pic
        })
        .collect();
    let width = panels.len() * r.width + (panels.len() - 1) * PANEL_GAP;
    let mut pic = Picture::filled(width, r.height, [255, 255, 255]);
    let scale = font_scale(r.height);
    for (n, p) in panels.iter().enumerate() {
        let mut p = p.clone();
        side_markers(&mut p, scale);
        pic.blit(&p, n * (r.width + PANEL_GAP), 0);
    }
    if clinical_use { pic } else { panel(&pic, scale, clinical_use, false, &[]) }
}

/// Depths (view order) at 25, 50 and 75% of the largest finding's extent.
fn finding_depths(view: &View, classes: &Volume<u8>, focus: Option<u8>) -> Vec<usize> {
    let g = &classes.geometry;
    let focus = focus.filter(|f| *f != 0 && classes.data.contains(f));
    let mask: Vec<u8> = classes.data.iter().map(|&c| u8::from(focus.map_or(c != 0, |f| c == f))).collect();
    let labels = cpu::label(&mask, g.dims, Connectivity::TwentySix);
    if labels.count == 0 {
        return Vec::new();
    }
    let mut sizes = vec![0u64; labels.count as usize + 1];
    for &l in &labels.data {
        sizes[l as usize] += 1;
    }
    let largest = (1..sizes.len()).max_by_key(|&l| (sizes[l], std::cmp::Reverse(l))).unwrap_or(1) as u32;
    let (mut lo, mut hi) = (usize::MAX, 0);
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                if labels.data[g.index(i, j, k)] == largest {
                    let d = view.uvd([i, j, k])[2];
                    lo = lo.min(d);
                    hi = hi.max(d);
                }
            }
        }
    }
    let mut out: Vec<usize> = [0.25, 0.5, 0.75].iter().map(|f| lo + ((hi - lo) as f64 * f).round() as usize).collect();
    out.dedup();
    out
}

/// Writes a picture to `path` as PNG (temporary file, fsync, rename).
pub fn write(path: &std::path::Path, pic: &Picture) -> std::io::Result<()> {
    let bytes = pic.encode_png().map_err(std::io::Error::other)?;
    super::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An axial grid: i → patient left (+x), j → posterior (+y), k →
    /// superior (+z); anisotropic spacing.
    fn grid(dims: [usize; 3], direction: [[f64; 3]; 3], origin: [f64; 3]) -> Geometry {
        Geometry { dims, spacing: [4.0, 4.0, 2.0], origin, direction }
    }

    const AXIAL: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    /// Stored the other way round: i → patient right (−x), k → feet (−z).
    const FLIPPED: [[f64; 3]; 3] = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]];

    /// Centre of the black pixels of the image (`width` pixels wide) below
    /// the R/L markers (row 12 on).
    fn black_centre(p: &Picture, width: usize) -> (f64, f64) {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for y in 12..p.height {
            for x in 0..width {
                if p.get(x, y) == [0, 0, 0] {
                    sx += x as f64;
                    sy += y as f64;
                    n += 1.0;
                }
            }
        }
        assert!(n > 0.0, "no black pixel");
        (sx / n, sy / n)
    }

    /// A hot spot at one LPS point lands on the same pixel whichever way the
    /// volume is stored: patient's left on the image's right, head at the top.
    #[test]
    fn hot_spot_lands_where_the_patient_says() {
        // Both grids cover x −40…36, y −40…−4, z −100…−42 (voxel centres).
        for (direction, origin) in [(AXIAL, [-40.0, -40.0, -100.0]), (FLIPPED, [36.0, -40.0, -42.0])] {
            let g = grid([20, 10, 30], direction, origin);
            let mut v = Volume::filled(g.clone(), 0.0f32);
            let hot = [20.0, -20.0, -50.0]; // left of centre, towards the head
            let ijk = g.lps_to_voxel(hot).map(|c| c.round() as usize);
            v.data[g.index(ijk[0], ijk[1], ijk[2])] = 20.0;
            let pic = coronal(&v, None);
            // 80 mm × 60 mm; pixel min(4, 2) mm, 30 px tall, upscaled ×8 (the cap): 0.25 mm;
            // the panel (96 px at font scale 1) to the right.
            assert_eq!((pic.width, pic.height), (320 + PANEL_WIDTH, 240));
            let (x, y) = black_centre(&pic, 320);
            // Pixel centres: x = −42 + (col + 0.5)·0.25, z = −41 − (row + 0.5)·0.25.
            let want_x = (hot[0] + 42.0) / 0.25 - 0.5;
            let want_y = (-41.0 - hot[2]) / 0.25 - 0.5;
            assert!(
                (x - want_x).abs() < 1e-9 && (y - want_y).abs() < 1e-9,
                "{direction:?}: {x},{y} vs {want_x},{want_y}"
            );
            assert!(x > 320.0 / 2.0, "the patient's left is on the image's right");
            assert_eq!(pic.get(0, 0), [255, 255, 255], "SUV 0 is white");
        }
    }

    #[test]
    fn pixels_are_square_in_mm() {
        let g = Geometry { dims: [50, 7, 100], spacing: [3.0, 5.0, 2.0], origin: [0.0; 3], direction: AXIAL };
        let pic = coronal(&Volume::filled(g, 2.0f32), None);
        // 150 mm × 200 mm at 2 mm → 75 × 100, upscaled ×6 to reach 512; the
        // panel right of it, 96 px per font scale (600 / 256 → 2).
        assert_eq!((pic.width, pic.height), (75 * 6 + 2 * PANEL_WIDTH, 100 * 6));
        assert_eq!(pic.get(3, 3), [204, 204, 204], "SUV 2 of 10 is light grey");
    }

    #[test]
    fn lesions_are_outlined_in_their_colour_and_numbered() {
        let g = grid([20, 10, 30], AXIAL, [0.0; 3]);
        let suv = Volume::filled(g.clone(), 2.0f32);
        let mut l = Volume::filled(g.clone(), 0u32);
        for k in 20..24 {
            for j in 3..6 {
                for i in 2..5 {
                    l.data[g.index(i, j, k)] = 1;
                }
            }
        }
        l.data[g.index(15, 5, 5)] = 2;
        let pic = coronal(&suv, Some(&l));
        let count = |c: [u8; 3]| {
            (0..pic.height)
                .flat_map(|y| (0..pic.width).map(move |x| (x, y)))
                .filter(|&(x, y)| pic.get(x, y) == c)
                .count()
        };
        assert!(count(lesion_colour(1)) > 0 && count(lesion_colour(2)) > 0);
        // 0.25 mm pixels: lesion 1 (i 2..=4, k 20..=23) covers x 32..=79 and,
        // head at the top, rows (29 − 23)·8 = 48 ..= 79.
        assert_eq!(pic.get(32, 56), lesion_colour(1), "left edge of lesion 1 outlined");
        assert_eq!(pic.get(55, 48), lesion_colour(1), "top edge of lesion 1 outlined");
        assert_eq!(pic.get(31, 56), [204, 204, 204], "outside");
        assert_eq!(pic.get(48, 64), [204, 204, 204], "inside the outline stays grey");
        // Its number to the right of the box: the stem of "1" at x 80 + 2 + 2.
        assert_eq!(pic.get(84, 50), lesion_colour(1));
    }

    #[test]
    fn digits_render_in_five_by_seven() {
        let mut p = Picture::filled(20, 10, [255, 255, 255]);
        draw_number(&mut p, 17, 1, 1, 1, [0, 0, 0]);
        let ink = |x: usize, y: usize| p.get(x, y) == [0, 0, 0];
        // "1": the stem in column 2 of the glyph, the foot 3 wide.
        for y in 1..8 {
            assert!(ink(3, y), "stem of 1 at row {y}");
        }
        assert!(ink(2, 7) && ink(4, 7) && !ink(1, 7) && !ink(5, 7));
        assert!(ink(2, 2) && !ink(2, 3));
        // "7" starts 6 pixels later: a full top bar, then a diagonal.
        for x in 7..12 {
            assert!(ink(x, 1));
        }
        assert!(ink(11, 2) && ink(10, 3) && ink(9, 4) && ink(8, 7));
        assert!(!ink(6, 1) && !ink(12, 1), "one blank column between digits, none after");
        assert_eq!(number_width(17, 1), 11);
        assert_eq!(number_width(5, 3), 15);
        let total = (0..10).flat_map(|y| (0..20).map(move |x| (x, y))).filter(|&(x, y)| ink(x, y)).count();
        let bits: u32 = [DIGITS[1], DIGITS[7]].iter().flatten().map(|b| b.count_ones()).sum();
        assert_eq!(total as u32, bits);
        // Scale 2 doubles every pixel; nothing is drawn outside the picture.
        let mut q = Picture::filled(8, 8, [255, 255, 255]);
        draw_number(&mut q, 8, -2, 0, 2, [1, 2, 3]);
        assert_eq!(q.get(0, 0), [1, 2, 3]);
    }

    #[test]
    fn axial_slices_go_through_the_largest_finding() {
        let g = grid([16, 12, 20], AXIAL, [0.0; 3]);
        let ct = Volume::filled(g.clone(), 40.0f32);
        let mut cl = Volume::filled(g.clone(), 0u8);
        for k in 4..13 {
            for j in 2..5 {
                for i in 10..14 {
                    cl.data[g.index(i, j, k)] = 2;
                }
            }
        }
        cl.data[g.index(1, 1, 18)] = 1; // a smaller finding elsewhere
        let view = View::new(&g, (0, 1.0), (1, 1.0));
        assert_eq!(finding_depths(&view, &cl, None), vec![6, 8, 10]);
        assert_eq!(finding_depths(&view, &cl, Some(1)), vec![18], "the focus class, however small");
        assert_eq!(finding_depths(&view, &cl, Some(3)), vec![6, 8, 10], "absent focus: any class");
        let pic = axial(&ct, &cl, None);
        // 16 × 4 mm by 12 × 4 mm at 4 mm → 16 × 12, ×8 (capped) → 128 × 96; three
        // slices, then the "not for clinical use" panel; none for a cleared model.
        assert_eq!((pic.width, pic.height), (3 * 128 + 2 * PANEL_GAP + PANEL_WIDTH, 96));
        assert!(pic.rgb.chunks(3).any(|p| p == NOTICE_COLOUR));
        let cleared = axial_marked(&ct, &cl, None, true);
        assert_eq!((cleared.width, cleared.height), (3 * 128 + 2 * PANEL_GAP, 96));
        assert!(!cleared.rgb.chunks(3).any(|p| p == NOTICE_COLOUR));
        assert_eq!(pic.get(5, 80), [128, 128, 128], "HU 40 is mid-grey at L40");
        assert_eq!(pic.get(10 * 8, 2 * 8), lesion_colour(2), "class 2 outlined, anterior at the top");
        assert_eq!(pic.get(128 + 1, 50), [255, 255, 255], "white gap between panels");
    }

    /// Issue 13 item 17: numbers 4 and 6 overlapped. Lesions crowded one
    /// pixel apart: every number placed, inside the picture, none touching
    /// another (the old rule, right of the box and top-aligned, stacked
    /// them onto each other).
    #[test]
    fn numbers_never_overlap_when_lesions_crowd() {
        let mut boxes = Vec::new();
        for row in 0..6 {
            for col in 0..5 {
                let (x, y) = (60 + col * 5, 60 + row * 3);
                boxes.push((x, y, x + 2, y + 1));
            }
        }
        let sizes: Vec<(usize, usize)> = (1..=boxes.len() as u32).map(|n| (number_width(n, 2), 14)).collect();
        let placed = place_labels(200, 200, &boxes, &sizes, 2);
        let rects: Vec<Rect> = placed.iter().map(|p| p.expect("every number placed").rect).collect();
        for (i, a) in rects.iter().enumerate() {
            assert!(a.2 < 200 && a.3 < 200, "inside the picture: {a:?}");
            for b in &rects[..i] {
                assert!(!overlaps(*a, *b, 0), "numbers overlap: {a:?} and {b:?}");
            }
        }
        // The first keeps a usual place: left of its box (its right is another lesion), top-aligned.
        assert_eq!(placed[0], Some(Placed { rect: (46, 60, 55, 73), leader: false }));
        assert!(placed.iter().flatten().any(|p| p.leader), "far ones get a leader line");
        // Two lesions one row apart, as 4 and 6 were: one number moves.
        let two = place_labels(100, 100, &[(10, 10, 12, 12), (10, 13, 12, 15)], &[(10, 14), (10, 14)], 2);
        let (a, b) = (two[0].expect("4").rect, two[1].expect("6").rect);
        assert!(!overlaps(a, b, 0), "{a:?} {b:?}");
    }

    /// Issue 13 item 17: the legend (colour, number, SUVmax), the SUV scale,
    /// R and L, and the "NOT FOR CLINICAL USE" mark unless the model is cleared.
    #[test]
    fn panel_has_notice_scale_legend_and_markers() {
        let g = grid([20, 10, 30], AXIAL, [0.0; 3]);
        let mut suv = Volume::filled(g.clone(), 0.0f32);
        let mut l = Volume::filled(g.clone(), 0u32);
        for (n, i, k, s) in [(1u32, 3, 20, 7.5f32), (2, 15, 5, 12.3)] {
            l.data[g.index(i, 5, k)] = n;
            suv.data[g.index(i, 5, k)] = s;
        }
        let pic = coronal_marked(&suv, Some(&l), false);
        let image_w = 320;
        let in_panel = |c: [u8; 3]| (0..pic.height).any(|y| (image_w..pic.width).any(|x| pic.get(x, y) == c));
        assert!(in_panel(NOTICE_COLOUR), "the mark");
        assert!(in_panel(lesion_colour(1)) && in_panel(lesion_colour(2)), "legend swatches");
        assert!(!coronal_marked(&suv, Some(&l), true).rgb.chunks(3).any(|p| p == NOTICE_COLOUR), "cleared: no mark");
        // The legend's text: the swatch then "2 12.3" (SUVmax, one decimal) in black.
        let mut want = Picture::filled(text_width("2 12.3", 1), 7, [255, 255, 255]);
        draw_text(&mut want, "2 12.3", 0, 0, 1, [0, 0, 0]);
        let found = (0..pic.height - 7).any(|y0| {
            (image_w..pic.width - want.width).any(|x0| {
                (0..7).all(|y| {
                    (0..want.width).all(|x| (pic.get(x0 + x, y0 + y) == [0, 0, 0]) == (want.get(x, y) == [0, 0, 0]))
                })
            })
        });
        assert!(found, "lesion 2's legend line");
        // The scale: a column of the bar runs from black (SUV 10) to white (SUV 0).
        let bar: Vec<[u8; 3]> =
            (0..pic.height).map(|y| pic.get(image_w + 4 + 2, y)).filter(|c| c[0] == c[1] && c[1] == c[2]).collect();
        assert!(bar.contains(&[0, 0, 0]) && bar.contains(&[254, 254, 254]) || bar.contains(&[255, 255, 255]));
        let greys: std::collections::BTreeSet<u8> = bar.iter().map(|c| c[0]).collect();
        assert!(greys.len() > 50, "a ramp of greys: {}", greys.len());
        // R at the image's top-left, L at its top-right (radiological).
        let mut r = Picture::filled(5, 7, [255, 255, 255]);
        draw_text(&mut r, "R", 0, 0, 1, [0, 0, 0]);
        let mut left = Picture::filled(5, 7, [255, 255, 255]);
        draw_text(&mut left, "L", 0, 0, 1, [0, 0, 0]);
        let same = |p: &Picture, x0: usize| (0..7).all(|y| (0..5).all(|x| pic.get(x0 + x, 3 + y) == p.get(x, y)));
        assert!(same(&r, 3), "R top-left");
        assert!(same(&left, image_w - 8), "L top-right of the image");
    }

    #[test]
    fn png_encodes() {
        let p = Picture::filled(3, 2, [10, 20, 30]);
        let bytes = p.encode_png().expect("png");
        assert_eq!(&bytes[1..4], b"PNG");
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().expect("info");
        let mut buf = vec![0; r.output_buffer_size().expect("size")];
        let info = r.next_frame(&mut buf).expect("frame");
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..3], &[10, 20, 30]);
    }
}
