//! A decoder for 12-bit grey-scale JPEG (ISO 10918-1 extended sequential
//! DCT, Huffman coding: DICOM's JPEG Extended 1.2.840.10008.1.2.4.51 at 12
//! bits), which dicom-pixeldata's JPEG codec (jpeg-decoder) refuses.
//!
//! One component, one sequential scan, Huffman tables, 8- or 16-bit
//! quantisation tables, restart intervals. Anything else (progressive or
//! arithmetic coding, several components, a DNL segment) is an error naming
//! what was found. The inverse DCT is computed in double precision and
//! rounded, so samples may differ by a level or two from libjpeg's integer
//! IDCT (PS3.5 allows any conforming decoder for a lossy process); every
//! length read from the stream is checked against the data.

/// The sample precision of a JPEG codestream (its first SOFn segment), if
/// one is found before the first scan.
pub fn precision(data: &[u8]) -> Option<u8> {
    let mut p = 2;
    if data.get(0..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    while p + 4 <= data.len() {
        if data[p] != 0xFF {
            return None;
        }
        let marker = data[p + 1];
        if marker == 0xFF {
            p += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([data[p + 2], data[p + 3]]));
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return data.get(p + 4).copied();
        }
        if marker == 0xDA {
            return None;
        }
        p += 2 + len;
    }
    None
}

/// Natural (row-major) index of the k-th coefficient in zig-zag order.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// A Huffman table in the form of ISO 10918-1 F.2.2.3 (DECODE).
#[derive(Clone)]
struct Huffman {
    /// Largest code of each length (−1: none).
    maxcode: [i32; 17],
    /// Index into `values` of the first code of each length, minus that code.
    valptr: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self, String> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != values.len() || total > 256 {
            return Err(format!("a Huffman table declares {total} codes for {} values", values.len()));
        }
        let mut maxcode = [-1i32; 17];
        let mut valptr = [0i32; 17];
        let mut code = 0i32;
        let mut k = 0i32;
        for len in 1..=16 {
            let n = i32::from(counts[len - 1]);
            valptr[len] = k - code;
            if n > 0 {
                code += n;
                k += n;
                maxcode[len] = code - 1;
            }
            if code > (1 << len) {
                return Err("a Huffman table has more codes than its lengths allow".into());
            }
            code <<= 1;
        }
        Ok(Huffman { maxcode, valptr, values })
    }
}

/// Reads entropy-coded bits, removing stuffed zero bytes and stopping at
/// markers (zeros are fed past one, as decoders do).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn fill(&mut self) {
        while self.count <= 56 {
            let mut byte = 0u8;
            if self.pos < self.data.len() {
                let b = self.data[self.pos];
                if b == 0xFF {
                    // A stuffed 0xFF; anything else is a marker, left in
                    // place while zeros are fed instead.
                    if self.data.get(self.pos + 1) == Some(&0x00) {
                        byte = 0xFF;
                        self.pos += 2;
                    }
                } else {
                    byte = b;
                    self.pos += 1;
                }
            }
            self.buf |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.fill();
        let v = (self.buf >> (64 - n)) as u32;
        self.buf <<= n;
        self.count -= n;
        v
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, String> {
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1) as i32;
            if code <= h.maxcode[len] {
                let i = usize::try_from(h.valptr[len] + code).map_err(|_| "corrupt Huffman code".to_string())?;
                return h.values.get(i).copied().ok_or_else(|| "corrupt Huffman code".to_string());
            }
        }
        Err("a Huffman code longer than 16 bits: corrupt entropy-coded data".into())
    }

    /// The next `s` bits as a signed value (ISO 10918-1 F.2.2.1 EXTEND).
    fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) { v - (1 << s) + 1 } else { v }
    }

    /// After a restart interval: drop the buffered bits and the RSTn marker.
    fn restart(&mut self) -> Result<(), String> {
        self.buf = 0;
        self.count = 0;
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return Ok(());
            }
            if self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0x00 && self.data[self.pos + 1] != 0xFF {
                return Err(format!("marker FF{:02X} where a restart marker belongs", self.data[self.pos + 1]));
            }
            self.pos += 1;
        }
        Err("the data ends before a restart marker".into())
    }
}

/// `cos[x][u]` = C(u)/2 · cos((2x+1)uπ/16), for the 8×8 inverse DCT.
fn idct_table() -> [[f64; 8]; 8] {
    let mut t = [[0f64; 8]; 8];
    for (x, row) in t.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            let c = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
            *v = c / 2.0 * (((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0).cos();
        }
    }
    t
}

