//! `edgeseg predict`: nnUNetv2_predict's interface on nnU-Net-named NIfTI
//! inputs, so edgeseg is a drop-in replacement and parity can be shown on the
//! same files. Part of the binary edge (anyhow).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgeseg::export::nifti;
use edgeseg::gpu::select::PostprocessChoice;
use edgeseg::infer::onnx::{EngineOptions, ProviderRequest, library_path};
use edgeseg::infer::{PredictOptions, Predictor};
use edgeseg::volume::{Geometry, Volume};

use crate::progress::Progress;

/// ONNX Runtime options shared by `predict` and `process`.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// libonnxruntime.so (ORT_DYLIB_PATH overrides).
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Execution provider: auto, cpu, cuda, tensorrt or openvino (CPU; the onnxruntime-openvino library).
    #[arg(long, default_value = "cpu")]
    pub provider: ProviderRequest,
    /// Fail instead of falling back to the CPU when the GPU provider is unavailable.
    #[arg(long)]
    pub require_gpu: bool,
    /// ONNX Runtime intra-op threads (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Allow OpenVINO to infer in BF16 on a CPU with AMX or AVX-512 BF16 (with --provider openvino; kept only if it agrees with FP32 on a probe tile).
    #[arg(long)]
    pub bf16: bool,
}

impl EngineArgs {
    /// The library path and engine options these arguments ask for.
    fn resolve(&self) -> Result<(PathBuf, EngineOptions)> {
        let lib = library_path(self.onnxruntime.as_deref())?;
        let opts = EngineOptions {
            provider: self.provider,
            require_gpu: self.require_gpu,
            threads: self.threads,
            bf16: self.bf16,
            ..EngineOptions::default()
        };
        Ok((lib, opts))
    }
}

/// The command's arguments.
pub struct Args {
    pub input: PathBuf,
    pub output: PathBuf,
    pub model: PathBuf,
    pub folds: Vec<u32>,
    pub tta: bool,
    pub step_size: f64,
    pub save_probabilities: bool,
    pub engine: EngineArgs,
    pub batch_size: usize,
    /// Keep outputs that exist (nnU-Net's --continue_prediction).
    pub continue_prediction: bool,
    /// (part id, number of parts): every number-of-parts-th case from the id.
    pub part: (usize, usize),
    /// A progress bar when stderr is a terminal.
    pub progress_bar: bool,
}

