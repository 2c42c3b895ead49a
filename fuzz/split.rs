//! How the `series` fuzz target cuts one input into files; shared with the
//! regression replay (`tests/fuzz_regressions.rs` includes this file), so a
//! kept finding is replayed exactly as the fuzzer ran it.

/// Splits the input into files; also in fuzz/series.dict so mutations keep it.
pub const FILE_SEPARATOR: &[u8] = b"\n--edgeseg-next-file--\n";
/// At most this many files per input (the rest is ignored).
pub const MAX_FILES: usize = 8;

/// The input's files, in order.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < MAX_FILES {
        match rest.windows(FILE_SEPARATOR.len()).position(|w| w == FILE_SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + FILE_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}
