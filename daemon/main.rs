//! The `edgeseg` command line: the binary edge, where errors become messages
//! and exit codes. Exit 0: all done; 1: nothing could be done (bad arguments,
//! unreadable folder, unwritable output); 2: done, but some files or series
//! were refused (each named on stderr). Files that are no image volume
//! (DICOMDIR, DIRFILE, reports, presentation states, screen shots, colour
//! images, localizers) are listed on stderr as `info: skipped` and leave the
//! exit status alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use edgeseg::export::{nifti, uid_file_stem, write_atomic};
use edgeseg::ingest::{self, SeriesVolume, summary};

mod predict;

/// `println!` that returns an error instead of panicking (a closed pipe, as in
/// `edgeseg inspect DIR | head`, ends the command quietly).
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

#[derive(Parser)]
#[command(name = "edgeseg", version = edgeseg::version(), about = "Scanner-side PET/CT and CT segmentation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the DICOM series in a folder: geometry, transfer syntaxes, SUV.
    Inspect {
        /// Folder to scan recursively.
        dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
        #[arg(long)]
        strict_geometry: bool,
    },
    /// Convert every series to OUT/<SeriesInstanceUID>.nii.gz (+ .json).
    Convert {
        /// Folder to scan recursively.
        dir: PathBuf,
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
        /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
        #[arg(long)]
        strict_geometry: bool,
    },
    /// Read every series to volumes and report the time taken (benchmarks).
    Load {
        /// Folder to scan recursively.
        dir: PathBuf,
        /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
        #[arg(long)]
        strict_geometry: bool,
    },
    /// nnUNetv2_predict's interface: segment nnU-Net-named NIfTI inputs
    /// (CASE_0000.nii.gz, CASE_0001.nii.gz ...) into OUT/CASE.nii.gz.
    Predict {
        /// Folder of input images.
        #[arg(short = 'i')]
        input: PathBuf,
        /// Output folder.
        #[arg(short = 'o')]
        output: PathBuf,
        /// Model package folder.
        #[arg(short = 'm')]
        model: PathBuf,
        /// Folds to ensemble (default: all in the package).
        #[arg(short = 'f', num_args = 1..)]
        folds: Vec<u32>,
        /// Turn off mirroring test-time augmentation.
        #[arg(long)]
        disable_tta: bool,
        /// Sliding-window step as a fraction of the patch size.
        #[arg(long, default_value_t = 0.5)]
        step_size: f64,
        /// Also write CASE.npz with the class probabilities (nnU-Net's layout).
        #[arg(long)]
        save_probabilities: bool,
        #[command(flatten)]
        engine: predict::EngineArgs,
        /// Tiles per network call.
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
    },
    /// Segment every study in a DICOM folder: OUT/<StudyInstanceUID>/ gets
    /// labels.nii.gz (on the reference series' grid), lesions.nii.gz and
    /// suv.nii.gz (PET/CT profile), report.json, lesions.csv and mip.png.
    Process {
        /// DICOM folder (scanned recursively).
        input: PathBuf,
        /// Model package folder.
        #[arg(long)]
        model: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Folds to ensemble (default: all in the package).
        #[arg(short = 'f', long = "folds", num_args = 1..)]
        folds: Vec<u32>,
        /// Turn off mirroring test-time augmentation.
        #[arg(long)]
        disable_tta: bool,
        /// Also write probabilities.nii.gz (4D: x, y, z, class; float32).
        #[arg(long)]
        save_probabilities: bool,
        #[command(flatten)]
        engine: predict::EngineArgs,
        /// Run post-processing kernels on the GPU (CUDA) when there is one
        /// (the same as --postprocess auto).
        #[arg(long, conflicts_with = "postprocess")]
        gpu_post: bool,
        /// Where post-processing runs: auto (CUDA when there is a device,
        /// else the CPU), cuda (an error without one) or cpu.
        #[arg(long, default_value = "cpu")]
        postprocess: edgeseg::gpu::select::PostprocessChoice,
        /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
        #[arg(long)]
        strict_geometry: bool,
    },
    /// Build every fold's engine ahead of the first study (TensorRT engines are
    /// cached) and report which provider each fold got.
    Compile {
        /// Model package folder.
        #[arg(long)]
        model: PathBuf,
        /// libonnxruntime.so (ORT_DYLIB_PATH overrides).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// Execution provider: auto, cpu, cuda or tensorrt.
        #[arg(long, default_value = "auto")]
        provider: edgeseg::infer::onnx::ProviderRequest,
        /// Fail instead of falling back to the CPU when the GPU provider is unavailable.
        #[arg(long)]
        require_gpu: bool,
        /// Allow TensorRT FP16 engines (kept only if they agree with FP32 on a probe tile).
        #[arg(long)]
        fp16: bool,
        /// TensorRT engine and timing cache folder.
        #[arg(long)]
        trt_cache: Option<PathBuf>,
    },
    /// Check the CUDA kernels against their CPU twins (bit for bit) and benchmark them.
    GpuCheck {
        /// Seed of the generated volumes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Only write the benchmark volume (raw u8, x fastest) to PATH and print "nx ny nz".
        #[arg(long, value_name = "PATH")]
        write_volume: Option<PathBuf>,
        /// With --write-volume: also write the CPU twin's 26-connectivity labels
        /// (raw u32 little-endian, same order) to PATH.
        #[arg(long, value_name = "PATH", requires = "write_volume")]
        write_labels: Option<PathBuf>,
        /// Skip the 512×512×400 benchmark (correctness cases only).
        #[arg(long)]
        no_bench: bool,
        /// Add the large labelling cases: a grid-y stride volume (512×1024×1100)
        /// and one above 2^31 voxels (2048×1024×1040); ~30 GB host memory.
        #[arg(long)]
        large: bool,
        /// GPU labellings of the benchmark volume, each compared with the CPU twin.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Add a lesion grown from a seed point to a finished PET/CT study folder
    /// (rewrites its labels, lesions and report).
    AddLesion {
        /// The study's output folder (OUT/<StudyInstanceUID>).
        study_out: PathBuf,
        /// Seed point x,y,z in patient coordinates (mm, DICOM LPS, as viewers show).
        #[arg(long, value_name = "X,Y,Z", allow_hyphen_values = true)]
        at: String,
        /// liver (the patient's reference threshold), a fraction of the local SUVmax (40%), or a fixed SUV (e.g. 3.5).
        #[arg(long, default_value = "liver")]
        threshold: String,
    },
    /// Radiomics features exact to PyRadiomics (its parameter files and
    /// output names) of one image and mask, or of every Image,Mask pair of a
    /// batch CSV (pyradiomics' batch layout; output CSV).
    Radiomics {
        /// Image (NIfTI), or a batch CSV with Image and Mask columns.
        image: PathBuf,
        /// Mask (NIfTI label map); omitted for a batch CSV.
        mask: Option<PathBuf>,
        /// Label of the ROI in the mask (default: the parameter file's, else 1).
        #[arg(long)]
        label: Option<i64>,
        /// PyRadiomics parameter file (YAML or JSON).
        #[arg(long)]
        params: Option<PathBuf>,
        /// Print one JSON object mapping each feature name to its value.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print PyRadiomics' CSV layout (header and one row per case).
        #[arg(long)]
        csv: bool,
    },
    /// Run as the scanner-side daemon: watch the export folders, queue and
    /// process complete studies (see systemd/edgeseg.service).
    Daemon {
        /// Configuration file (TOML; systemd/edgeseg.toml lists every key).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a daemon configuration file: every error with its line and
    /// column, then (unless --offline) the model package (its files against
    /// model.toml's sha256s), the ONNX Runtime library and the folders on
    /// this machine; exit 0 when valid, 2 when not, 1 when unreadable.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
        /// Syntax and values only, for a file meant for another machine: no
        /// model, library or folder is looked at.
        #[arg(long)]
        offline: bool,
    },
    /// Label the connected components of a mask (any non-zero voxel), in the
    /// canonical order (first voxel in raster order), with optional size filter
    /// and per-component statistics of an intensity image.
    Components {
        /// The mask (NIfTI).
        mask: PathBuf,
        /// Output label map (NIfTI, same grid).
        #[arg(long)]
        out: PathBuf,
        /// 6, 18 or 26.
        #[arg(long, default_value_t = 26, value_parser = parse_connectivity)]
        connectivity: u32,
        /// Remove components smaller than this volume (ml), then renumber.
        #[arg(long)]
        min_ml: Option<f64>,
        /// Intensity image (NIfTI, same grid) for per-component statistics.
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Print the components (and timings) as JSON.
        #[arg(long)]
        json: bool,
        /// Use the CUDA kernels instead of the CPU twins.
        #[arg(long)]
        gpu: bool,
    },
    /// Show the running daemon's state, queue and model, read over D-Bus
    /// (the system bus unless told otherwise).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Ask the session bus instead of the system bus.
        #[arg(long, conflicts_with = "address")]
        session: bool,
        /// Ask the bus at this D-Bus address (unix:path=...).
        #[arg(long)]
        address: Option<String>,
    },
    /// List, show, retry or clear the daemon's quarantine records, over
    /// D-Bus (root or a member of edgeseg-admin).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
        /// Print JSON for scripts (list, show).
        #[arg(long, global = true)]
        json: bool,
        /// Ask the session bus instead of the system bus.
        #[arg(long, global = true, conflicts_with = "address")]
        session: bool,
        /// Ask the bus at this D-Bus address (unix:path=...).
        #[arg(long, global = true)]
        address: Option<String>,
    },
}

