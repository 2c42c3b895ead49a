//! One deflate stream (RFC 1951) inflated by two threads.
//!
//! A single-member gzip file has no points where decoding may start but the
//! beginning, so its inflation is serial: for a 157 MB CT most of a small
//! radiomics ROI's time. As rapidgzip (Knespel and Brunst, 2023) does, the
//! second thread looks for a block boundary part-way through the stream (a
//! dynamic-Huffman block header whose codes are valid, and that decodes)
//! and decodes from there without the 32 KiB of output before it: bytes
//! copied from that unknown window are kept as markers naming their window
//! position until 32 KiB of output hold none, then decoding goes on in plain
//! bytes. Meanwhile the first thread inflates the stream up to that boundary
//! with libdeflate, stopped there by a final empty stored block written over
//! the boundary's bytes once the second thread has read them (and restored
//! afterwards). The markers are then resolved from the first part's last
//! 32 KiB and the second part placed after it.
//!
//! Nothing here is trusted on its own: the caller checks the gzip trailer's
//! length and CRC-32 over the result, and inflates serially when this
//! returns None or the checks fail.

/// Streams shorter than this are inflated serially.
const MIN_PARALLEL: usize = 4 << 20;
/// Where the second part starts, as a share of the compressed bytes. The
/// first thread (libdeflate) decodes about 1.75 times as fast as the second
/// (measured on the radiomics bench's CT), so it takes more: 0.64 would
/// balance two idle cores; the radiomics CLI's second core first reads the
/// mask (tens of milliseconds), where 0.75 to 0.8 balanced best (measured);
/// 0.75 serves both.
const SPLIT: f64 = 0.75;
/// How far past the split point a block boundary is looked for (blocks are
/// tens of kilobytes apart; each bit is tried).
const SEARCH: usize = 512 << 10;
/// Symbols kept while the window is unknown (16 MiB): past this (data that
/// keeps copying from the unknown window, or a false boundary decoding on)
/// the stream is left to the serial path.
const MAX_MARKED: usize = 8 << 20;
/// The deflate window.
const WINDOW: usize = 32 * 1024;

/// Inflates `deflate` (raw deflate data, possibly followed by other bytes)
/// into `out`, whose length must be the stream's output length exactly.
/// Some(out.len()) when both parts decoded and fit end to end; None when the
/// stream is too short, no block boundary was found, or anything did not
/// decode (the caller then inflates serially). `deflate` is patched while
/// the first part is inflated and given back as it was.
pub fn inflate_two_threads(deflate: &mut [u8], out: &mut [u8]) -> Option<usize> {
    if deflate.len() < MIN_PARALLEL || out.len() < 2 * WINDOW {
        return None;
    }
    let from = (deflate.len() as f64 * SPLIT) as usize * 8;
    let to = (from + SEARCH * 8).min(deflate.len().saturating_sub(64) * 8);
    // The boundary and its first block, on this thread (milliseconds).
    let (start, reader, syms) = first_block(deflate, from, to)?;
    // The first part ends at `start` with a final empty stored block written
    // over bytes the second part has read already: it reads from `cut` on.
    let patch = end_at(deflate[start / 8], start % 8);
    let cut = reader.next;
    if start / 8 + patch.len() > cut || cut > deflate.len() {
        return None;
    }
    let saved: Vec<u8> = deflate[start / 8..start / 8 + patch.len()].to_vec();
    let mut tail = vec![0u8; out.len()];
    crate::sys::advise_huge_pages(&mut tail);
    let (a, b) = deflate.split_at_mut(cut);
    a[start / 8..start / 8 + patch.len()].copy_from_slice(&patch);
    let mut bits = Bits { data: b, next: 0, buf: reader.buf, have: reader.have };
    let (first, second) = rayon::join(
        || libdeflater::Decompressor::new().deflate_decompress(&a[..start / 8 + patch.len()], out).ok(),
        || finish(&mut bits, syms, &mut tail),
    );
    a[start / 8..start / 8 + saved.len()].copy_from_slice(&saved);
    let (n_a, (n_b, markers)) = (first?, second?);
    if n_a < WINDOW || n_a + n_b != out.len() {
        return None;
    }
    // The second part after the first, its markers from the first's last
    // 32 KiB.
    let (head, rest) = out.split_at_mut(n_a);
    let rest = &mut rest[..n_b];
    let half = n_b / 2;
    let (r0, r1) = rest.split_at_mut(half);
    rayon::join(|| r0.copy_from_slice(&tail[..half]), || r1.copy_from_slice(&tail[half..n_b]));
    let window = &head[n_a - WINDOW..];
    for (pos, w) in markers {
        rest[pos] = window[usize::from(w)];
    }
    Some(out.len())
}

