//! Edits of a finished PET/CT study folder by the physician: `edgeseg
//! add-lesion` (a lesion grown from a seed point), `remove-lesion`, and
//! `edits list|undo`.
//!
//! Every edit rewrites the folder atomically (a staging copy, then the swap
//! `write_study` uses): labels, lesions, lesions.csv, mip.png, report.json
//! (the edit appended to `edits[]`: when, what, edgeseg version; never
//! patient data) and the DICOM outputs as new series (seg.dcm, rtstruct.dcm,
//! mip.dcm: new Series/SOP Instance UIDs, the previous SeriesNumber + 1),
//! written from `.edgeseg/dicom-source.json` and the patient attributes of
//! the previous DICOM outputs, so no source DICOM is needed. The files an
//! edit replaces are kept in `.edgeseg/history/NNNN/`; `edits undo` puts
//! them back exactly.
//!
//! Lesion numbers are stable: an edit never renumbers; a new lesion gets the
//! next number never used in the study (one above every number the study
//! had), a removed lesion's number is not reused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::export::dicom_source::DicomSource;
use crate::export::{DicomOptions, STATE_DIR, csv, dicom_refs, mip, nifti};
use crate::gpu::{Backend, Labels};
use crate::pipeline::{PipelineError, swap_into_place};
use crate::post::pet::{self, PetRules};
use crate::volume::Volume;

/// `add-lesion --max-ml` default: a larger growth is refused (a grown lesion
/// of more than this is far more often a leak into an organ, the liver's
/// 458 mL of issue 13, than a lesion). Raise it for bulky disease.
pub const DEFAULT_MAX_ML: f64 = 200.0;
/// The growth stays within this many mm of the seed along each axis.
pub const MAX_RADIUS_MM: f64 = 60.0;
/// The history folder inside [`STATE_DIR`].
const HISTORY: &str = "history";
/// The history entry's list of the folder's files before the edit.
const MANIFEST: &str = "manifest.json";
/// Files an edit never changes: not copied into the history.
const UNCHANGED: [&str; 2] = ["suv.nii.gz", "probabilities.nii.gz"];
/// The DICOM outputs an edit rewrites.
const DICOM_FILES: [&str; 3] = ["seg.dcm", "rtstruct.dcm", "mip.dcm"];