/// What `edgeseg quarantine` does.
#[derive(Subcommand)]
enum QuarantineAction {
    /// Every record: name, kind, time, reason.
    List,
    /// One record, with its study UID and input files.
    Show {
        /// The record's name (study hash, or file-<hash>), as `list` shows it.
        name: String,
    },
    /// Run the study again (its record goes once it is done), or read the file again.
    Retry {
        /// The record's name.
        name: String,
    },
    /// Remove the record; a study counts as failed from then on (the input stays).
    Clear {
        /// The record's name.
        name: String,
    },
}

/// `edgeseg radiomics`: one case (text, --json or --csv) or a batch CSV (CSV
/// on stdout, a progress bar on a terminal's stderr; failed cases named on
/// stderr and left out, exit 2).
fn radiomics(
    image: &Path,
    mask: Option<&Path>,
    label: Option<i64>,
    params: Option<&Path>,
    json: bool,
    csv: bool,
) -> Result<bool> {
    use edgeseg::radiomics::{self as rad, output};
    use std::io::IsTerminal;
    let params = match params {
        Some(p) => rad::params::Params::from_file(p).with_context(|| format!("{}", p.display()))?,
        None => rad::params::Params::default(),
    };
    let read = |p: &Path| -> Result<edgeseg::volume::Volume<f32>> {
        // The NIfTI reader's own message for a missing file is Rust debug text.
        std::fs::File::open(p).with_context(|| format!("{}: cannot read", p.display()))?;
        Ok(nifti::read_f32(p)?)
    };
    let Some(mask) = mask else {
        let cases = output::read_batch(image)?;
        let bar = std::io::stderr().is_terminal();
        let mut rows = Vec::new();
        let mut all_ok = true;
        for (i, case) in cases.iter().enumerate() {
            if bar {
                let done = (i * 30) / cases.len().max(1);
                eprint!("\r[{}{}] {}/{} cases", "#".repeat(done), ".".repeat(30 - done), i, cases.len());
            }
            let result = read(&case.image).and_then(|im| {
                let ma = read(&case.mask)?;
                Ok(rad::extract(&im, &ma, &params, label.or(case.label))?)
            });
            match result {
                Ok(out) => rows.push((case.columns.clone(), out)),
                Err(e) => {
                    all_ok = false;
                    if bar {
                        eprintln!();
                    }
                    eprintln!("error: case {} ({}): {e:#}", i + 1, case.image.display());
                }
            }
        }
        if bar {
            eprintln!("\r[{}] {}/{} cases", "#".repeat(30), cases.len(), cases.len());
        }
        if json {
            let all: Vec<serde_json::Value> = rows
                .iter()
                .map(|(cols, out)| {
                    let mut m: serde_json::Map<String, serde_json::Value> =
                        cols.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
                    m.extend(out.iter().cloned());
                    serde_json::Value::Object(m)
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            std::io::Write::write_all(&mut std::io::stdout().lock(), output::to_csv(&rows).as_bytes())?;
        }
        return Ok(all_ok);
    };
    let out = rad::extract(&read(image)?, &read(mask)?, &params, label)?;
    let text = if json {
        output::to_json(&out) + "\n"
    } else if csv {
        let cols =
            vec![("Image".to_string(), image.display().to_string()), ("Mask".to_string(), mask.display().to_string())];
        output::to_csv(&[(cols, out)])
    } else {
        output::to_text(&out)
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(true)
}

fn main() -> ExitCode {
    // Before any thread exists: ONNX Runtime must not record telemetry (nor
    // create its device id and event database under ~/.cache) in any command.
    edgeseg::sys::disable_onnxruntime_telemetry();
    let cli = Cli::parse();
    // The journal under systemd (JOURNAL_STREAM on stderr), stderr otherwise;
    // EDGESEG_LOG filters (default: info for the daemon, warn otherwise).
    edgeseg::observe::logging::init(if matches!(cli.command, Command::Daemon { .. }) { "info" } else { "warn" });
    let result = match cli.command {
        Command::Inspect { dir, json, strict_geometry } => inspect(&dir, json, strict_geometry),
        Command::Convert { dir, out, strict_geometry } => convert(&dir, &out, strict_geometry),
        Command::Load { dir, strict_geometry } => load(&dir, strict_geometry),
        Command::Predict {
            input,
            output,
            model,
            folds,
            disable_tta,
            step_size,
            save_probabilities,
            engine,
            batch_size,
        } => predict::run(&predict::Args {
            input,
            output,
            model,
            folds,
            tta: !disable_tta,
            step_size,
            save_probabilities,
            engine,
            batch_size,
        }),
        Command::Process {
            input,
            model,
            out,
            folds,
            disable_tta,
            save_probabilities,
            engine,
            gpu_post,
            postprocess,
            strict_geometry,
        } => predict::process(&predict::ProcessArgs {
            input,
            model,
            out,
            folds,
            tta: !disable_tta,
            save_probabilities,
            engine,
            postprocess: if gpu_post { edgeseg::gpu::select::PostprocessChoice::Auto } else { postprocess },
            strict_geometry,
        }),
        Command::Compile { model, onnxruntime, provider, require_gpu, fp16, trt_cache } => {
            predict::compile(&model, onnxruntime.as_deref(), provider, require_gpu, fp16, trt_cache)
        }
        Command::Radiomics { image, mask, label, params, json, csv } => {
            radiomics(&image, mask.as_deref(), label, params.as_deref(), json, csv)
        }
        Command::Daemon { config } => daemon(&config),
        Command::CheckConfig { file, offline } => check_config(&file, offline),
        Command::AddLesion { study_out, at, threshold } => add_lesion(&study_out, &at, &threshold),
        Command::GpuCheck { seed, json, write_volume, write_labels, no_bench, large, repeat } => {
            gpu_check(seed, json, write_volume.as_deref(), write_labels.as_deref(), no_bench, large, repeat)
        }
        Command::Components { mask, out, connectivity, min_ml, stats, json, gpu } => {
            components(&mask, &out, connectivity, min_ml, stats.as_deref(), json, gpu)
        }
        Command::Status { json, session, address } => status(json, session, address),
        Command::Quarantine { action, json, session, address } => quarantine(action, json, session, address),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgeseg: error: {}", edgeseg::observe::logging::error_chain(e.chain()));
            ExitCode::from(1)
        }
    }
}

fn status(json: bool, session: bool, address: Option<String>) -> Result<bool> {
    use edgeseg::observe::{BusKind, status::read_status};
    let bus = match (session, address) {
        (_, Some(a)) => BusKind::Address(a),
        (true, None) => BusKind::Session,
        (false, None) => BusKind::System,
    };
    let st = read_status(&bus)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        std::io::Write::write_all(&mut std::io::stdout().lock(), st.to_text().as_bytes())?;
    }
    Ok(true)
}

fn quarantine(action: QuarantineAction, json: bool, session: bool, address: Option<String>) -> Result<bool> {
    use edgeseg::observe::{BusKind, status};
    let bus = match (session, address) {
        (_, Some(a)) => BusKind::Address(a),
        (true, None) => BusKind::Session,
        (false, None) => BusKind::System,
    };
    match action {
        QuarantineAction::List => {
            let all = status::quarantine_list(&bus)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                outln!("quarantine is empty");
            } else {
                for r in &all {
                    outln!("{}  {:5}  {}  {}", r.name, r.kind, r.since, r.reason);
                }
            }
        }
        QuarantineAction::Show { name } => {
            let r = status::quarantine_show(&bus, &name)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                std::io::Write::write_all(&mut std::io::stdout().lock(), r.to_text().as_bytes())?;
            }
        }
        QuarantineAction::Retry { name } => {
            status::quarantine_retry(&bus, &name)?;
            outln!("{name}: retry requested");
        }
        QuarantineAction::Clear { name } => {
            status::quarantine_clear(&bus, &name)?;
            outln!("{name}: clear requested");
        }
    }
    Ok(true)
}

