//! The one palette of lesion colours, shared by every output that colours a
//! lesion (`mip.png`, and the recommended display colours of `seg.dcm` and
//! `rtstruct.dcm`), so that lesion 3 has the same colour in every viewer.
//!
//! Twelve saturated colours, dark enough to stand out on the white background
//! of the inverted-grey MIP and distinct for the common forms of colour
//! blindness as far as twelve colours can be (after Sasha Trubetskoy's
//! "20 distinct colours", the light ones left out). Lesion `n` (1-based, the
//! report's numbering) gets entry `(n - 1) mod 12`; lesion 13 repeats lesion 1.

/// The palette, in order: red, blue, green, orange, purple, magenta, teal,
/// brown, maroon, navy, olive, dark cyan.
pub const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],
    [0, 130, 200],
    [60, 180, 75],
    [245, 130, 48],
    [145, 30, 180],
    [240, 50, 230],
    [0, 128, 128],
    [170, 110, 40],
    [128, 0, 0],
    [0, 0, 128],
    [128, 128, 0],
    [0, 190, 190],
];

/// The sRGB colour of lesion `n` (1-based, as numbered in report.json and
/// `lesions.nii.gz`); `0` is treated as `1`.
pub fn lesion_colour(n: u32) -> [u8; 3] {
    PALETTE[((n.max(1) - 1) % PALETTE.len() as u32) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_and_is_neither_grey_nor_light() {
        assert_eq!(lesion_colour(1), [230, 25, 75]);
        assert_eq!(lesion_colour(13), lesion_colour(1));
        assert_eq!(lesion_colour(0), lesion_colour(1));
        for (a, c) in PALETTE.iter().enumerate() {
            let (lo, hi) = (c.iter().min().copied().unwrap_or(0), c.iter().max().copied().unwrap_or(0));
            assert!(hi - lo >= 100, "colour {a} is too grey for an inverted-grey image: {c:?}");
            for d in &PALETTE[..a] {
                assert_ne!(c, d, "colours repeat within the palette");
            }
        }
    }
}
