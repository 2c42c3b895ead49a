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
//! - `ingest_mosaic`: Siemens mosaic images read as their slices: generated
//!   mosaics (tests/fixtures/mosaic.py) and the public TrioTim mosaic in nine
//!   transfer syntaxes, judged by dcm2niix and nibabel.
//! - `ingest_cli`: `edgeseg inspect` / `convert` output contracts, SUV per vendor,
//!   a vendor export folder's clutter skipped with exit 0.
//! - `ingest_geometry`: overlapping beds, variable spacing, gantry tilt (issue 11),
//!   `--strict-geometry`, outputs of a resampled CT on the source slices.
//! - `ingest_suv`: every SUV variant of the IBSI SUV manual (tests/fixtures/
//!   suv_variants.py) and the manual's 17 reference objects read in place from
//!   ../shared/conformance/ (files without (0002,0000) included).
//! - `ingest_conformance`: every file of the public set in `../shared/conformance/`
//!   converts to pydicom's voxel values (skipped, saying so, where the set is absent).
//! - `infer_predict`: `edgeseg predict` with ONNX Runtime on a network of known result.
//! - `infer_simulated`: the simulated network as a test device: the daemon's
//!   out-of-memory retry on the CPU, a simulated package claiming clinical use refused.
//! - `export_outputs`: lesions.csv, mip.png, the 4D probabilities and report
//!   provenance; a writer killed between files leaves no study folder.
//! - `export_dicom`: `seg.dcm` and `rtstruct.dcm` pass dciodvfy and dcmdump.
//! - `export_labelmap`: `[output] seg_kind` parsed and shown; the daemon's
//!   label-map seg.dcm delivered unchanged to storescp (C-STORE) and Orthanc (STOW-RS).
//! - `pipeline_process`: `edgeseg process`, DICOM to outputs, with a PET/CT model.
//! - `pipeline_screening`: `edgeseg process` with a CT screening model on
//!   dual-phase studies: the verdict in report.json; the daemon loads and
//!   preprocesses both phases on its loader thread, ahead of inference.
//! - `post_edits`: `add-lesion`, `remove-lesion`, `edits list|undo` on a
//!   processed study: refusals, stable lesion numbers, DICOM rewritten, undo.
//! - `post_profiles`: the PET/CT total-tumour profile on generated studies.
//! - `post_screening`: the CT screening (S4C) rules.
//! - `observe_http`: the status page `/` in headless Chromium; `/metrics` judged by `promtool check metrics`, `/readyz`,
//!   the alert rules (`promtool check rules`, `promtool test rules`), the
//!   Grafana dashboard and docs/metrics.md against the exported metrics.
//! - `observe_notify`: sd_notify datagrams on a fake NOTIFY_SOCKET, compared
//!   with `systemd-notify`'s; the watchdog interval.
//! - `observe_dbus`: `org.edgeseg.Daemon1` on a private dbus-daemon, judged by
//!   busctl and gdbus; `edgeseg status`.
//! - `observe_dbus_policy`: the shipped bus policy on a system-style private
//!   bus, as `nobody`, a member of `edgeseg`, of `edgeseg-admin` and root
//!   (setpriv); `edgeseg quarantine`.
//! - `daemon_burst`: 30 studies at once (peak RSS bound), a full disk (tmpfs) (slow).
//! - `daemon_e2e`: the daemon with its real observers: a private D-Bus, a fake
//!   NOTIFY_SOCKET, `/metrics` judged by promtool; a study exported file by file.
//! - `daemon_crash`: SIGKILL at random moments during a stream of 10 studies (slow).
//! - `daemon_geometry`: a whole-body export with overlapping PET beds processed once (issue 11).
//! - `daemon_memory`: `[limits] memory_mb`: two studies overlap, run one after
//!   the other, or are quarantined, by the daemon's estimate of their peak.
//! - `daemon_service`: the service loop in process with a recording Reporter and Commands.
//! - `daemon_watch`: `edgeseg daemon` as a subprocess: an exported study
//!   processed once, poll mode, symlinks, late files, SIGHUP, expected image
//!   counts, an invalid configuration, a second instance refused.
//! - `evaluate`: `edgeseg evaluate`'s output contract, case pairing, grid check,
//!   screening verdicts, and DICOM studies through the demo model to figures.
//! - `systemd_units`: the unit, tmpfiles, sysusers and D-Bus policy under
//!   systemd/ (systemd-analyze verify and security), `edgeseg check-config`.
//! - `dicom_node_commitment`: Storage Commitment against Orthanc's SCP (its
//!   report on a new association, a failed instance sent again, the timeout)
//!   and a pynetdicom PACS reporting on the N-ACTION's association.

mod daemon_util;
mod util;

mod bad_inputs;
mod daemon_bad_inputs;
mod daemon_burst;
mod daemon_crash;
mod daemon_e2e;
mod daemon_geometry;
mod daemon_memory;
mod daemon_privacy;
mod daemon_service;
mod daemon_watch;
mod dicom_node;
mod dicom_node_commitment;
mod dicom_node_tls;
mod evaluate;
mod export_dicom;
mod export_labelmap;
mod export_outputs;
mod fuzz_regressions;
mod infer_predict;
mod infer_simulated;
mod ingest_bad_input;
mod ingest_cli;
mod ingest_conformance;
mod ingest_formats;
mod ingest_geometry;
mod ingest_mosaic;
mod ingest_suv;
mod observe_dbus;
mod observe_dbus_policy;
mod observe_http;
mod observe_notify;
mod pipeline_process;
mod pipeline_screening;
mod post_edits;
mod post_profiles;
mod post_screening;
mod systemd_units;