/// `edgeseg check-config [--offline] FILE`.
fn check_config(file: &Path, offline: bool) -> Result<bool> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let (config, mut diags) = edgeseg::config::check(file, &text);
    let mut warnings = Vec::new();
    // The machine's files only for a file without errors of its own (a
    // relative path would be looked up in the wrong place).
    if let (Some(c), true, false) = (&config, diags.is_empty(), offline) {
        let found = edgeseg::config::check_files(file, &text, c);
        diags.extend(found.errors);
        warnings = found.warnings;
    }
    for d in &diags {
        eprintln!("{d}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let scope = if offline { " (offline: syntax and values only)" } else { "" };
    match (diags.len(), warnings.len()) {
        (0, 0) => outln!("{}: valid{scope}", file.display()),
        (0, w) => outln!("{}: valid, {w} warning(s)", file.display()),
        (n, _) => eprintln!("edgeseg: {}: {n} error(s)", file.display()),
    }
    Ok(diags.is_empty())
}

/// `edgeseg daemon --config FILE`.
fn daemon(config: &Path) -> Result<bool> {
    use edgeseg::observe::{self, BuildAndModelInfo, BusKind, Observer};
    use edgeseg::service;
    let control = service::Control::default();
    control.install_signal_handlers().context("cannot install signal handlers")?;
    // What the observer needs before the service loads anything: the listen
    // address, the bus, and the model's identity (its manifest, not the
    // networks). A bad file fails here with every error placed, as
    // check-config does.
    let text = std::fs::read_to_string(config).with_context(|| format!("{}: cannot read", config.display()))?;
    let (cfg, diags) = edgeseg::config::check(config, &text);
    let Some(cfg) = cfg.filter(|_| diags.is_empty()) else {
        for d in &diags {
            eprintln!("{d}");
        }
        anyhow::bail!("{}: {} configuration error(s)", config.display(), diags.len());
    };
    // Read and checked once: the service builds the engines from this copy.
    let pkg = edgeseg::infer::model::ModelPackage::load(&cfg.model.path).context("cannot load the model package")?;
    // The provider is unknown ("") until the engines are built: the service
    // then reports what each fold got, never the configured request.
    let info = BuildAndModelInfo::this_build(&pkg.meta.name, &pkg.meta.version, &pkg.sha256, "");
    let obs = Observer::new(info);
    obs.set_provider_requested(cfg.model.provider.as_str());
    let listen = cfg
        .metrics
        .listen
        .resolve()
        .with_context(|| format!("[metrics] listen = {:?}", cfg.metrics.listen.to_string()))?;
    let http = observe::serve_http(listen, obs.clone())?;
    tracing::info!("metrics on http://{}/metrics", http.local_addr());
    let (commands_tx, commands) = std::sync::mpsc::channel::<service::Command>();
    let bus = match cfg.dbus.bus {
        edgeseg::config::Bus::System => BusKind::System,
        edgeseg::config::Bus::Session => BusKind::Session,
        edgeseg::config::Bus::Off => BusKind::Off,
    };
    let _dbus = observe::start_dbus(bus, obs.clone(), commands_tx.clone())?;
    service::run_with_package(config, Some(pkg), &obs, &control, &commands)?;
    drop(http);
    Ok(true)
}

fn index(dir: &Path, strict_geometry: bool) -> Result<ingest::FolderIndex> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    Ok(ingest::index(dir).with_strict_geometry(strict_geometry))
}

