//! The parts of a gzip member (RFC 1952) that reading a compressed NIfTI
//! in one pass needs besides the inflater: where the deflate data begins,
//! and the CRC-32 of the inflated bytes worked out on every core (CRC-32
//! values of consecutive parts combined, as zlib's `crc32_combine`).

/// Where the deflate data of the gzip member at the start of `gz` begins
/// (after its header's optional extra field, name, comment and header CRC),
/// or None if `gz` does not begin with a gzip header of the deflate method.
pub fn deflate_start(gz: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if gz.len() < 10 || gz[..3] != [0x1f, 0x8b, 8] || gz[3] & 0xe0 != 0 {
        return None;
    }
    let flags = gz[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = usize::from(u16::from_le_bytes([*gz.get(at)?, *gz.get(at + 1)?]));
        at += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += gz.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= gz.len()).then_some(at)
}

/// The CRC-32 (gzip's) of `data`, its parts on rayon's threads.
pub fn crc32(data: &[u8]) -> u32 {
    // Below this, one thread is quicker than sharing the work.
    const PART: usize = 8 << 20;
    if data.len() <= PART {
        return libdeflater::crc32(data);
    }
    let (a, b) = data.split_at(data.len() / 2);
    let (ca, cb) = rayon::join(|| crc32(a), || crc32(b));
    crc32_combine(ca, cb, b.len() as u64)
}

/// The reflected CRC-32 polynomial.
const POLY: u32 = 0xedb8_8320;

/// a·b modulo the CRC polynomial, both reflected (bit 31 is x^0).
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(8·n) modulo the CRC polynomial: the factor that moves a CRC past `n`
/// zero bytes, by squaring (x^(2^k) for each set bit of 8·n).
fn x8n_mod_p(n: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut x2k = 1u32 << 23; // x^8 (bit 31 - d is x^d): n counts bytes
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(x2k, p);
        }
        x2k = mul_mod_p(x2k, x2k);
        n >>= 1;
    }
    p
}

/// The CRC-32 of A followed by B, from crc(A), crc(B) and B's length.
pub fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul_mod_p(x8n_mod_p(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole() {
        // Bytes of a fixed pseudo-random sequence; splits at every kind of
        // place, empty parts included.
        let mut rnd = crate::export::testing::xorshift(0x2545_f491);
        let data: Vec<u8> = (0..(20 << 20) + 13).map(|_| rnd() as u8).collect();
        let whole = libdeflater::crc32(&data);
        assert_eq!(crc32(&data), whole);
        for cut in [0, 1, 7, 4096, 1 << 20, data.len() / 3, data.len() - 1, data.len()] {
            let (a, b) = data.split_at(cut);
            let c = crc32_combine(libdeflater::crc32(a), libdeflater::crc32(b), b.len() as u64);
            assert_eq!(c, whole, "cut at {cut}");
        }
        assert_eq!(crc32(&[]), 0);
        // The CRC of "123456789", the standard check value.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn deflate_data_starts_after_every_optional_header_field() {
        // Headers written by hand, field by field as RFC 1952 lays them out.
        let plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xaa];
        assert_eq!(deflate_start(&plain), Some(10));
        let mut all = vec![0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 0, 0, 0, 0, 0, 3];
        all.extend([3, 0, 1, 2, 3]); // FEXTRA, 3 bytes
        all.extend(b"ct.nii\0"); // FNAME
        all.extend(b"a comment\0"); // FCOMMENT
        all.extend([0x12, 0x34]); // FHCRC
        let start = all.len();
        all.push(0xaa);
        assert_eq!(deflate_start(&all), Some(start));
        // Not gzip, another method, reserved flags, cut inside a field.
        assert_eq!(deflate_start(b"\x1f\x8b\x07\0\0\0\0\0\0\x03"), None);
        assert_eq!(deflate_start(b"n+1\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(deflate_start(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]), None);
        assert_eq!(deflate_start(&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, b'a']), None);
    }
}