/// Why an edit did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The edit was refused: why, and what to try instead. Nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The folder is not one an edit can work on.
    #[error("{path}: {reason}")]
    NotEditable {
        /// The study folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Recomputing the lesions or writing the folder failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Writing a DICOM output failed.
    #[error(transparent)]
    Dicom(#[from] dicom_refs::DicomExportError),
}

impl From<crate::export::study_dir::FolderError> for EditError {
    fn from(e: crate::export::study_dir::FolderError) -> Self {
        EditError::Pipeline(PipelineError::Io { path: e.path, source: e.source })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EditError {
    let path = path.to_path_buf();
    move |source| EditError::Pipeline(PipelineError::Io { path, source })
}

/// What `add_lesion` did.
#[derive(Debug, Clone, Serialize)]
pub struct LesionEdit {
    /// "add-lesion".
    pub action: &'static str,
    /// The new lesion's number.
    pub lesion: u32,
    /// The seed, LPS mm.
    pub seed_lps_mm: [f64; 3],
    /// The seed voxel.
    pub seed_ijk: [usize; 3],
    /// How the threshold was chosen.
    pub method: pet::SeedThreshold,
    /// The SUV threshold used.
    pub threshold_suv: f64,
    /// Voxels grown.
    pub voxels: u64,
    /// Volume grown, mL.
    pub volume_ml: f64,
    /// Lesions before and after.
    pub lesions_before: usize,
    /// See `lesions_before`.
    pub lesions_after: usize,
    /// What the edit could not do (no DICOM outputs rewritten, and why).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// What `remove_lesion` did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveEdit {
    /// "remove-lesion".
    pub action: &'static str,
    /// The lesion removed.
    pub lesion: u32,
    /// Its voxels (now background).
    pub voxels: u64,
    /// Its volume, mL.
    pub volume_ml: f64,
    /// Lesions before and after.
    pub lesions_before: usize,
    /// See `lesions_before`.
    pub lesions_after: usize,
    /// What the edit could not do (no DICOM outputs rewritten, and why).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// A study folder as an edit reads it.
struct Study {
    dir: PathBuf,
    report: Value,
    rules: PetRules,
    suv: Volume<f32>,
    classes: Volume<u8>,
    lesions: Volume<u32>,
}

impl Study {
    fn load(dir: &Path) -> Result<Self, EditError> {
        let not = |reason: String| EditError::NotEditable { path: dir.to_path_buf(), reason };
        let report_path = dir.join("report.json");
        let text = std::fs::read_to_string(&report_path).map_err(io(&report_path))?;
        let report: Value = serde_json::from_str(&text).map_err(|e| not(format!("report.json cannot be read: {e}")))?;
        let rules: PetRules = serde_json::from_value(report["rules"].clone())
            .map_err(|_| not("the study was not processed with the PET/CT profile (no rules in report.json)".into()))?;
        let read = |name: &str| {
            let p = dir.join(name);
            nifti::read_f32(&p).map_err(|e| not(format!("{name}: {e}")))
        };
        let suv = read("suv.nii.gz")?;
        let labels = read("labels.nii.gz")?;
        let instances = read("lesions.nii.gz")?;
        if labels.geometry.dims != suv.geometry.dims || instances.geometry.dims != suv.geometry.dims {
            return Err(not("labels.nii.gz, lesions.nii.gz and suv.nii.gz are on different grids".into()));
        }
        let classes = Volume { geometry: labels.geometry, data: labels.data.iter().map(|&v| v as u8).collect() };
        let lesions = Volume { geometry: instances.geometry, data: instances.data.iter().map(|&v| v as u32).collect() };
        Ok(Study { dir: dir.to_path_buf(), report, rules, suv, classes, lesions })
    }

    /// The lesion numbers present.
    fn numbers(&self) -> BTreeSet<u32> {
        self.lesions.data.iter().copied().filter(|&n| n != 0).collect()
    }

    /// The report's lesion entry `n`.
    fn lesion(&self, n: u32) -> Option<&Value> {
        self.report["lesions"].as_array()?.iter().find(|l| l["number"].as_u64() == Some(u64::from(n)))
    }

    /// One above every lesion number the study has had (present, or named
    /// by an earlier edit).
    fn next_number(&self) -> u32 {
        let present = self.lesions.data.iter().copied().max().unwrap_or(0);
        let edited = self.report["edits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["lesion"].as_u64())
            .max()
            .unwrap_or(0);
        present.max(u32::try_from(edited).unwrap_or(u32::MAX)).saturating_add(1)
    }
}

/// Adds a lesion grown from a seed point to a finished PET/CT study folder
/// (`edgeseg add-lesion`): the voxels connected to the seed with SUV at or
/// above the threshold, within [`MAX_RADIUS_MM`], become lesion number
/// [`Study::next_number`]. Refused, with what to try, when the seed lies in
/// a lesion, when the growth reaches an existing lesion (it would merge
/// them), exceeds `max_ml` or is smaller than the profile's smallest lesion.
pub fn add_lesion(
    backend: &Backend,
    study_dir: &Path,
    seed_lps_mm: [f64; 3],
    method: pet::SeedThreshold,
    max_ml: f64,
) -> Result<LesionEdit, EditError> {
    let _lock = lock(study_dir)?;
    let mut study = Study::load(study_dir)?;
    let g = study.suv.geometry.clone();
    let c = g.lps_to_voxel(seed_lps_mm);
    let seed = [0, 1, 2].map(|a| c[a].round());
    let [x, y, z] = seed_lps_mm;
    if (0..3).any(|a| seed[a] < 0.0 || seed[a] >= g.dims[a] as f64) {
        return Err(EditError::Refused(format!(
            "the seed ({x}, {y}, {z}) mm (voxel {:.1}, {:.1}, {:.1}) lies outside the PET volume of {} × {} × {} voxels",
            c[0], c[1], c[2], g.dims[0], g.dims[1], g.dims[2]
        )));
    }
    let seed = seed.map(|v| v as usize);
    let dir = study_dir.display();
    let inside = study.lesions.data[g.index(seed[0], seed[1], seed[2])];
    if inside != 0 {
        let what = study
            .lesion(inside)
            .map(|l| {
                format!(
                    " ({:.1} mL, SUVmax {:.1})",
                    l["volume_ml"].as_f64().unwrap_or(f64::NAN),
                    l["suv_max"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .unwrap_or_default();
        return Err(EditError::Refused(format!(
            "the seed ({x}, {y}, {z}) mm lies in lesion {inside}{what}: nothing changed. To redraw that lesion, \
             remove it first (edgeseg remove-lesion {dir} {inside}) and add it again; for another lesion, \
             put the seed outside it"
        )));
    }
    let reference = reference(&study);
    let (grown, thr) = match pet::grow_from_seed(backend, &study.suv, seed, method, reference.as_ref(), MAX_RADIUS_MM) {
        Ok(g) => g,
        Err(crate::gpu::GpuError::Invalid(why)) => {
            let hint = if reference.is_none() && method == pet::SeedThreshold::Reference {
                "give --threshold as a fraction of the local SUVmax (40%) or an SUV"
            } else {
                "try a lower threshold or a seed nearer the lesion's peak"
            };
            return Err(EditError::Refused(format!("{why}: nothing changed; {hint}")));
        }
        Err(e) => return Err(PipelineError::from(e).into()),
    };
    let voxels = grown.iter().filter(|&&m| m != 0).count() as u64;
    let volume_ml = voxels as f64 * g.voxel_volume_ml();
    let touched = touched_lesions(&grown, &study.lesions, study.rules.connectivity);
    let try_higher = format!("try a threshold above SUV {thr:.2} (--threshold SUV or a higher N%) or a seed elsewhere");
    if !touched.is_empty() {
        let list: Vec<String> = touched.iter().map(u32::to_string).collect();
        let (s, them) = if touched.len() == 1 { ("", "it") } else { ("s", "them") };
        return Err(EditError::Refused(format!(
            "the growth from the seed at SUV ≥ {thr:.2} ({volume_ml:.1} mL) reaches lesion{s} {} and would merge \
             {them} into one: nothing changed; {try_higher}",
            list.join(", ")
        )));
    }
    if volume_ml > max_ml {
        let in_liver = study
            .rules
            .liver_label
            .map(|l| grown.iter().zip(&study.classes.data).filter(|&(&m, &c)| m != 0 && c == l).count() as u64)
            .unwrap_or(0);
        let liver = if in_liver * 2 > voxels {
            format!(" ({}% of it in the liver: the seed may sit in normal liver uptake)", in_liver * 100 / voxels)
        } else {
            String::new()
        };
        return Err(EditError::Refused(format!(
            "the growth from the seed at SUV ≥ {thr:.2} is {volume_ml:.1} mL, more than the limit of {max_ml} mL{liver}: \
             nothing changed; {try_higher}, or raise the limit with --max-ml"
        )));
    }
    if volume_ml < study.rules.min_lesion_ml {
        return Err(EditError::Refused(format!(
            "the growth from the seed at SUV ≥ {thr:.2} is {volume_ml:.3} mL, smaller than the profile's smallest \
             lesion ({} mL): nothing changed; try a lower threshold or a seed nearer the lesion's peak",
            study.rules.min_lesion_ml
        )));
    }
    let number = study.next_number();
    let before = study.numbers().len();
    for ((cl, les), &m) in study.classes.data.iter_mut().zip(study.lesions.data.iter_mut()).zip(&grown) {
        if m != 0 {
            *cl = study.rules.lesion_label;
            *les = number;
        }
    }
    let edit = LesionEdit {
        action: "add-lesion",
        lesion: number,
        seed_lps_mm,
        seed_ijk: seed,
        method,
        threshold_suv: thr,
        voxels,
        volume_ml,
        lesions_before: before,
        lesions_after: before + 1,
        notes: Vec::new(),
    };
    let notes = commit(backend, study, to_value(&edit))?;
    Ok(LesionEdit { notes, ..edit })
}

/// Removes lesion `number` from a finished PET/CT study folder (`edgeseg
/// remove-lesion`): its voxels become background; the other lesions keep
/// their numbers.
pub fn remove_lesion(backend: &Backend, study_dir: &Path, number: u32) -> Result<RemoveEdit, EditError> {
    let _lock = lock(study_dir)?;
    let mut study = Study::load(study_dir)?;
    let present = study.numbers();
    if !present.contains(&number) {
        let list: Vec<String> = present.iter().map(u32::to_string).collect();
        let have =
            if list.is_empty() { "it has none".to_string() } else { format!("its lesions are {}", list.join(", ")) };
        return Err(EditError::Refused(format!("the study has no lesion {number}: {have}")));
    }
    let mut voxels = 0u64;
    for (cl, les) in study.classes.data.iter_mut().zip(study.lesions.data.iter_mut()) {
        if *les == number {
            *les = 0;
            *cl = 0;
            voxels += 1;
        }
    }
    let edit = RemoveEdit {
        action: "remove-lesion",
        lesion: number,
        voxels,
        volume_ml: voxels as f64 * study.suv.geometry.voxel_volume_ml(),
        lesions_before: present.len(),
        lesions_after: present.len() - 1,
        notes: Vec::new(),
    };
    let notes = commit(backend, study, to_value(&edit))?;
    Ok(RemoveEdit { notes, ..edit })
}

/// The reference region (liver, else spleen) of the study as it stands.
fn reference(study: &Study) -> Option<pet::Reference> {
    let r = &study.rules;
    let region = |label: Option<u8>, name: &str, coef| {
        label.and_then(|l| {
            pet::reference_region(
                &study.classes,
                &study.suv,
                l,
                r.reference_erosion_voxels,
                &study.lesions.data,
                name,
                coef,
            )
        })
    };
    region(r.liver_label, "liver", r.liver_threshold).or_else(|| region(r.spleen_label, "spleen", r.spleen_threshold))
}

/// The lesions of `lesions` that the grown mask overlaps or touches (a
/// neighbour under the profile's connectivity: 6, 18 or 26).
fn touched_lesions(grown: &[u8], lesions: &Volume<u32>, connectivity: u32) -> BTreeSet<u32> {
    let [nx, ny, nz] = lesions.geometry.dims;
    let mut out = BTreeSet::new();
    for (i, _) in grown.iter().enumerate().filter(|(_, m)| **m != 0) {
        let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
        for dz in -1i64..=1 {
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let d = dx.abs() + dy.abs() + dz.abs();
                    if (connectivity == 6 && d > 1) || (connectivity == 18 && d > 2) {
                        continue;
                    }
                    let (a, b, c) = (x as i64 + dx, y as i64 + dy, z as i64 + dz);
                    if a < 0 || b < 0 || c < 0 || a >= nx as i64 || b >= ny as i64 || c >= nz as i64 {
                        continue;
                    }
                    let n = lesions.data[a as usize + nx * (b as usize + ny * c as usize)];
                    if n != 0 {
                        out.insert(n);
                    }
                }
            }
        }
    }
    out
}

/// Recomputes the lesion table (numbers as they are) and the patient
/// figures, and rewrites the folder with the edit recorded and the replaced
/// files kept in the history. Returns what it could not do.
fn commit(backend: &Backend, study: Study, mut record: Value) -> Result<Vec<String>, EditError> {
    let Study { dir, mut report, rules, suv, classes, lesions } = study;
    let count = lesions.data.iter().copied().max().unwrap_or(0);
    let labels = Labels { data: lesions.data.clone(), count };
    let table: Vec<pet::Lesion> = pet::lesion_table(backend, &labels, &suv, &rules)
        .map_err(PipelineError::from)?
        .into_iter()
        .filter(|l| l.voxels > 0)
        .collect();
    let study = Study { dir: dir.clone(), report: Value::Null, rules: rules.clone(), suv, classes, lesions };
    let reference = reference(&study);
    let Study { suv, classes, lesions, .. } = study;
    // Patient figures as `total_tumour` computes them; body and removal counts
    // describe the model's output and stay.
    let lowest = table.iter().min_by(|a, b| a.suv_mean.total_cmp(&b.suv_mean));
    let total_tlg: f64 = table.iter().map(|l| l.tlg).sum();
    let mut patient = report["patient"].as_object().cloned().unwrap_or_default();
    for (k, v) in [
        ("lesion_count", json!(table.len())),
        ("total_tumour_volume_ml", json!(table.iter().map(|l| l.volume_ml).sum::<f64>())),
        ("total_lesion_uptake", json!(total_tlg)),
        ("total_tlg_g", json!(total_tlg)),
        ("lowest_lesion_suv_mean", json!(lowest.map(|l| l.suv_mean))),
        ("lowest_suv_mean_lesion", json!(lowest.map(|l| l.number))),
        ("highest_suv_max", json!(table.iter().map(|l| l.suv_max).max_by(f64::total_cmp))),
        ("reference", to_value(&reference)),
    ] {
        patient.insert(k.into(), v);
    }
    if let Some(o) = record.as_object_mut() {
        o.insert("when".into(), json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        o.insert("edgeseg_version".into(), json!(crate::version()));
    }
    let clinical_use = report["model"]["clinical_use"].as_bool().unwrap_or(false);

    let (out, stem, staging) = staging_for(&dir)?;
    let mut kept_notes = Vec::new();
    let result = (|| {
        link_tree(&dir, &staging, &[])?;
        let entry = snapshot(&dir, &staging, &record)?;
        let write_ = |name: &str| {
            let p = staging.join(name);
            // Never write through a hard link into the study's own file.
            let _ = std::fs::remove_file(&p);
            p
        };
        let desc = "edgeseg edit";
        let p = write_("labels.nii.gz");
        nifti::write(&p, &classes, desc).map_err(io(&p))?;
        let p = write_("lesions.nii.gz");
        nifti::write_instances(&p, &lesions, desc).map_err(io(&p))?;
        let p = write_("lesions.csv");
        csv::write(&p, &table).map_err(io(&p))?;
        let p = write_("mip.png");
        mip::write(&p, &mip::coronal_marked(&suv, Some(&lesions), clinical_use)).map_err(io(&p))?;
        let mut notes: Vec<String> = Vec::new();
        for name in DICOM_FILES {
            write_(name);
        }
        let dicom = match DicomSource::read(&dir)?.map(|source| (source, previous_patient(&dir))) {
            Some((source, Ok(patient))) => {
                // The kind the study was written with (its configuration's).
                let options =
                    DicomOptions { clinical_use, series_numbers: next_series_numbers(&dir), seg_kind: source.seg_kind };
                crate::export::write_dicom_with(
                    &staging,
                    &source.into_inputs(patient),
                    &classes,
                    Some(&lesions),
                    &options,
                )?
            }
            Some((_, Err(e))) => {
                notes.push(format!("seg.dcm, rtstruct.dcm and mip.dcm not written: {e}"));
                Vec::new()
            }
            None => {
                notes.push("seg.dcm, rtstruct.dcm and mip.dcm not written: the folder keeps no DICOM references (it predates them, or its reference series had no FrameOfReferenceUID); process the study again for them".into());
                Vec::new()
            }
        };
        report["lesions"] = to_value(&table);
        report["patient"] = Value::Object(patient);
        report["dicom_outputs"] = json!(dicom);
        if let Some(o) = record.as_object_mut() {
            o.insert("history_entry".into(), json!(entry));
            if !notes.is_empty() {
                o.insert("notes".into(), json!(notes));
            }
        }
        let edits = report.as_object_mut().map(|o| o.entry("edits").or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = edits {
            list.push(record.clone());
        }
        kept_notes = notes;
        write_report(&staging, &report)
    })();
    finish(&out, &stem, &staging, result)?;
    Ok(kept_notes)
}

/// Holds the study folder's lock for one edit: a second edit of the same
/// folder meanwhile is refused rather than losing one of the two (an
/// advisory lock on the folder itself, released when the edit ends, crash
/// included).
fn lock(dir: &Path) -> Result<std::fs::File, EditError> {
    let f = std::fs::File::open(dir).map_err(io(dir))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(EditError::Refused(format!(
            "{}: another edit of this study is running; try again when it has finished",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(dir)(e)),
    }
}

/// The output folder, the study folder's name and a fresh staging folder.
fn staging_for(dir: &Path) -> Result<(PathBuf, String, PathBuf), EditError> {
    let out = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let stem = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if stem.is_empty() || !dir.is_dir() {
        return Err(EditError::NotEditable { path: dir.to_path_buf(), reason: "not a study folder".into() });
    }
    let staging = out.join(format!(".staging-{stem}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    crate::export::create_output_dir(&staging).map_err(io(&staging))?;
    Ok((out, stem, staging))
}

/// Swaps a complete staging folder into place, or removes it after a failure.
fn finish(out: &Path, stem: &str, staging: &Path, result: Result<(), EditError>) -> Result<(), EditError> {
    if let Err(e) = result.and_then(|()| swap_into_place(out, stem, staging).map_err(EditError::from)) {
        let _ = std::fs::remove_dir_all(staging);
        return Err(e);
    }
    Ok(())
}

fn write_report(dir: &Path, report: &Value) -> Result<(), EditError> {
    let p = dir.join("report.json");
    let _ = std::fs::remove_file(&p);
    let text = serde_json::to_vec_pretty(report).map_err(|e| io(&p)(e.into()))?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))
}

/// Hard-links (or copies, across file systems) every file of `from` into
/// `to`, folders recursively, leaving out the relative paths in `skip`.
fn link_tree(from: &Path, to: &Path, skip: &[PathBuf]) -> Result<(), EditError> {
    fn walk(root: &Path, from: &Path, to: &Path, skip: &[PathBuf]) -> Result<(), EditError> {
        for e in std::fs::read_dir(from).map_err(io(from))? {
            let e = e.map_err(io(from))?;
            let src = e.path();
            let rel = src.strip_prefix(root).unwrap_or(&src).to_path_buf();
            if skip.contains(&rel) {
                continue;
            }
            let dst = to.join(e.file_name());
            if e.file_type().map_err(io(&src))?.is_dir() {
                crate::export::create_output_dir(&dst).map_err(io(&dst))?;
                walk(root, &src, &dst, skip)?;
            } else if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(io(&src))?;
            }
        }
        Ok(())
    }
    walk(from, from, to, skip)
}

/// The history entries of a study folder, oldest first.
fn history_entries(dir: &Path) -> Result<Vec<(u32, PathBuf)>, EditError> {
    let h = dir.join(STATE_DIR).join(HISTORY);
    let mut v = Vec::new();
    match std::fs::read_dir(&h) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(io(&h))?;
                if let Ok(n) = e.file_name().to_string_lossy().parse::<u32>() {
                    v.push((n, e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&h)(e)),
    }
    v.sort();
    Ok(v)
}

/// Keeps, in the staging folder's history, the study's files the edit may
/// replace and the list of all its files; returns the entry's number.
fn snapshot(dir: &Path, staging: &Path, record: &Value) -> Result<u32, EditError> {
    let n = history_entries(dir)?.last().map_or(1, |(n, _)| n + 1);
    let entry = staging.join(STATE_DIR).join(HISTORY).join(format!("{n:04}"));
    crate::export::create_output_dir(&entry).map_err(io(&entry))?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if !e.file_type().map_err(io(&e.path()))?.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if !UNCHANGED.contains(&name.as_str()) {
            let dst = entry.join(&name);
            if std::fs::hard_link(e.path(), &dst).is_err() {
                std::fs::copy(e.path(), &dst).map_err(io(&e.path()))?;
            }
        }
        files.push(name);
    }
    files.sort();
    let p = entry.join(MANIFEST);
    let manifest =
        json!({"files": files, "action": record["action"], "lesion": record["lesion"], "when": record["when"]});
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| io(&p)(e.into()))?;
    crate::export::write_atomic(&p, |f| std::io::Write::write_all(f, &text)).map_err(io(&p))?;
    Ok(n)
}

/// The patient and study attributes of the folder's previous DICOM outputs.
fn previous_patient(dir: &Path) -> Result<dicom_refs::PatientStudy, EditError> {
    let mut last = None;
    for name in DICOM_FILES {
        let p = dir.join(name);
        if p.exists() {
            match dicom_refs::PatientStudy::read(&p) {
                Ok(ps) => return Ok(ps),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => EditError::NotEditable {
            path: dir.to_path_buf(),
            reason: "no seg.dcm, rtstruct.dcm or mip.dcm to take the patient and study attributes from".into(),
        },
    })
}

/// SeriesNumber of seg.dcm, rtstruct.dcm and mip.dcm for the next version:
/// the previous file's + 1 (`process`'s number + 1 where there is none).
fn next_series_numbers(dir: &Path) -> [u32; 3] {
    let defaults = DicomOptions::default().series_numbers;
    [0, 1, 2].map(|i| {
        let p = dir.join(DICOM_FILES[i]);
        series_number(&p).unwrap_or(defaults[i]).saturating_add(1)
    })
}

/// A DICOM file's SeriesNumber.
fn series_number(path: &Path) -> Option<u32> {
    let opts = dicom_object::OpenFileOptions::new().read_until(dicom_dictionary_std::tags::PIXEL_DATA);
    let (obj, _) = crate::ingest::part10::open(opts, path).ok()?;
    let e = obj.get(dicom_dictionary_std::tags::SERIES_NUMBER)?;
    e.to_str().ok()?.trim().parse().ok()
}

/// One edit as `edits list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EditEntry {
    /// 1-based position in report.json's `edits[]`.
    pub index: usize,
    /// The record.
    pub record: Value,
    /// Whether `edits undo` can take it back (it is among the last edits
    /// with a history entry).
    pub undoable: bool,
}

/// report.json's edits of a study folder, oldest first.
pub fn list_edits(study_dir: &Path) -> Result<Vec<EditEntry>, EditError> {
    let p = study_dir.join("report.json");
    let text = std::fs::read_to_string(&p).map_err(io(&p))?;
    let report: Value = serde_json::from_str(&text)
        .map_err(|e| EditError::NotEditable { path: study_dir.to_path_buf(), reason: format!("report.json: {e}") })?;
    let edits = report["edits"].as_array().cloned().unwrap_or_default();
    let history = history_entries(study_dir)?.len();
    let first_undoable = edits.len().saturating_sub(history);
    Ok(edits
        .into_iter()
        .enumerate()
        .map(|(i, record)| EditEntry { index: i + 1, record, undoable: i >= first_undoable })
        .collect())
}

/// What `undo` did.
#[derive(Debug, Clone, Serialize)]
pub struct Undone {
    /// The history entry restored.
    pub entry: u32,
    /// Its action ("add-lesion", "remove-lesion").
    pub action: Value,
    /// The lesion it named.
    pub lesion: Value,
}

/// Takes the last edit back (`edgeseg edits STUDY undo`): the files it
/// replaced come back from its history entry exactly, the files it created
/// go, and the entry is dropped. report.json is the previous one, byte for
/// byte, so the undone edit leaves no trace in it.
pub fn undo(study_dir: &Path) -> Result<Undone, EditError> {
    let _lock = lock(study_dir)?;
    let entries = history_entries(study_dir)?;
    let Some((n, entry)) = entries.last().cloned() else {
        return Err(EditError::Refused(format!("{}: no edit to undo", study_dir.display())));
    };
    let p = entry.join(MANIFEST);
    let text = std::fs::read_to_string(&p).map_err(io(&p))?;
    let manifest: Value = serde_json::from_str(&text).map_err(|e| io(&p)(std::io::Error::other(e.to_string())))?;
    let before: BTreeSet<String> =
        manifest["files"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let rel = Path::new(STATE_DIR).join(HISTORY).join(format!("{n:04}"));
    let (out, stem, staging) = staging_for(study_dir)?;
    let result = (|| {
        link_tree(study_dir, &staging, &[rel])?;
        // The last entry gone: no empty history folder left behind (fails, as meant, when others remain).
        let _ = std::fs::remove_dir(staging.join(STATE_DIR).join(HISTORY));
        let _ = std::fs::remove_dir(staging.join(STATE_DIR));
        // The folder's files as they were: kept ones unchanged, replaced ones back, new ones gone.
        for e in std::fs::read_dir(&staging).map_err(io(&staging))? {
            let e = e.map_err(io(&staging))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().map_err(io(&e.path()))?.is_file() && !before.contains(&name) {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        for name in &before {
            let kept = entry.join(name);
            if kept.exists() {
                let dst = staging.join(name);
                let _ = std::fs::remove_file(&dst);
                if std::fs::hard_link(&kept, &dst).is_err() {
                    std::fs::copy(&kept, &dst).map_err(io(&kept))?;
                }
            } else if !staging.join(name).exists() {
                return Err(EditError::NotEditable {
                    path: study_dir.to_path_buf(),
                    reason: format!("{name} is missing and its history entry {n:04} does not hold it"),
                });
            }
        }
        Ok(())
    })();
    finish(&out, &stem, &staging, result)?;
    Ok(Undone { entry: n, action: manifest["action"].clone(), lesion: manifest["lesion"].clone() })
}

/// A serialisable value as JSON (null if it cannot be serialised).
fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn geometry(dims: [usize; 3]) -> Geometry {
        Geometry {
            dims,
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn a_second_edit_of_one_study_is_refused_meanwhile() {
        let d = tempfile::tempdir().expect("tempdir");
        let held = lock(d.path()).expect("first");
        let Err(EditError::Refused(why)) = lock(d.path()) else { panic!("the second edit must be refused") };
        assert!(why.contains("another edit of this study is running"), "{why}");
        drop(held);
        assert!(lock(d.path()).is_ok(), "released when the edit ends");
    }

    #[test]
    fn touching_follows_the_connectivity() {
        let g = geometry([5, 5, 5]);
        let mut lesions = Volume::filled(g.clone(), 0u32);
        lesions.data[g.index(2, 2, 2)] = 7;
        let mut grown = vec![0u8; 125];
        grown[g.index(3, 3, 3)] = 1; // a corner neighbour
        assert_eq!(touched_lesions(&grown, &lesions, 26), BTreeSet::from([7]));
        assert!(touched_lesions(&grown, &lesions, 18).is_empty());
        assert!(touched_lesions(&grown, &lesions, 6).is_empty());
        grown[g.index(3, 3, 3)] = 0;
        grown[g.index(2, 2, 3)] = 1; // a face neighbour
        assert_eq!(touched_lesions(&grown, &lesions, 6), BTreeSet::from([7]));
        grown[g.index(2, 2, 3)] = 0;
        grown[g.index(0, 0, 0)] = 1;
        assert!(touched_lesions(&grown, &lesions, 26).is_empty());
    }
}