/// CASE → channel files, from names CASE_XXXX<ending>; a channel the model
/// does not have (CASE_0002 for a two-channel model) is an error naming the
/// files, before anything runs.
fn cases(dir: &Path, ending: &str, n_channels: usize) -> Result<BTreeMap<String, BTreeMap<usize, PathBuf>>> {
    let mut out: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    let mut extra = Vec::new();
    let list = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list the input folder", dir.display()))?;
    for e in list {
        let e = e.with_context(|| format!("{}: cannot list the input folder", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(ending) else { continue };
        let Some((case, ch)) = stem.rsplit_once('_') else { continue };
        let Some(ch) = ch.parse::<usize>().ok().filter(|_| ch.len() == 4 && ch.bytes().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if ch >= n_channels {
            extra.push(name);
            continue;
        }
        out.entry(case.to_string()).or_default().insert(ch, e.path());
    }
    if !extra.is_empty() {
        extra.sort();
        bail!(
            "{}: {}: channel files the model does not take (it has {n_channels} channel(s), _0000 to _{:04})",
            dir.display(),
            extra.join(", "),
            n_channels.saturating_sub(1)
        );
    }
    Ok(out)
}

/// One case's channels read and on one grid, or why not (the case is skipped).
fn read_case(files: &BTreeMap<usize, PathBuf>, n_channels: usize) -> Result<Vec<Volume<f32>>, String> {
    let missing: Vec<String> = (0..n_channels).filter(|c| !files.contains_key(c)).map(|c| format!("_{c:04}")).collect();
    if !missing.is_empty() {
        return Err(format!("missing channel file(s) {}", missing.join(", ")));
    }
    let mut vols = Vec::with_capacity(n_channels);
    for c in 0..n_channels {
        vols.push(nifti::read_f32(&files[&c]).map_err(|e| e.to_string())?);
    }
    let g0 = &vols[0].geometry;
    for (c, v) in vols.iter().enumerate().skip(1) {
        if let Some(why) = grid_difference(g0, &v.geometry) {
            return Err(format!("channel _{c:04} is not on channel _0000's grid ({why})"));
        }
    }
    Ok(vols)
}

/// How two grids differ, as nnU-Net's reader checks them (shape, spacing,
/// origin, direction), with float tolerances; None when they agree.
fn grid_difference(a: &Geometry, b: &Geometry) -> Option<String> {
    let v = |x: &[f64; 3]| format!("{:.4} x {:.4} x {:.4}", x[0], x[1], x[2]);
    if a.dims != b.dims {
        let d = |x: &[usize; 3]| format!("{} x {} x {}", x[0], x[1], x[2]);
        return Some(format!("voxels {} against {}", d(&b.dims), d(&a.dims)));
    }
    if a.spacing.iter().zip(&b.spacing).any(|(p, q)| (p - q).abs() > 1e-4 * p.abs().max(1.0)) {
        return Some(format!("spacing {} mm against {} mm", v(&b.spacing), v(&a.spacing)));
    }
    if a.origin.iter().zip(&b.origin).any(|(p, q)| (p - q).abs() > 1e-3) {
        return Some(format!("origin {} mm against {} mm", v(&b.origin), v(&a.origin)));
    }
    if a.direction.iter().flatten().zip(b.direction.iter().flatten()).any(|(p, q)| (p - q).abs() > 1e-4) {
        return Some("another orientation".into());
    }
    None
}

/// Minimal .npz (an uncompressed zip of one .npy) for --save-probabilities.
/// The array is `parts` one after the other (the classes' volumes); it is
/// converted to bytes in blocks, twice (once for the zip's CRC, once to
/// write), so no copy of the whole array is ever held.
fn write_npz(path: &Path, name: &str, shape: &[usize], parts: &[&[f32]]) -> Result<()> {
    const BLOCK: usize = 1 << 16;
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut prefix = Vec::with_capacity(10 + header.len());
    prefix.extend_from_slice(b"\x93NUMPY\x01\x00");
    prefix.extend_from_slice(&(header.len() as u16).to_le_bytes());
    prefix.extend_from_slice(header.as_bytes());
    let values: usize = parts.iter().map(|p| p.len()).sum();
    let size = values
        .checked_mul(4)
        .and_then(|n| n.checked_add(prefix.len()))
        .and_then(|n| u32::try_from(n).ok())
        .context("probabilities over 4 GiB: too large for this .npz writer")?;
    // Every block of the array as little-endian bytes, in order.
    let blocks = |each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(BLOCK * 4);
        for part in parts {
            for block in part.chunks(BLOCK) {
                bytes.clear();
                for v in block {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                each(&bytes)?;
            }
        }
        Ok(())
    };
    let mut crc = flate2::Crc::new();
    crc.update(&prefix);
    blocks(&mut |b| {
        crc.update(b);
        Ok(())
    })?;
    let crc = crc.sum();
    let fname = format!("{name}.npy");
    let mut local = Vec::with_capacity(30 + fname.len());
    local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    local.extend_from_slice(&20u16.to_le_bytes()); // version needed
    local.extend_from_slice(&0u16.to_le_bytes()); // flags
    local.extend_from_slice(&0u16.to_le_bytes()); // stored
    local.extend_from_slice(&0u32.to_le_bytes()); // time, date
    local.extend_from_slice(&crc.to_le_bytes());
    local.extend_from_slice(&size.to_le_bytes());
    local.extend_from_slice(&size.to_le_bytes());
    local.extend_from_slice(&(fname.len() as u16).to_le_bytes());
    local.extend_from_slice(&0u16.to_le_bytes());
    local.extend_from_slice(fname.as_bytes());
    let central_at = u32::try_from(local.len() + size as usize)
        .context("probabilities over 4 GiB: too large for this .npz writer")?;
    let mut tail = Vec::with_capacity(46 + fname.len() + 22);
    tail.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    tail.extend_from_slice(&20u16.to_le_bytes()); // made by
    tail.extend_from_slice(&20u16.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&0u32.to_le_bytes());
    tail.extend_from_slice(&crc.to_le_bytes());
    tail.extend_from_slice(&size.to_le_bytes());
    tail.extend_from_slice(&size.to_le_bytes());
    tail.extend_from_slice(&(fname.len() as u16).to_le_bytes());
    tail.extend_from_slice(&[0u8; 8]); // extra, comment, disk, internal attrs
    tail.extend_from_slice(&0u32.to_le_bytes()); // external attrs
    tail.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    tail.extend_from_slice(fname.as_bytes());
    let central_len = tail.len() as u32;
    tail.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    tail.extend_from_slice(&[0u8; 4]);
    tail.extend_from_slice(&1u16.to_le_bytes());
    tail.extend_from_slice(&1u16.to_le_bytes());
    tail.extend_from_slice(&central_len.to_le_bytes());
    tail.extend_from_slice(&central_at.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    edgeseg::export::write_atomic(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&local)?;
        w.write_all(&prefix)?;
        blocks(&mut |b| w.write_all(b))?;
        w.write_all(&tail)?;
        w.flush()
    })
    .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn run(a: &Args) -> Result<bool> {
    let (lib, engine) = a.engine.resolve()?;
    let opts =
        PredictOptions { folds: a.folds.clone(), tta: a.tta, step_size: a.step_size, batch_size: a.batch_size, engine };
    let predictor = Predictor::new(&a.model, &lib, opts)
        .with_context(|| format!("{}: cannot load the model", a.model.display()))?;
    let ending = predictor.package.dataset.file_ending.clone().unwrap_or_else(|| ".nii.gz".into());
    let n_channels = predictor.package.meta.channels.len();
    let all = cases(&a.input, &ending, n_channels)?;
    if all.is_empty() {
        bail!("{}: no CASE_XXXX{ending} images", a.input.display());
    }
    // nnU-Net's -part_id/-num_parts: every num_parts-th case of the sorted list.
    let (part, parts) = a.part;
    let mine: Vec<(&String, &BTreeMap<usize, PathBuf>)> = all.iter().skip(part).step_by(parts.max(1)).collect();
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("{}: cannot create the output folder", a.output.display()))?;
    // As nnUNetv2_predict: the model's dataset.json and plans.json beside the
    // predictions, where nnUNetv2_apply_postprocessing and nnUNetv2_ensemble
    // look for them.
    for name in ["dataset.json", "plans.json"] {
        let from = predictor.package.dir.join(name);
        let bytes = std::fs::read(&from).with_context(|| format!("{}: cannot read", from.display()))?;
        let to = a.output.join(name);
        edgeseg::export::write_atomic(&to, |f| f.write_all(&bytes))
            .with_context(|| format!("{}: cannot write", to.display()))?;
    }
    let mut progress = Progress::new("case", mine.len(), a.progress_bar);
    let mut clean = true;
    for (case, files) in mine {
        progress.begin(case);
        let out = a.output.join(format!("{case}{ending}"));
        let npz = a.output.join(format!("{case}.npz"));
        if a.continue_prediction && out.exists() && (!a.save_probabilities || npz.exists()) {
            progress.suspend(|| eprintln!("edgeseg: case {case}: {} exists, kept", out.display()));
            continue;
        }
        let vols = match read_case(files, n_channels) {
            Ok(v) => v,
            Err(why) => {
                progress.suspend(|| eprintln!("edgeseg: skipped case {case}: {why}"));
                clean = false;
                continue;
            }
        };
        // The images read are given up: a one-channel case becomes the
        // network input in its own buffer.
        let prepared = edgeseg::infer::prepare_owned(&predictor.package, vols);
        let p = prepared.and_then(|prepared| {
            predictor.predict_prepared(prepared, a.save_probabilities, |done, total| {
                progress.step(done as f64 / total.max(1) as f64, &format!("tile {done}/{total}"));
            })
        });
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                progress.suspend(|| eprintln!("edgeseg: skipped case {case}: {e}"));
                clean = false;
                continue;
            }
        };
        progress.step(1.0, "writing");
        nifti::write(&out, &p.labels, "edgeseg predict").with_context(|| format!("{}: cannot write", out.display()))?;
        if let Some(probs) = &p.probabilities {
            // nnU-Net's .npz: 'probabilities' as K × (z, y, x).
            let g = &p.labels.geometry;
            let parts: Vec<&[f32]> = probs.iter().map(|pr| pr.data.as_slice()).collect();
            write_npz(&npz, "probabilities", &[probs.len(), g.dims[2], g.dims[1], g.dims[0]], &parts)?;
        }
        progress.suspend(|| {
            println!(
                "{} (preprocess {:.2} s, inference {:.2} s, export {:.2} s)",
                out.display(),
                p.timings.preprocess_s,
                p.timings.inference_s,
                p.timings.export_s
            )
        });
    }
    progress.finish();
    Ok(clean)
}