fn report_file_errors(index: &ingest::FolderIndex) {
    for (path, why) in &index.skipped {
        eprintln!("edgeseg: info: skipped {}: {why}", path.display());
    }
    for e in &index.errors {
        eprintln!("edgeseg: skipped {e}");
    }
}

fn inspect(dir: &Path, json: bool, strict_geometry: bool) -> Result<bool> {
    let index = index(dir, strict_geometry)?;
    let s = summary::describe(&index);
    let clean = s.errors.is_empty() && s.studies.iter().all(|st| st.series.iter().all(|se| se.error.is_none()));
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(clean);
    }
    outln!("{}: {} studies, {} series", dir.display(), s.studies.len(), index.series.len());
    for st in &s.studies {
        outln!("study {}", st.study_uid);
        for se in &st.series {
            outln!("  series {} [{}]", se.series_uid, se.modality);
            if let Some(d) = se.series_description.as_deref() {
                outln!("    description   {d}");
            }
            match (&se.dims, &se.spacing_mm, &se.orientation) {
                (Some(d), Some(sp), Some(o)) => {
                    outln!("    voxels        {} x {} x {} ({} files)", d[0], d[1], d[2], se.instances);
                    outln!("    spacing       {:.4} x {:.4} x {:.4} mm", sp[0], sp[1], sp[2]);
                    outln!(
                        "    orientation   [{:.4}, {:.4}, {:.4}, {:.4}, {:.4}, {:.4}]",
                        o[0],
                        o[1],
                        o[2],
                        o[3],
                        o[4],
                        o[5]
                    );
                }
                _ => outln!("    files         {}", se.instances),
            }
            if let Some(r) = &se.slice_grid {
                if r.method == ingest::ResamplingMethod::None {
                    outln!("    slice grid    regular (largest deviation {:.3} mm)", r.max_deviation_mm);
                } else {
                    outln!(
                        "    slice grid    resampled: {} ({} to {} slices, largest displacement {:.3} mm)",
                        r.method.name(),
                        r.source_slices,
                        r.output_slices,
                        r.max_displacement_mm
                    );
                }
            }
            for ts in &se.transfer_syntaxes {
                outln!("    transfer      {} ({})", ts.uid, ts.name);
            }
            if se.multi_frame {
                outln!("    multi-frame   yes");
            }
            match &se.suv {
                Some(ingest::SuvStatus::Available(suv)) => {
                    outln!("    SUV factor    {:.6e} ({:?}, {})", suv.factor, suv.method, suv.kind.name());
                    if let Some(d) = suv.decay_seconds {
                        outln!("    decay         {d:.0} s from injection to scan start");
                    }
                    if let Some(p) = &suv.per_slice {
                        outln!("    per slice     factors {:.6e} to {:.6e}", p.min_factor, p.max_factor);
                    }
                    if let Some(b) = &suv.converted_from {
                        outln!(
                            "    converted     from {} with {} {:.3} {} ({})",
                            b.stored_kind.name(),
                            if b.unit == "m2" { "BSA" } else { "body mass" },
                            b.value,
                            b.unit,
                            b.formula
                        );
                    }
                    if let Some(why) = &suv.not_converted {
                        outln!("    kept as       {} (not SUVbw: {why})", suv.kind.name());
                    }
                    for w in &suv.warnings {
                        outln!("    warning       {w}");
                    }
                }
                Some(ingest::SuvStatus::Unavailable { reason }) => outln!("    SUV           unavailable: {reason}"),
                _ => {}
            }
            for w in &se.warnings {
                outln!("    warning       {w}");
            }
            if let Some(e) = &se.error {
                outln!("    ERROR         {e}");
            }
        }
        for p in &st.pairing.pairs {
            outln!("  PET/CT pair   PT {} + CT {}", p.pet_series_uid, p.ct_series_uid);
        }
        for u in &st.pairing.unpaired {
            outln!("  unpaired      {} {}: {}", u.modality, u.series_uid, u.reason);
        }
    }
    for k in &s.skipped {
        outln!("skipped: {}: {}", k.path.display(), k.reason);
    }
    for e in &s.errors {
        outln!("error: {}", e.error);
    }
    Ok(clean)
}