/// The bytes that end a stream at bit `bit` of a byte valued `byte`: that
/// byte with BFINAL = 1, BTYPE = 00 from `bit` on (spilling into the next
/// byte past bit 5), then LEN = 0 and NLEN = !0 after the padding.
fn end_at(byte: u8, bit: usize) -> Vec<u8> {
    let mut patch = vec![(byte & ((1u8 << bit) - 1)) | (1 << bit)];
    if bit > 5 {
        patch.push(0);
    }
    patch.extend_from_slice(&[0, 0, 0xff, 0xff]);
    patch
}

/// Where the bit reader stood: the next byte to load, the bits loaded.
struct Reader {
    next: usize,
    buf: u64,
    have: u32,
}

/// Looks for a block boundary in bits `from..to` whose header holds valid
/// codes and whose block decodes (with markers for the unknown window): the
/// boundary, the reader after that block, and the block's symbols.
fn first_block(data: &[u8], from: usize, to: usize) -> Option<(usize, Reader, Vec<u16>)> {
    let mut at = from;
    while at < to {
        let start = find_header(data, at, to)?;
        let mut bits = Bits::at(data, start);
        let mut syms: Vec<u16> = Vec::with_capacity(4 * WINDOW);
        if let Ok(false) = decode_block(&mut bits, &mut Markers(&mut syms)) {
            return Some((start, Reader { next: bits.next, buf: bits.buf, have: bits.have }, syms));
        }
        at = start + 1;
    }
    None
}

/// Decodes the remaining blocks: with markers until the last 32 KiB of
/// output hold none, then straight into `tail` as bytes. The bytes written
/// and the markers: (position in `tail`, index in the unknown window).
fn finish(bits: &mut Bits<'_>, mut syms: Vec<u16>, tail: &mut [u8]) -> Option<(usize, Vec<(usize, u16)>)> {
    let mut last = false;
    loop {
        let clean = syms.iter().rev().take(WINDOW).all(|&s| s < 256);
        if syms.len() >= WINDOW && clean || last {
            break;
        }
        last = decode_block(bits, &mut Markers(&mut syms)).ok()?;
    }
    if syms.len() > tail.len() {
        return None;
    }
    let mut markers = Vec::new();
    for (i, &s) in syms.iter().enumerate() {
        if s < 256 {
            tail[i] = s as u8;
        } else {
            markers.push((i, s - 256));
        }
    }
    let mut sink = Bytes { out: tail, at: syms.len() };
    while !last {
        last = decode_block(bits, &mut sink).ok()?;
    }
    Some((sink.at, markers))
}

/// Bits of `data`, least significant first, from any bit position.
struct Bits<'a> {
    data: &'a [u8],
    /// The next byte to load.
    next: usize,
    buf: u64,
    /// Valid bits in `buf`.
    have: u32,
}

/// Decoding errors (the reason is not needed: the caller falls back).
#[derive(Debug)]
struct Bad;

impl<'a> Bits<'a> {
    fn at(data: &'a [u8], bit: usize) -> Self {
        let mut b = Bits { data, next: bit / 8, buf: 0, have: 0 };
        b.refill();
        b.skip(bit as u32 % 8);
        b
    }

    /// At least 56 valid bits (zeros past the end; `overrun` tells).
    #[inline(always)]
    fn refill(&mut self) {
        if self.next + 8 <= self.data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.data[self.next..self.next + 8]);
            self.buf |= u64::from_le_bytes(w) << self.have;
            self.next += (63 - self.have as usize) / 8;
            self.have |= 56;
        } else {
            while self.have <= 56 {
                let b = self.data.get(self.next).copied().unwrap_or(0);
                self.buf |= u64::from(b) << self.have;
                self.next += 1;
                self.have += 8;
            }
        }
    }

    /// Whether more bits were used than `data` holds.
    fn overrun(&self) -> bool {
        self.next > self.data.len() && (self.next - self.data.len()) * 8 > self.have as usize
    }

    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        (self.buf & ((1u64 << n) - 1)) as u32
    }

    #[inline(always)]
    fn skip(&mut self, n: u32) {
        self.buf >>= n;
        self.have -= n;
    }

    #[inline(always)]
    fn take(&mut self, n: u32) -> u32 {
        if self.have < n {
            self.refill();
        }
        let v = self.peek(n);
        self.skip(n);
        v
    }

    /// To the next byte boundary.
    fn align(&mut self) {
        let r = self.have % 8;
        self.skip(r);
    }
}