/// A decoded image: rows × columns samples, row by row.
#[derive(Debug)]
pub struct Image {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Sample precision (8 or 12).
    pub precision: u8,
    /// Samples.
    pub samples: Vec<u16>,
}

fn be16(data: &[u8], at: usize) -> Result<usize, String> {
    data.get(at..at + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| "the data ends early".into())
}

/// Decodes one grey-scale sequential DCT JPEG codestream of `columns` ×
/// `rows` samples (another size in its frame header is refused before
/// anything is allocated for it).
pub fn decode(data: &[u8], columns: usize, rows: usize) -> Result<Image, String> {
    if data.get(0..2) != Some(&[0xFF, 0xD8]) {
        return Err("no JPEG start-of-image marker".into());
    }
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<(u8, usize, usize, usize)> = None; // precision, height, width, quant table
    let mut restart_interval = 0usize;
    let mut p = 2;
    loop {
        let Some(&b) = data.get(p) else { return Err("the data ends before a scan".into()) };
        if b != 0xFF {
            return Err(format!("byte {b:02X} where a marker belongs (at {p})"));
        }
        let marker = *data.get(p + 1).ok_or("the data ends early")?;
        if marker == 0xFF {
            p += 1;
            continue;
        }
        let len = be16(data, p + 2)?;
        let seg = data.get(p + 4..p + 2 + len).filter(|_| len >= 2).ok_or("a segment runs past the end of the data")?;
        match marker {
            0xC0 | 0xC1 => {
                if seg.len() < 6 {
                    return Err("short frame header".into());
                }
                let precision = seg[0];
                let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
                let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
                let components = seg[5];
                if components != 1 || seg.len() < 9 {
                    return Err(format!("{components} components (only grey-scale images are decoded)"));
                }
                if !matches!(precision, 8 | 12) {
                    return Err(format!("sample precision {precision} (8 or 12 expected for a DCT process)"));
                }
                if height == 0 || width == 0 {
                    return Err("zero image size in the frame header (DNL is not supported)".into());
                }
                if (width, height) != (columns, rows) {
                    return Err(format!("a {width}×{height} image in a {columns}×{rows} frame"));
                }
                frame = Some((precision, height, width, usize::from(seg[8] & 3)));
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!("JPEG process SOF{} is not a sequential Huffman DCT process", marker - 0xC0));
            }
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    if s.len() < 17 {
                        return Err("short Huffman table".into());
                    }
                    let (class, id) = (s[0] >> 4, usize::from(s[0] & 3));
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&s[1..17]);
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let values = s.get(17..17 + n).ok_or("short Huffman table")?.to_vec();
                    let h = Huffman::new(&counts, values)?;
                    if class == 0 {
                        dc[id] = Some(h)
                    } else {
                        ac[id] = Some(h)
                    }
                    s = &s[17 + n..];
                }
            }
            0xDB => {
                let mut s = seg;
                while !s.is_empty() {
                    let (pq, id) = (s[0] >> 4, usize::from(s[0] & 3));
                    let mut q = [0u16; 64];
                    let size = if pq == 0 { 64 } else { 128 };
                    let v = s.get(1..1 + size).ok_or("short quantisation table")?;
                    for (k, q) in q.iter_mut().enumerate() {
                        *q = if pq == 0 { u16::from(v[k]) } else { u16::from_be_bytes([v[2 * k], v[2 * k + 1]]) };
                    }
                    quant[id] = Some(q);
                    s = &s[1 + size..];
                }
            }
            0xDD => restart_interval = be16(seg, 0)?,
            0xDA => {
                let (precision, height, width, tq) = frame.ok_or("a scan before the frame header")?;
                if seg.len() < 6 || seg[0] != 1 {
                    return Err("a scan of other than one component".into());
                }
                let (td, ta) = (usize::from(seg[2] >> 4) & 3, usize::from(seg[2] & 3));
                if seg[3] != 0 || seg[4] != 63 || seg[5] != 0 {
                    return Err("a scan with spectral selection or successive approximation".into());
                }
                let q = quant[tq].ok_or("no quantisation table for the component")?;
                let dct = dc[td].as_ref().ok_or("no DC Huffman table for the scan")?;
                let act = ac[ta].as_ref().ok_or("no AC Huffman table for the scan")?;
                let scan = &data[p + 2 + len..];
                return scan_blocks(scan, precision, height, width, &q, dct, act, restart_interval);
            }
            0xD8 | 0xD9 => return Err(format!("marker FF{marker:02X} before the scan")),
            _ => {} // APPn, COM and others: skipped.
        }
        p += 2 + len;
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_blocks(
    scan: &[u8],
    precision: u8,
    height: usize,
    width: usize,
    q: &[u16; 64],
    dc: &Huffman,
    ac: &Huffman,
    restart_interval: usize,
) -> Result<Image, String> {
    let (bw, bh) = (width.div_ceil(8), height.div_ceil(8));
    let mut samples = vec![0u16; width * height];
    let mut bits = Bits { data: scan, pos: 0, buf: 0, count: 0 };
    let cos = idct_table();
    let max = f64::from((1u32 << precision) - 1);
    let shift = f64::from(1u32 << (precision - 1));
    let mut pred = 0i32;
    for n in 0..bw * bh {
        if restart_interval > 0 && n > 0 && n % restart_interval == 0 {
            bits.restart()?;
            pred = 0;
        }
        let mut coef = [0f64; 64];
        let t = u32::from(bits.decode(dc)?);
        if t > 16 {
            return Err(format!("DC magnitude category {t}: corrupt entropy-coded data"));
        }
        pred = pred.wrapping_add(bits.receive_extend(t));
        coef[0] = f64::from(pred) * f64::from(q[0]);
        let mut k = 1;
        while k < 64 {
            let rs = bits.decode(ac)?;
            let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            if k > 63 {
                return Err("AC coefficients past the end of a block: corrupt entropy-coded data".into());
            }
            coef[ZIGZAG[k]] = f64::from(bits.receive_extend(s)) * f64::from(q[k]);
            k += 1;
        }
        // Rows then columns of the separable inverse DCT.
        let mut tmp = [0f64; 64];
        for v in 0..8 {
            for x in 0..8 {
                tmp[v * 8 + x] = (0..8).map(|u| cos[x][u] * coef[v * 8 + u]).sum();
            }
        }
        let (bx, by) = (n % bw, n / bw);
        for y in 0..8 {
            let row = by * 8 + y;
            if row >= height {
                break;
            }
            for x in 0..8 {
                let col = bx * 8 + x;
                if col >= width {
                    break;
                }
                let v: f64 = (0..8).map(|v| cos[y][v] * tmp[v * 8 + x]).sum();
                samples[row * width + col] = (v + shift).round().clamp(0.0, max) as u16;
            }
        }
    }
    Ok(Image { width, height, precision, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_codes_are_canonical() {
        // Two codes of length 2 (00, 01) and one of length 3 (100).
        let mut counts = [0u8; 16];
        counts[1] = 2;
        counts[2] = 1;
        let h = Huffman::new(&counts, vec![7, 8, 9]).expect("table");
        let data = [0b0110_0000u8, 0x00];
        let mut b = Bits { data: &data, pos: 0, buf: 0, count: 0 };
        assert_eq!(b.decode(&h), Ok(8));
        assert_eq!(b.decode(&h), Ok(9));
    }

    #[test]
    fn extend_gives_negative_values_below_half_the_range() {
        let data = [0b0101_1000u8];
        let mut b = Bits { data: &data, pos: 0, buf: 0, count: 0 };
        assert_eq!(b.receive_extend(3), -5); // 010 in category 3
        assert_eq!(b.receive_extend(2), 3); // 11
    }

    #[test]
    fn a_dc_only_block_is_flat_at_dc_over_eight() {
        let cos = idct_table();
        // DC 80 → every sample 80/8 = 10 above the level shift.
        let v: f64 = (0..8).map(|u| cos[3][u] * if u == 0 { 80.0 } else { 0.0 }).sum::<f64>();
        let w: f64 = (0..8).map(|u| cos[5][u] * if u == 0 { v } else { 0.0 }).sum::<f64>();
        assert!((w - 10.0).abs() < 1e-9, "{w}");
    }

    #[test]
    fn refusals_name_what_was_found() {
        assert!(decode(&[0, 1, 2], 8, 8).unwrap_err().contains("start-of-image"));
        // SOI then a progressive frame header.
        let d = [0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x0B, 12, 0, 8, 0, 8, 1, 1, 0x11, 0];
        assert!(decode(&d, 8, 8).unwrap_err().contains("SOF2"));
        assert_eq!(precision(&d), Some(12));
        let d = [0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x0B, 12, 0, 8, 0, 8, 3, 1, 0x11, 0];
        assert!(decode(&d, 8, 8).unwrap_err().contains("3 components"));
        // A frame header of 65535 × 65535 in an 8 × 8 frame: refused, not allocated.
        let d = [0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x0B, 12, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0];
        assert!(decode(&d, 8, 8).unwrap_err().contains("65535×65535 image in a 8×8 frame"));
    }
}
