//! Model packages: a folder with nnU-Net's own `plans.json` and
//! `dataset.json` (unchanged), `model.toml` (name, version, configuration,
//! profile, which DICOM modality feeds which channel, sha256 of each file) and
//! `fold_K.onnx` per fold. Loading checks every checksum before anything runs.
//! A package with `network = "simulated"` has `fold_K.sim.toml` files instead:
//! a test device ([`super::simulated`]), refused with `clinical_use = true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors of a model package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file did not parse.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A checksum differs from model.toml's.
    #[error("{path}: sha256 {found} differs from model.toml's {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Its sha256.
        found: String,
        /// model.toml's.
        expected: String,
    },
    /// Something the package needs is missing or inconsistent.
    #[error("model {dir}: {reason}")]
    Invalid {
        /// The package folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One input channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Position in the network input.
    pub index: usize,
    /// dataset.json's channel name ("CT" selects CT normalisation there).
    pub name: String,
    /// DICOM modality that feeds it (PT, CT, MR ...).
    pub modality: String,
}

/// model.toml's [inference] table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Mirroring axes for test-time augmentation (the checkpoint's
    /// `inference_allowed_mirroring_axes`, in nnU-Net axis order).
    #[serde(default)]
    pub allowed_mirroring_axes: Vec<usize>,
}

/// What the folds' files hold: the format of the networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkFormat {
    /// `fold_K.onnx`, run by ONNX Runtime.
    #[default]
    Onnx,
    /// `fold_K.sim.toml`: a fixed, deterministic rule instead of a trained
    /// network, so that tests about queueing, crashes and outputs run without
    /// ONNX Runtime. A test device, never a model.
    Simulated,
}

impl NetworkFormat {
    /// The file name of fold `fold`'s network.
    pub fn fold_file(self, fold: u32) -> String {
        match self {
            NetworkFormat::Onnx => format!("fold_{fold}.onnx"),
            NetworkFormat::Simulated => format!("fold_{fold}.sim.toml"),
        }
    }
}

/// model.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelToml {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// nnU-Net configuration name (3d_fullres ...).
    pub configuration: String,
    /// Trainer class name.
    #[serde(default)]
    pub trainer: Option<String>,
    /// Plans identifier.
    #[serde(default)]
    pub plans_identifier: Option<String>,
    /// Task profile, parsed here once: `petct-total-tumour`, `ct-screening`,
    /// `ct-radiomics` ([`crate::pipeline::Profile`]); another is a package error.
    pub profile: crate::pipeline::Profile,
    /// Folds in the package.
    pub folds: Vec<u32>,
    /// ONNX opset.
    #[serde(default)]
    pub onnx_opset: Option<u32>,
    /// Cleared for clinical use by its owner.
    #[serde(default)]
    pub clinical_use: bool,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
    /// Input channels.
    pub channels: Vec<Channel>,
    /// Inference settings.
    pub inference: InferenceSettings,
    /// The folds' network format (`onnx` when absent).
    #[serde(default)]
    pub network: NetworkFormat,
    /// sha256 per file name.
    pub files: BTreeMap<String, String>,
    /// Radiomics (`ct-radiomics` profile; PET features for `petct-total-tumour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radiomics: Option<crate::radiomics::study::RadiomicsToml>,
}

/// Intensity statistics of one channel's foreground (plans.json).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IntensityProperties {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// 0.5th percentile.
    pub percentile_00_5: f64,
    /// 99.5th percentile.
    pub percentile_99_5: f64,
}

/// Resampling function arguments (plans.json).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResamplingKwargs {
    /// Spline order in-plane (or everywhere without separate z).
    pub order: usize,
    /// Order along the low-resolution axis with separate z.
    #[serde(default)]
    pub order_z: usize,
    /// Force (true/false) or decide (null) separate-z resampling.
    #[serde(default)]
    pub force_separate_z: Option<bool>,
}

/// One configuration of plans.json (the fields inference needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Configuration {
    /// Patch size, in nnU-Net axis order.
    pub patch_size: Vec<usize>,
    /// Target spacing.
    pub spacing: Vec<f64>,
    /// Normalisation class name per channel.
    pub normalization_schemes: Vec<String>,
    /// Normalise within the non-zero mask, per channel.
    pub use_mask_for_norm: Vec<bool>,
    /// Name of the data resampling function.
    #[serde(default)]
    pub resampling_fn_data: Option<String>,
    /// Its arguments.
    pub resampling_fn_data_kwargs: ResamplingKwargs,
    /// Name of the logits resampling function.
    #[serde(default)]
    pub resampling_fn_probabilities: Option<String>,
    /// Its arguments.
    pub resampling_fn_probabilities_kwargs: ResamplingKwargs,
}

/// plans.json (the fields inference needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Plans {
    /// Axis permutation applied before preprocessing.
    pub transpose_forward: Vec<usize>,
    /// Its inverse.
    pub transpose_backward: Vec<usize>,
    /// Configurations by name.
    pub configurations: BTreeMap<String, serde_json::Value>,
    /// Foreground intensity statistics per channel index (as a string).
    pub foreground_intensity_properties_per_channel: BTreeMap<String, IntensityProperties>,
}