/// `edgeseg process` arguments.
pub struct ProcessArgs {
    pub input: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    pub folds: Vec<u32>,
    pub tta: bool,
    pub save_probabilities: bool,
    pub engine: EngineArgs,
    pub postprocess: PostprocessChoice,
    pub strict_geometry: bool,
    pub seg_kind: edgeseg::export::seg::SegKind,
}

/// `edgeseg process`: every study of a DICOM folder through the pipeline.
pub fn process(a: &ProcessArgs) -> Result<bool> {
    use edgeseg::gpu::select::PostBackend;
    use edgeseg::pipeline;
    let (lib, engine) = a.engine.resolve()?;
    let opts = PredictOptions { folds: a.folds.clone(), tta: a.tta, engine, ..PredictOptions::default() };
    let predictor = Predictor::new(&a.model, &lib, opts)
        .with_context(|| format!("{}: cannot load the model", a.model.display()))?;
    if !a.input.is_dir() {
        bail!("{}: not a folder", a.input.display());
    }
    let backend = PostBackend::select(a.postprocess)?;
    let index = edgeseg::ingest::index(&a.input).with_strict_geometry(a.strict_geometry);
    for e in &index.errors {
        eprintln!("edgeseg: skipped {e}");
    }
    let mut clean = index.errors.is_empty();
    let studies: Vec<String> = index.studies().keys().map(|s| s.to_string()).collect();
    if studies.is_empty() {
        bail!("{}: no DICOM study found", a.input.display());
    }
    let mut progress = Progress::new("study", studies.len(), true);
    for (n, study) in studies.iter().enumerate() {
        let tag = format!("study {} of {}", n + 1, studies.len());
        // Progress names the study by its number only (the UID is quasi-identifying).
        progress.begin("");
        let r = pipeline::process_study(
            &predictor,
            &backend,
            &index,
            study,
            &a.out,
            a.save_probabilities,
            a.seg_kind,
            |stage| {
                tracing::info!(study = %study, "{tag}: {stage}");
                let within = stage.percent.map_or(0.0, |p| f64::from(p) / 100.0);
                progress.step(within, &stage.to_string());
            },
        );
        match r {
            Ok((dir, r)) => {
                let t = &r.report.timings_s;
                progress.suspend(|| println!(
                    "{} ({} lesions; load {:.1} s, preprocess {:.1} s, inference {:.1} s, export {:.1} s, post {:.1} s, write {:.1} s)",
                    dir.display(),
                    // The lesion map's count (the CT radiomics profile has lesions but no table).
                    r.lesions.as_ref().map_or(r.report.lesions.len(), |l| l.data.iter().copied().max().unwrap_or(0) as usize),
                    t.load,
                    t.preprocess,
                    t.inference,
                    t.export,
                    t.postprocess,
                    t.write
                ));
            }
            Err(e) => {
                let class = match e.class() {
                    edgeseg::ingest::ErrorClass::BadInput => "bad input",
                    edgeseg::ingest::ErrorClass::Transient => "may pass on a retry",
                };
                progress.suspend(|| eprintln!("edgeseg: {tag} failed ({class}): {e}"));
                clean = false;
            }
        }
    }
    progress.finish();
    Ok(clean)
}

/// `edgeseg compile`: engines built now, provider per fold reported.
pub fn compile(
    model: &Path,
    onnxruntime: Option<&Path>,
    provider: ProviderRequest,
    require_gpu: bool,
    fp16: bool,
    bf16: bool,
    trt_cache: Option<PathBuf>,
) -> Result<bool> {
    let lib = library_path(onnxruntime)?;
    let opts = PredictOptions {
        engine: EngineOptions {
            provider,
            require_gpu,
            fp16,
            bf16,
            trt_cache_dir: trt_cache,
            ..EngineOptions::default()
        },
        ..PredictOptions::default()
    };
    let t = std::time::Instant::now();
    let predictor =
        Predictor::new(model, &lib, opts).with_context(|| format!("{}: cannot load the model", model.display()))?;
    predictor.warm_up()?;
    println!(
        "model {} {} (sha256 {})",
        predictor.package.meta.name, predictor.package.meta.version, predictor.package.sha256
    );
    for (fold, e) in predictor.providers() {
        println!("fold {fold}: {}", e.label());
    }
    println!("ready in {:.1} s", t.elapsed().as_secs_f64());
    Ok(true)
}