#[derive(serde::Serialize)]
struct ConvertSidecar<'a> {
    edgeseg_version: &'static str,
    series: &'a ingest::SeriesInfo,
    geometry: &'a edgeseg::volume::Geometry,
    affine_ras: [[f64; 4]; 4],
    nifti: String,
}

fn convert(dir: &Path, out: &Path, strict_geometry: bool) -> Result<bool> {
    let index = index(dir, strict_geometry)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    report_file_errors(&index);
    let mut clean = index.errors.is_empty();
    for s in &index.series {
        let loaded = s.plan().and_then(|p| p.load());
        let sv = match loaded {
            Ok(v) => v,
            Err(e) => {
                eprintln!("edgeseg: skipped {e}");
                clean = false;
                continue;
            }
        };
        // The command line names each dropped copy (a folder the user chose;
        // the daemon's log gives one line per series, without paths).
        for p in &sv.info.duplicates_dropped {
            eprintln!(
                "edgeseg: warning: {}: duplicate SOP instance ignored (another file has its SOP Instance UID)",
                p.display()
            );
        }
        let stem = uid_file_stem(&sv.info.series_uid);
        let path = out.join(format!("{stem}.nii.gz"));
        write_series(&sv, &path, &out.join(format!("{stem}.json")))?;
        outln!("{}", path.display());
    }
    Ok(clean)
}

