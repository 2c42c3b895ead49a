//! CPU twins of the CUDA kernels (placeholder during bring-up).
use super::{ComponentStats, Connectivity, Labels};

/// Connected components.
pub fn label(_mask: &[u8], _dims: [usize; 3], _conn: Connectivity) -> Labels {
    Labels { data: Vec::new(), count: 0 }
}
/// Statistics.
pub fn stats(_labels: &Labels, _values: &[f32], _dims: [usize; 3]) -> Vec<ComponentStats> {
    Vec::new()
}
/// SUV threshold.
pub fn suv_threshold(_stored: &[i16], _dims: [usize; 3], _s: &[(f32, f32)], _t: f32) -> (Vec<f32>, Vec<u8>) {
    (Vec::new(), Vec::new())
}