/// A canonical Huffman code's decoding table: a primary table of
/// `PRIMARY` bits, longer codes through subtables.
struct Huffman {
    table: Vec<u32>,
}

const PRIMARY: u32 = 10;
/// Entry: bit 31 set: a subtable (bits 8..31 its start, 0..8 its bits);
/// else bits 8..31 the symbol, 0..8 the code's length (0: no code).
const SUB: u32 = 1 << 31;

impl Huffman {
    /// From code lengths; Err for an over-subscribed code; `complete`
    /// also refuses an incomplete one (but a single code of length 1).
    fn new(lengths: &[u8], complete: bool) -> Result<Huffman, Bad> {
        let mut count = [0u32; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let mut left: i64 = 1;
        for c in &count[1..] {
            left = left * 2 - i64::from(*c);
            if left < 0 {
                return Err(Bad);
            }
        }
        let used: u32 = count.iter().sum();
        if complete && left != 0 && !(used == 1 && count[1] == 1) {
            return Err(Bad);
        }
        let max = (1..16).rev().find(|&l| count[l] > 0).unwrap_or(1) as u32;
        let mut next = [0u32; 16];
        let mut code = 0;
        for l in 1..16 {
            code = (code + count[l - 1]) << 1;
            next[l] = code;
        }
        let mut table = vec![0u32; 1 << PRIMARY];
        let sub_bits = max.saturating_sub(PRIMARY);
        for (sym, &l) in lengths.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let l = u32::from(l);
            let c = next[l as usize];
            next[l as usize] += 1;
            let rev = c.reverse_bits() >> (32 - l);
            let entry = ((sym as u32) << 8) | l;
            if l <= PRIMARY {
                let mut i = rev;
                while i < 1 << PRIMARY {
                    table[i as usize] = entry;
                    i += 1 << l;
                }
            } else {
                let p = (rev & ((1 << PRIMARY) - 1)) as usize;
                if table[p] & SUB == 0 {
                    let start = table.len() as u32;
                    table.resize(table.len() + (1 << sub_bits), 0);
                    table[p] = SUB | (start << 8) | sub_bits;
                }
                let start = ((table[p] & !SUB) >> 8) as usize;
                let mut i = rev >> PRIMARY;
                while i < 1 << sub_bits {
                    table[start + i as usize] = entry;
                    i += 1 << (l - PRIMARY);
                }
            }
        }
        Ok(Huffman { table })
    }

    /// The next symbol; needs at least 15 valid bits.
    #[inline(always)]
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u32, Bad> {
        let mut e = self.table[bits.peek(PRIMARY) as usize];
        if e & SUB != 0 {
            let start = ((e & !SUB) >> 8) as usize;
            let sub = e & 0xff;
            e = self.table[start + ((bits.buf >> PRIMARY) & ((1 << sub) - 1)) as usize];
        }
        let l = e & 0xff;
        if l == 0 {
            return Err(Bad);
        }
        bits.skip(l);
        Ok(e >> 8)
    }
}

/// Where decoded symbols go.
trait Sink {
    fn literal(&mut self, b: u8) -> Result<(), Bad>;
    fn copy(&mut self, dist: usize, len: usize) -> Result<(), Bad>;
    fn stored(&mut self, bytes: &[u8]) -> Result<(), Bad>;
}

/// Output while the window is unknown: 0..256 bytes, 256.. markers (256 +
/// the window position).
struct Markers<'a>(&'a mut Vec<u16>);

impl Sink for Markers<'_> {
    fn literal(&mut self, b: u8) -> Result<(), Bad> {
        if self.0.len() >= MAX_MARKED {
            return Err(Bad);
        }
        self.0.push(u16::from(b));
        Ok(())
    }
    fn copy(&mut self, dist: usize, len: usize) -> Result<(), Bad> {
        let v = &mut *self.0;
        if v.len() + len > MAX_MARKED {
            return Err(Bad);
        }
        for _ in 0..len {
            let n = v.len();
            let s = if dist <= n {
                v[n - dist]
            } else if dist - n <= WINDOW {
                (256 + WINDOW - (dist - n)) as u16
            } else {
                return Err(Bad);
            };
            v.push(s);
        }
        Ok(())
    }
    fn stored(&mut self, bytes: &[u8]) -> Result<(), Bad> {
        if self.0.len() + bytes.len() > MAX_MARKED {
            return Err(Bad);
        }
        self.0.extend(bytes.iter().map(|&b| u16::from(b)));
        Ok(())
    }
}