fn write_series(sv: &SeriesVolume, nii: &Path, json: &Path) -> Result<()> {
    let desc = format!("edgeseg {} {:?}", env!("CARGO_PKG_VERSION"), sv.info.unit);
    nifti::write(nii, &sv.volume, &desc).with_context(|| format!("{}: cannot write", nii.display()))?;
    let side = ConvertSidecar {
        edgeseg_version: edgeseg::version(),
        series: &sv.info,
        geometry: &sv.volume.geometry,
        affine_ras: sv.volume.geometry.affine_ras(),
        nifti: nii.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let text = serde_json::to_vec_pretty(&side)?;
    write_atomic(json, |f| std::io::Write::write_all(f, &text))
        .with_context(|| format!("{}: cannot write", json.display()))
}

fn parse_connectivity(s: &str) -> Result<u32, String> {
    match s {
        "6" | "18" | "26" => s.parse().map_err(|e| format!("{e}")),
        _ => Err(format!("{s}: connectivity must be 6, 18 or 26")),
    }
}

#[allow(clippy::too_many_arguments)]
fn components(
    mask_path: &Path,
    out: &Path,
    connectivity: u32,
    min_ml: Option<f64>,
    stats: Option<&Path>,
    json: bool,
    gpu: bool,
) -> Result<bool> {
    use edgeseg::gpu::{Backend, Connectivity};
    let conn = Connectivity::from_number(connectivity).context("connectivity must be 6, 18 or 26")?;
    let t = Instant::now();
    let mask = nifti::read_f32(mask_path)?;
    let image = match stats {
        Some(p) => {
            let v = nifti::read_f32(p)?;
            if v.geometry.dims != mask.geometry.dims {
                bail!("{}: dims {:?} differ from the mask's {:?}", p.display(), v.geometry.dims, mask.geometry.dims);
            }
            Some(v)
        }
        None => None,
    };
    let read_s = t.elapsed().as_secs_f64();
    let backend = if gpu { Backend::cuda()? } else { Backend::Cpu };
    let binary: Vec<u8> = mask.data.iter().map(|&v| u8::from(v != 0.0)).collect();
    let a = edgeseg::post::components::analyse(
        &backend,
        &binary,
        &mask.geometry,
        conn,
        min_ml,
        image.as_ref().map(|v| v.data.as_slice()),
    )?;
    let (labels, figures) = (a.labels, a.figures);
    let t = Instant::now();
    let desc = format!("edgeseg components {connectivity}-connected");
    if labels.count <= u32::from(u16::MAX) {
        let v = edgeseg::volume::Volume {
            geometry: mask.geometry.clone(),
            data: labels.data.iter().map(|&l| l as u16).collect::<Vec<u16>>(),
        };
        nifti::write(out, &v, &desc)
    } else {
        let v = edgeseg::volume::Volume { geometry: mask.geometry.clone(), data: labels.data };
        nifti::write(out, &v, &desc)
    }
    .with_context(|| format!("{}: cannot write", out.display()))?;
    let write_s = t.elapsed().as_secs_f64();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "count": figures.len(),
                "connectivity": connectivity,
                "backend": backend.name(),
                "min_ml": min_ml,
                "voxel_volume_ml": mask.geometry.voxel_volume_ml(),
                "components": figures,
                "timings_s": {"read": read_s, "label": a.label_seconds, "stats": a.stats_seconds, "write": write_s},
            }))?
        );
    } else {
        outln!("{}: {} components ({}-connected, {})", out.display(), figures.len(), connectivity, backend.name());
    }
    Ok(true)
}

