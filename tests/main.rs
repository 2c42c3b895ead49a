//! edgeseg integration tests: one binary, one module per area. Fixtures are
//! written by the independent Python generators in `tests/fixtures/` (pydicom,
//! highdicom, dcmtk), never by the code under test; `scripts/test.sh` creates
//! the venv they run in.
//!
//! - `bad_inputs`: the bad-input corpus (tests/bad-inputs/make.py, 30+ kinds)
//!   through `edgeseg convert`: no panic, bounded peak memory, each refusal
//!   naming its file and reason.
//! - `fuzz_regressions`: the inputs the fuzzers found (tests/fuzz-regressions/),
//!   replayed on the fuzz targets' paths.
//! - `ingest_bad_input`: each kind of broken input gets a clear error naming
//!   the file and the reason, no panic, and the rest of the folder still loads.
//! - `ingest_formats`: every transfer syntax and multi-frame form loads to the
//!   same volume as the uncompressed single-frame series.
//! - `ingest_cli`: `edgeseg inspect` / `convert` output contracts, SUV per vendor.
//! - `infer_predict`: `edgeseg predict` with ONNX Runtime on a network of known result.
//! - `pipeline_process`: `edgeseg process`, DICOM to outputs, with a PET/CT model.
//! - `post_profiles`: the PET/CT total-tumour profile on generated studies.
//! - `post_screening`: the CT screening (S4C) rules.

mod util;

mod bad_inputs;
mod fuzz_regressions;
mod infer_predict;
mod ingest_bad_input;
mod ingest_cli;
mod ingest_formats;
mod pipeline_process;
mod post_profiles;
mod post_screening;