/// Output in bytes, the window being the output itself.
struct Bytes<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Sink for Bytes<'_> {
    #[inline(always)]
    fn literal(&mut self, b: u8) -> Result<(), Bad> {
        *self.out.get_mut(self.at).ok_or(Bad)? = b;
        self.at += 1;
        Ok(())
    }
    #[inline(always)]
    fn copy(&mut self, dist: usize, len: usize) -> Result<(), Bad> {
        let at = self.at;
        if dist > at || at + len > self.out.len() {
            return Err(Bad);
        }
        if dist >= 16 && at + len + 16 <= self.out.len() {
            // 16 bytes at a time: each chunk read lies in what is written
            // already (dist ≥ 16), as LZ77 copies read; the last chunk may
            // write past the match, which later output overwrites.
            let mut k = 0;
            while k < len {
                let mut chunk = [0u8; 16];
                chunk.copy_from_slice(&self.out[at - dist + k..at - dist + k + 16]);
                self.out[at + k..at + k + 16].copy_from_slice(&chunk);
                k += 16;
            }
        } else {
            for i in at..at + len {
                self.out[i] = self.out[i - dist];
            }
        }
        self.at += len;
        Ok(())
    }
    fn stored(&mut self, bytes: &[u8]) -> Result<(), Bad> {
        let end = self.at + bytes.len();
        self.out.get_mut(self.at..end).ok_or(Bad)?.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }
}

const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/// The order code-length code lengths are stored in.
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// A dynamic block's header from `bits` (after BFINAL and BTYPE): the
/// literal/length and distance codes. `strict`: every code complete (but a
/// lone distance code), the end-of-block code present (the search's test).
fn dynamic_codes(bits: &mut Bits<'_>, strict: bool) -> Result<(Huffman, Huffman), Bad> {
    let hlit = bits.take(5) as usize + 257;
    let hdist = bits.take(5) as usize + 1;
    let hclen = bits.take(4) as usize + 4;
    if hlit > 286 || hdist > 30 {
        return Err(Bad);
    }
    let mut cl = [0u8; 19];
    for &i in &CL_ORDER[..hclen] {
        cl[i] = bits.take(3) as u8;
    }
    let clcode = Huffman::new(&cl, true)?;
    let mut lengths = [0u8; 286 + 30];
    let n = hlit + hdist;
    let mut i = 0;
    while i < n {
        bits.refill();
        let sym = clcode.decode(bits)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => (*lengths.get(i.wrapping_sub(1)).filter(|_| i > 0).ok_or(Bad)?, 3 + bits.take(2) as usize),
            17 => (0, 3 + bits.take(3) as usize),
            _ => (0, 11 + bits.take(7) as usize),
        };
        if i + repeat > n {
            return Err(Bad);
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err(Bad);
    }
    let lit = Huffman::new(&lengths[..hlit], strict)?;
    let dist = Huffman::new(&lengths[hlit..n], strict)?;
    Ok((lit, dist))
}

/// Searches bits `from..to` of `data` for a non-final dynamic block whose
/// header holds valid codes; the first such bit.
fn find_header(data: &[u8], from: usize, to: usize) -> Option<usize> {
    (from..to).find(|&at| {
        // Cheap tests first: BFINAL = 0, BTYPE = 10, HLIT and HDIST in range.
        let byte = at / 8;
        if byte + 16 > data.len() {
            return false;
        }
        let mut w = [0u8; 16];
        w.copy_from_slice(&data[byte..byte + 16]);
        let v = u128::from_le_bytes(w) >> (at % 8);
        if v & 7 != 0b100 || (v >> 3) & 31 > 29 || (v >> 8) & 31 > 29 {
            return false;
        }
        // The code-length code must be complete (Kraft sum 1).
        let hclen = ((v >> 13) & 15) as usize + 4;
        let kraft: u32 =
            (0..hclen).map(|i| ((v >> (17 + 3 * i)) & 7) as u32).filter(|&l| l > 0).map(|l| 1 << (7 - l)).sum();
        if kraft != 128 {
            return false;
        }
        let mut bits = Bits::at(data, at + 3);
        dynamic_codes(&mut bits, true).is_ok()
    })
}