fn add_lesion(study: &Path, at: &str, threshold: &str) -> Result<bool> {
    use edgeseg::post::pet::SeedThreshold;
    let parts: Vec<f64> = at
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--at {at}: expected x,y,z in mm"))?;
    let [x, y, z] = parts[..] else { bail!("--at {at}: expected three numbers x,y,z") };
    let method = match threshold {
        "liver" | "reference" => SeedThreshold::Reference,
        t if t.ends_with('%') => {
            let f: f64 = t.trim_end_matches('%').parse().with_context(|| format!("--threshold {t}"))?;
            SeedThreshold::FractionOfMax(f / 100.0)
        }
        t => SeedThreshold::Suv(t.parse().with_context(|| format!("--threshold {t}: liver, N% or an SUV"))?),
    };
    let e = edgeseg::pipeline::add_lesion(&edgeseg::gpu::Backend::Cpu, study, [x, y, z], method)?;
    outln!(
        "{}: lesion grown from voxel {:?} ({} voxels above SUV {:.2}); lesions {} -> {}",
        study.display(),
        e.seed_ijk,
        e.voxels,
        e.threshold_suv,
        e.lesions_before,
        e.lesions_after
    );
    Ok(true)
}

fn gpu_check(
    seed: u64,
    json: bool,
    write_volume: Option<&Path>,
    write_labels: Option<&Path>,
    no_bench: bool,
    large: bool,
    repeat: usize,
) -> Result<bool> {
    use edgeseg::gpu::check;
    if let Some(path) = write_volume {
        let [nx, ny, nz] =
            check::write_bench_volume(path, seed).with_context(|| format!("writing {}", path.display()))?;
        if let Some(labels) = write_labels {
            check::write_bench_labels(labels, seed).with_context(|| format!("writing {}", labels.display()))?;
        }
        outln!("{nx} {ny} {nz}");
        return Ok(true);
    }
    let mut opts = check::CheckOptions::full(seed);
    opts.large = large;
    opts.repeat = repeat;
    if no_bench {
        opts.bench_dims = None;
    }
    let report = check::run_with(&opts)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", report.to_markdown());
    }
    Ok(report.all_passed())
}

