//! Post-processing stage: label maps and PET SUV volumes to lesions and their
//! figures, following the seeds' rules (body mask, minimum volume, one label
//! per lesion, liver reference, S4C screening rules). Runs its heavy steps on
//! `gpu::Backend` (CUDA or the CPU twins); knows nothing of DICOM or services.

pub mod components;
pub mod edt;
pub mod pet;
pub mod screening;