/// dataset.json (the fields inference needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dataset {
    /// Channel index (string) → name.
    pub channel_names: BTreeMap<String, String>,
    /// Label name → value (or region list).
    pub labels: BTreeMap<String, serde_json::Value>,
    /// File ending of images (".nii.gz").
    #[serde(default)]
    pub file_ending: Option<String>,
}

/// A loaded, verified model package.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    /// The folder.
    pub dir: PathBuf,
    /// model.toml.
    pub meta: ModelToml,
    /// plans.json.
    pub plans: Plans,
    /// The configuration named in model.toml.
    pub config: Configuration,
    /// dataset.json.
    pub dataset: Dataset,
    /// sha256 of the whole package (of model.toml's file list, in order).
    pub sha256: String,
    /// The radiomics the package asks for (model.toml `[radiomics]`, resolved).
    pub radiomics: Option<crate::radiomics::study::StudyPlan>,
}

fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_text(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

impl ModelPackage {
    /// Loads and verifies a package folder.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Invalid { dir: dir.to_path_buf(), reason };
        let toml_path = dir.join("model.toml");
        let meta: ModelToml = toml::from_str(&read_text(&toml_path)?)
            .map_err(|e| ModelError::Parse { path: toml_path.clone(), reason: e.to_string() })?;
        for name in ["plans.json", "dataset.json"] {
            if !meta.files.contains_key(name) {
                return Err(invalid(format!("model.toml [files] lacks {name}")));
            }
        }
        if meta.network == NetworkFormat::Simulated && meta.clinical_use {
            return Err(invalid(
                "network = \"simulated\" is a test device, not a model: refused with clinical_use = true".into(),
            ));
        }
        for f in &meta.folds {
            let name = meta.network.fold_file(*f);
            if !meta.files.contains_key(&name) {
                return Err(invalid(format!("model.toml [files] lacks {name}")));
            }
        }
        let mut whole = Sha256::new();
        for (name, expected) in &meta.files {
            if name.contains('/') || name.contains("..") {
                return Err(invalid(format!("file name {name:?} must be a plain name inside the package")));
            }
            let path = dir.join(name);
            let found = sha256_file(&path)?;
            if !found.eq_ignore_ascii_case(expected) {
                return Err(ModelError::Checksum { path, found, expected: expected.clone() });
            }
            whole.update(name.as_bytes());
            whole.update(found.as_bytes());
        }
        let plans_path = dir.join("plans.json");
        let plans: Plans = serde_json::from_str(&read_text(&plans_path)?)
            .map_err(|e| ModelError::Parse { path: plans_path.clone(), reason: e.to_string() })?;
        let dataset_path = dir.join("dataset.json");
        let dataset: Dataset = serde_json::from_str(&read_text(&dataset_path)?)
            .map_err(|e| ModelError::Parse { path: dataset_path, reason: e.to_string() })?;
        let config = resolve_configuration(&plans, &meta.configuration)
            .map_err(|reason| ModelError::Parse { path: plans_path, reason })?;
        let n = meta.channels.len();
        if config.normalization_schemes.len() != n || config.use_mask_for_norm.len() != n {
            return Err(invalid(format!(
                "{n} channels in model.toml, {} normalisation schemes in plans.json",
                config.normalization_schemes.len()
            )));
        }
        if config.patch_size.len() != 3 || config.spacing.len() != 3 {
            return Err(invalid("only 3D configurations are supported".into()));
        }
        let labels: Vec<(u8, String)> =
            dataset.labels.iter().filter_map(|(n, v)| Some((u8::try_from(v.as_u64()?).ok()?, n.clone()))).collect();
        let files: Vec<String> = meta.files.keys().cloned().collect();
        let radiomics =
            crate::radiomics::study::StudyPlan::resolve(meta.radiomics.as_ref(), meta.profile, &labels, &files, dir)
                .map_err(|reason| ModelError::Parse { path: toml_path.clone(), reason })?;
        let sha256 = hex(&whole.finalize());
        // One line per read: the daemon reads its package once per start.
        tracing::info!(
            "model package {} read, {} files checked against their sha256s",
            dir.display(),
            meta.files.len()
        );
        Ok(Self { dir: dir.to_path_buf(), meta, plans, config, dataset, sha256, radiomics })
    }

    /// Number of output classes (background included).
    pub fn num_classes(&self) -> usize {
        self.dataset.labels.len()
    }

    /// Path of a fold's network (`fold_K.onnx`, or `fold_K.sim.toml` for a
    /// simulated package).
    pub fn fold_path(&self, fold: u32) -> PathBuf {
        self.dir.join(self.meta.network.fold_file(fold))
    }
}

/// A configuration with its `inherits_from` chain resolved.
fn resolve_configuration(plans: &Plans, name: &str) -> Result<Configuration, String> {
    let mut chain = Vec::new();
    let mut cur = name.to_string();
    loop {
        let c = plans.configurations.get(&cur).ok_or_else(|| format!("no configuration {cur:?}"))?;
        chain.push(c.clone());
        match c.get("inherits_from").and_then(|v| v.as_str()) {
            Some(parent) if chain.len() < 8 => cur = parent.to_string(),
            Some(_) => return Err("inherits_from chain too long".into()),
            None => break,
        }
    }
    let mut merged = serde_json::Map::new();
    for c in chain.iter().rev() {
        if let Some(o) = c.as_object() {
            for (k, v) in o {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| format!("configuration {name:?}: {e}"))
}