/// Peak resident memory of this process in MiB (Linux VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn load(dir: &Path, strict_geometry: bool) -> Result<bool> {
    let t0 = Instant::now();
    let index = index(dir, strict_geometry)?;
    let t_index = t0.elapsed().as_secs_f64();
    report_file_errors(&index);
    let mut clean = index.errors.is_empty();
    // Timed: scan, plan and load. Not timed: the checksum that proves the data.
    let mut read_seconds = t_index;
    for s in &index.series {
        let t = Instant::now();
        let loaded = s.plan().and_then(|p| p.load());
        let seconds = t.elapsed().as_secs_f64();
        read_seconds += seconds;
        match loaded {
            Ok(v) => {
                let sum: f64 = v.volume.data.iter().map(|&x| f64::from(x)).sum();
                outln!(
                    "{}",
                    serde_json::json!({
                        "series_uid": v.info.series_uid,
                        "modality": v.info.modality,
                        "dims": v.volume.geometry.dims,
                        "seconds": seconds,
                        "checksum": sum,
                        "volume_mib": (v.volume.data.len() * 4) as f64 / (1024.0 * 1024.0),
                    })
                );
            }
            Err(e) => {
                eprintln!("edgeseg: skipped {e}");
                clean = false;
            }
        }
    }
    outln!(
        "{}",
        serde_json::json!({"index_seconds": t_index, "total_seconds": read_seconds, "peak_rss_mib": peak_rss_mib()})
    );
    Ok(clean)
}