/// Decodes one block into `sink`; Ok(true) for the stream's final block.
fn decode_block(bits: &mut Bits<'_>, sink: &mut impl Sink) -> Result<bool, Bad> {
    let last = bits.take(1) == 1;
    match bits.take(2) {
        0 => {
            bits.align();
            let len = bits.take(16) as usize;
            let nlen = bits.take(16) as usize;
            if len != !nlen & 0xffff {
                return Err(Bad);
            }
            // Whole bytes remain in the bit buffer: hand those out first,
            // then the rest straight from the data (the buffer empty).
            let mut rest = len;
            while rest > 0 && bits.have >= 8 {
                sink.literal(bits.take(8) as u8)?;
                rest -= 1;
            }
            if rest > 0 {
                let end = bits.next.checked_add(rest).filter(|&e| e <= bits.data.len()).ok_or(Bad)?;
                sink.stored(&bits.data[bits.next..end])?;
                bits.next = end;
                bits.buf = 0;
                bits.have = 0;
            }
        }
        1 => {
            let (lit, dist) = fixed();
            codes(bits, sink, &lit, &dist)?;
        }
        2 => {
            let (lit, dist) = dynamic_codes(bits, false)?;
            codes(bits, sink, &lit, &dist)?;
        }
        _ => return Err(Bad),
    }
    if bits.overrun() {
        return Err(Bad);
    }
    Ok(last)
}

/// The fixed Huffman codes (BTYPE 01).
fn fixed() -> (Huffman, Huffman) {
    let mut l = [0u8; 288];
    l[..144].fill(8);
    l[144..256].fill(9);
    l[256..280].fill(7);
    l[280..].fill(8);
    // Both are complete codes: these cannot fail.
    let lit = Huffman::new(&l, false).unwrap_or(Huffman { table: vec![0; 1 << PRIMARY] });
    let dist = Huffman::new(&[5u8; 30], false).unwrap_or(Huffman { table: vec![0; 1 << PRIMARY] });
    (lit, dist)
}

/// A Huffman-coded block's symbols, to the end-of-block code.
fn codes(bits: &mut Bits<'_>, sink: &mut impl Sink, lit: &Huffman, dist: &Huffman) -> Result<(), Bad> {
    loop {
        bits.refill();
        // Up to three literals from one refill (56 bits, codes ≤ 15).
        let mut sym = lit.decode(bits)? as usize;
        if sym < 256 {
            sink.literal(sym as u8)?;
            sym = lit.decode(bits)? as usize;
            if sym < 256 {
                sink.literal(sym as u8)?;
                sym = lit.decode(bits)? as usize;
                if sym < 256 {
                    sink.literal(sym as u8)?;
                    continue;
                }
            }
        }
        if sym == 256 {
            return Ok(());
        }
        let k = sym - 257;
        if k >= 29 {
            return Err(Bad);
        }
        // Length extra (≤ 5), distance code (≤ 15) and extra (≤ 13): 33
        // of the 56 bits one refill gives.
        bits.refill();
        let len = usize::from(LEN_BASE[k]) + bits.take(u32::from(LEN_EXTRA[k])) as usize;
        let d = dist.decode(bits)? as usize;
        if d >= 30 {
            return Err(Bad);
        }
        let dist = usize::from(DIST_BASE[d]) + bits.take(u32::from(DIST_EXTRA[d])) as usize;
        sink.copy(dist, len)?;
        if bits.overrun() {
            return Err(Bad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes shaped like a CT: 16-bit noise around a few
    /// levels, runs of air, so that matches and literals both occur.
    fn ct_like(n: usize, seed: u32) -> Vec<u8> {
        let mut rnd = crate::export::testing::xorshift(seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let r = rnd();
            let run = 64 + (r % 4096) as usize;
            let level: i16 = match r % 5 {
                0 => -1000,
                1 => -850,
                _ => 40,
            };
            for _ in 0..run {
                let noise = (rnd() % 64) as i16 - 32;
                let s = if level == -1000 && !rnd().is_multiple_of(4) { -1000 } else { level + noise };
                v.extend_from_slice(&s.to_le_bytes());
            }
        }
        v.truncate(n);
        v
    }

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).expect("deflate");
        e.finish().expect("deflate")
    }

    #[test]
    fn two_threads_give_the_serial_output_for_several_levels_and_sizes() {
        for (n, level, seed) in [(12 << 20, 6, 1), (9 << 20, 1, 2), (16 << 20, 9, 3), (10 << 20, 3, 4)] {
            let data = ct_like(n, seed);
            let mut z = deflate(&data, level);
            let before = z.clone();
            let mut out = vec![0u8; n];
            let got = inflate_two_threads(&mut z, &mut out);
            assert_eq!(got, Some(n), "n {n}, level {level}: the parallel path was not taken");
            assert!(out == data, "n {n}, level {level}: output differs");
            assert!(z == before, "n {n}, level {level}: the stream was not given back as it was");
        }
    }

    #[test]
    fn streams_written_by_libdeflate_split_too() {
        // Another encoder's block sizes and codes (libdeflate, levels 1, 6, 12).
        let data = ct_like(12 << 20, 11);
        for level in [1, 6, 12] {
            let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("level"));
            let mut z = vec![0u8; c.deflate_compress_bound(data.len())];
            let size = c.deflate_compress(&data, &mut z).expect("compress");
            z.truncate(size);
            let mut out = vec![0u8; data.len()];
            assert_eq!(inflate_two_threads(&mut z, &mut out), Some(data.len()), "level {level}");
            assert!(out == data, "level {level}");
        }
    }

    #[test]
    fn trailing_bytes_and_a_wrong_length_are_told() {
        let data = ct_like(12 << 20, 7);
        let mut z = deflate(&data, 6);
        // Followed by a gzip trailer's worth of bytes: still the stream.
        z.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut out = vec![0u8; data.len()];
        let before = z.clone();
        assert_eq!(inflate_two_threads(&mut z, &mut out), Some(data.len()));
        assert!(out == data && z == before);
        // An output buffer of the wrong size: None, never a wrong success.
        let mut short = vec![0u8; data.len() - 1];
        assert_eq!(inflate_two_threads(&mut z, &mut short), None);
        let mut long = vec![0u8; data.len() + 1];
        assert_eq!(inflate_two_threads(&mut z, &mut long), None);
        // Small streams are left to the serial path.
        let mut small = deflate(&data[..1 << 20], 6);
        let mut out = vec![0u8; 1 << 20];
        assert_eq!(inflate_two_threads(&mut small, &mut out), None);
        assert!(z == before);
    }

    #[test]
    fn corrupt_streams_end_in_none_or_a_result_the_crc_check_sees() {
        // Bytes changed in the second half: never a panic or a hang; where
        // both paths decode, the same bytes (else the gzip CRC-32 tells).
        let data = ct_like(12 << 20, 5);
        let clean = deflate(&data, 6);
        let mut rnd = crate::export::testing::xorshift(12345);
        for round in 0..12 {
            let mut z = clean.clone();
            for _ in 0..(1 + round % 4) {
                let x = rnd();
                let at = z.len() / 2 + (x as usize % (z.len() / 2));
                z[at] ^= (x >> 24) as u8 | 1;
            }
            let mut out = vec![0u8; data.len()];
            if let Some(n) = inflate_two_threads(&mut z, &mut out) {
                assert_eq!(n, data.len());
                let mut serial = vec![0u8; data.len()];
                if libdeflater::Decompressor::new().deflate_decompress(&z, &mut serial) == Ok(n) {
                    assert!(out == serial, "round {round}: both decode, to different bytes");
                }
            }
        }
    }

    #[test]
    fn stored_and_fixed_blocks_decode_as_libdeflate_does() {
        // Incompressible bytes (stored blocks at level 0), and a short
        // text (fixed codes), through the block decoder from the start.
        let mut rnd = crate::export::testing::xorshift(99);
        let noise: Vec<u8> = (0..200_000).map(|_| rnd() as u8).collect();
        for (data, level) in [(noise.clone(), 0), (b"abcabcabcabc hello hello hello".repeat(3), 9), (noise, 6)] {
            let z = deflate(&data, level);
            let mut out = vec![0u8; data.len()];
            let mut bits = Bits::at(&z, 0);
            let mut sink = Bytes { out: &mut out, at: 0 };
            while !decode_block(&mut bits, &mut sink).expect("decodes") {}
            assert_eq!(sink.at, data.len());
            assert!(out == data, "level {level}");
        }
    }
}
