//! Radiomics as a result of a study: model.toml's `[radiomics]` table
//! (parsed strictly, resolved against dataset.json's labels when the package
//! is read), the `ct-radiomics` profile's ROIs and features, the PET/CT
//! profile's optional per-lesion PET features on SUV, the perturbations'
//! ICC(1,1), and their radiomics.csv rows and report.json object.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::params::Params;
use super::perturb::{self, FeatureIcc};
use super::roi::{self, RoiKind, RoiMask, RoiSpec};
use super::{Output, PixelType, extract_typed};
use crate::volume::Volume;

/// model.toml's `[radiomics]` table (unknown keys refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiomicsToml {
    /// dataset.json label names of the tumour (default: every label named
    /// like a lesion: lesion, tumour, tumor, neoplasm, metastasis, cancer, nodule).
    #[serde(default)]
    pub tumour_labels: Option<Vec<String>>,
    /// dataset.json label name of the organ (default: the first label named
    /// lung, pancreas or liver).
    #[serde(default)]
    pub organ_label: Option<String>,
    /// Width of the peri-tumoural ring in mm (default 5).
    #[serde(default)]
    pub peritumoral_mm: Option<f64>,
    /// Clip the ring to the organ as well as to the body (default false).
    #[serde(default)]
    pub peritumoral_within_organ: bool,
    /// `organ` (default) or `organ-minus-tumour`.
    #[serde(default)]
    pub organ_roi: Option<String>,
    /// The body on the CT: HU above this, largest component, holes filled (default −500).
    #[serde(default)]
    pub body_threshold_hu: Option<f64>,
    /// A PyRadiomics parameter file in the package (listed in `[files]`).
    #[serde(default)]
    pub params: Option<String>,
    /// Segmentation perturbations for ICC(1,1) (default 0: none).
    #[serde(default)]
    pub perturb: usize,
    /// ICC(1,1) at or above which a feature is reproducible (default 0.75).
    #[serde(default)]
    pub icc_threshold: Option<f64>,
    /// PET/CT profile: PET features per lesion on SUV (default false).
    #[serde(default)]
    pub pet: bool,
}

/// The radiomics a package asks for, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyPlan {
    /// Tumour labels (value, name).
    pub tumour: Vec<(u8, String)>,
    /// The organ label.
    pub organ: Option<(u8, String)>,
    /// How the ROIs are made.
    pub spec: RoiSpec,
    /// Body threshold (HU).
    pub body_threshold_hu: f64,
    /// The parameter file, parsed (PyRadiomics' defaults when none).
    pub params: Params,
    /// Its name in the package.
    pub params_file: Option<String>,
    /// Perturbations.
    pub perturb: usize,
    /// ICC threshold.
    pub icc_threshold: f64,
    /// PET features (PET/CT profile).
    pub pet: bool,
}

/// Lesion-like label names.
pub fn is_tumour_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["lesion", "tumor", "tumour", "neoplasm", "metasta", "cancer", "nodule"].iter().any(|w| n.contains(w))
}

fn organ_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["lung", "pancrea", "liver"].iter().any(|w| n.contains(w))
}

impl StudyPlan {
    /// Resolves `[radiomics]` against dataset.json's labels (name → value)
    /// for a package of `profile` in `dir`. Err: the reason, in words.
    pub fn resolve(
        t: Option<&RadiomicsToml>,
        profile: crate::pipeline::Profile,
        labels: &[(u8, String)],
        files: &[String],
        dir: &Path,
    ) -> Result<Option<StudyPlan>, String> {
        use crate::pipeline::Profile;
        // No [radiomics] table: no radiomics (a ct-radiomics package then
        // writes the class map alone, as before the table existed).
        let t = match (profile, t) {
            (_, None) => return Ok(None),
            (Profile::CtRadiomics, Some(t)) => t,
            (Profile::PetctTotalTumour, Some(t)) => {
                if !t.pet {
                    return Ok(None);
                }
                let ct_only = [
                    ("tumour_labels", t.tumour_labels.is_some()),
                    ("organ_label", t.organ_label.is_some()),
                    ("peritumoral_mm", t.peritumoral_mm.is_some()),
                    ("peritumoral_within_organ", t.peritumoral_within_organ),
                    ("organ_roi", t.organ_roi.is_some()),
                    ("body_threshold_hu", t.body_threshold_hu.is_some()),
                ];
                if let Some((k, _)) = ct_only.iter().find(|(_, set)| *set) {
                    return Err(format!("[radiomics] {k} belongs to the ct-radiomics profile, not {profile}"));
                }
                t
            }
            (p, Some(_)) => return Err(format!("[radiomics] is not used by the {p} profile")),
        };
        if t.pet && profile != Profile::PetctTotalTumour {
            return Err(format!("[radiomics] pet = true belongs to the petct-total-tumour profile, not {profile}"));
        }
        let by_name = |n: &str| labels.iter().find(|(_, l)| l == n).cloned();
        let tumour: Vec<(u8, String)> = match &t.tumour_labels {
            Some(names) => names
                .iter()
                .map(|n| {
                    by_name(n).ok_or_else(|| format!("[radiomics] tumour_labels: dataset.json has no label {n:?}"))
                })
                .collect::<Result<_, _>>()?,
            None => labels.iter().filter(|(v, n)| *v != 0 && is_tumour_name(n)).cloned().collect(),
        };
        if profile == Profile::CtRadiomics && tumour.is_empty() {
            return Err("no tumour label in dataset.json: name it with [radiomics] tumour_labels".into());
        }
        let organ = match &t.organ_label {
            Some(n) => {
                Some(by_name(n).ok_or_else(|| format!("[radiomics] organ_label: dataset.json has no label {n:?}"))?)
            }
            None => labels.iter().find(|(v, n)| *v != 0 && organ_name(n) && !is_tumour_name(n)).cloned(),
        };
        if let Some(o) = &organ
            && tumour.contains(o)
        {
            return Err(format!("[radiomics] label {:?} cannot be both the organ and a tumour label", o.1));
        }
        if t.peritumoral_within_organ && organ.is_none() {
            return Err("[radiomics] peritumoral_within_organ needs an organ label".into());
        }
        let organ_minus_tumour = match t.organ_roi.as_deref() {
            None | Some("organ") => false,
            Some("organ-minus-tumour") => true,
            Some(o) => {
                return Err(format!("[radiomics] organ_roi {o:?} is neither \"organ\" nor \"organ-minus-tumour\""));
            }
        };
        let peritumoral_mm = t.peritumoral_mm.unwrap_or(5.0);
        if !(peritumoral_mm.is_finite() && peritumoral_mm > 0.0) {
            return Err(format!("[radiomics] peritumoral_mm {peritumoral_mm} is not a positive number of mm"));
        }
        let icc_threshold = t.icc_threshold.unwrap_or(0.75);
        if !(-1.0..=1.0).contains(&icc_threshold) {
            return Err(format!("[radiomics] icc_threshold {icc_threshold} lies outside -1..1"));
        }
        let params = match &t.params {
            None => Params::default(),
            Some(f) => {
                if !files.iter().any(|x| x == f) {
                    return Err(format!("[radiomics] params {f:?} is not listed in [files] (with its sha256)"));
                }
                Params::from_file(&dir.join(f)).map_err(|e| format!("{f}: {e}"))?
            }
        };
        Ok(Some(StudyPlan {
            tumour,
            organ,
            spec: RoiSpec { peritumoral_mm, peritumoral_within_organ: t.peritumoral_within_organ, organ_minus_tumour },
            body_threshold_hu: t.body_threshold_hu.unwrap_or(-500.0),
            params,
            params_file: t.params.clone(),
            perturb: t.perturb,
            icc_threshold,
            pet: t.pet,
        }))
    }
}

/// One ROI's extraction.
#[derive(Debug, Clone)]
pub struct RoiResult {
    /// The ROI's name.
    pub name: String,
    /// Its kind (`pet` rows have none: the lesion on SUV).
    pub kind: &'static str,
    /// The lesion.
    pub lesion: Option<u32>,
    /// The image file (in the study folder).
    pub image: String,
    /// The mask file (in the study folder).
    pub mask: String,
    /// The label in the mask file.
    pub label: u32,
    /// Voxels.
    pub voxels: usize,
    /// The features (PyRadiomics' `execute()` output), or why there are none.
    pub output: Result<Output, String>,
}

/// The ICCs of one kind of ROI.
#[derive(Debug, Clone)]
pub struct KindIcc {
    /// `intratumoral`, `peritumoral`, `organ`, `pet`.
    pub kind: &'static str,
    /// The ROIs that were the subjects.
    pub subjects: Vec<String>,
    /// ROIs left out (a perturbation's extraction failed), with the reason.
    pub excluded: Vec<(String, String)>,
    /// Feature → ICC.
    pub features: Vec<(String, FeatureIcc)>,
}

/// A study's radiomics.
#[derive(Debug, Clone)]
pub struct StudyRadiomics {
    /// The ROI masks written as NIfTI (`rois/<name>.nii.gz`); empty for PET.
    pub rois: Vec<RoiMask>,
    /// Per ROI.
    pub results: Vec<RoiResult>,
    /// The perturbations, when asked for.
    pub perturbations: Vec<perturb::Perturbation>,
    /// ICC per kind, when perturbations were asked for.
    pub iccs: Vec<KindIcc>,
    /// The plan's settings, for report.json.
    pub settings: Json,
    /// The organ's name and whether its ROI leaves the tumour out (CT).
    pub organ: Option<(String, bool)>,
}

/// The mask file a ROI is written to.
pub fn roi_file(name: &str) -> String {
    format!("rois/{name}.nii.gz")
}

fn mask_volume(like: &Volume<f32>, m: &[bool]) -> Volume<f32> {
    Volume { geometry: like.geometry.clone(), data: m.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect() }
}

/// One extraction on the study's image. The image is the one written beside
/// the features (ct.nii.gz, suv.nii.gz: float32 files), so it is float32 to
/// PyRadiomics too (resampledPixelSpacing writes its interpolated image back
/// as float32, not as the integer type a guess from the values would give).
fn run(image: &Volume<f32>, m: &[bool], params: &Params) -> Result<Output, String> {
    extract_typed(image, PixelType::F32, &mask_volume(image, m), params, Some(1)).map_err(|e| e.to_string())
}

/// One ICC subject: its ROI's name and kind, the original extraction and
/// the perturbed masks' extractions.
type Subject = (String, &'static str, Output, perturb::Perturbed);

/// ICC per kind over `subjects`.
fn kind_iccs(kinds: &[&'static str], subjects: Vec<Subject>, threshold: f64) -> Vec<KindIcc> {
    kinds
        .iter()
        .map(|&kind| {
            let mut names = Vec::new();
            let mut excluded = Vec::new();
            let mut table = Vec::new();
            for (name, _, original, perturbed) in subjects.iter().filter(|s| s.1 == kind) {
                match perturbed.iter().cloned().collect::<Result<Vec<Output>, String>>() {
                    Ok(p) => {
                        names.push(name.clone());
                        table.push(std::iter::once(original.clone()).chain(p).collect::<Vec<_>>());
                    }
                    Err(e) => excluded.push((name.clone(), e)),
                }
            }
            KindIcc { kind, subjects: names, excluded, features: perturb::feature_iccs(&table, threshold) }
        })
        .collect()
}

/// The `ct-radiomics` profile's radiomics: lesions from the tumour labels,
/// the ROIs, every ROI's features on the CT, and with perturbations the ICC
/// per kind across lesions (the organ, one ROI, gets null ICCs).
pub fn ct_study(ct: &Volume<f32>, labels: &Volume<u8>, plan: &StudyPlan) -> (Volume<u32>, StudyRadiomics) {
    let g = &ct.geometry;
    let (dims, spacing) = (g.dims, g.spacing);
    let tumour: Vec<bool> = labels.data.iter().map(|l| plan.tumour.iter().any(|t| t.0 == *l)).collect();
    let organ: Option<Vec<bool>> = plan.organ.as_ref().map(|o| labels.data.iter().map(|l| *l == o.0).collect());
    let (lesions, count) = roi::lesions(&tumour, dims);
    let body = roi::body_mask(&ct.data, dims, plan.body_threshold_hu);
    let inp = roi::RoiInputs { dims, spacing, lesions: &lesions, count, organ: organ.as_deref(), body: &body };
    let rois = roi::build(&inp, &plan.spec);
    let results: Vec<RoiResult> = rois
        .iter()
        .map(|r| RoiResult {
            name: r.name.clone(),
            kind: r.kind.as_str(),
            lesion: r.lesion,
            image: "ct.nii.gz".into(),
            mask: roi_file(&r.name),
            label: 1,
            voxels: r.voxels(),
            output: run(ct, &r.mask, &plan.params),
        })
        .collect();
    let perturbations = perturb::plan(plan.perturb);
    let mut iccs = Vec::new();
    if !perturbations.is_empty() {
        let mut subjects = Vec::new();
        for (r, res) in rois.iter().zip(&results) {
            let Ok(original) = &res.output else { continue };
            let perturbed: perturb::Perturbed = match (r.kind, r.lesion) {
                (RoiKind::Intratumoral, Some(_)) => perturbations
                    .iter()
                    .map(|p| run(ct, &perturb::apply(*p, &r.mask, dims, spacing), &plan.params))
                    .collect(),
                (RoiKind::Peritumoral, Some(n)) => perturbations
                    .iter()
                    .map(|p| {
                        let lesion: Vec<bool> = lesions.iter().map(|&l| l == n).collect();
                        let moved = perturb::apply(*p, &lesion, dims, spacing);
                        let t: Vec<bool> =
                            tumour.iter().zip(&lesions).zip(&moved).map(|((t, l), m)| (*t && *l != n) || *m).collect();
                        run(ct, &roi::peritumoral(&moved, &t, &inp, &plan.spec), &plan.params)
                    })
                    .collect(),
                // The organ is one subject (its ICC is undefined) and the
                // "all" ROIs overlap the lesions': neither is a subject.
                (RoiKind::Organ, _) => {
                    subjects.push((r.name.clone(), r.kind.as_str(), original.clone(), Vec::new()));
                    continue;
                }
                _ => continue,
            };
            subjects.push((r.name.clone(), r.kind.as_str(), original.clone(), perturbed));
        }
        iccs = kind_iccs(&RoiKind::ALL.map(RoiKind::as_str), subjects, plan.icc_threshold);
    }
    let settings = json!({
        "tumour_labels": plan.tumour.iter().map(|(v, n)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        "organ_label": plan.organ.as_ref().map(|(v, n)| json!({"name": n, "value": v})),
        "peritumoral_mm": plan.spec.peritumoral_mm,
        "peritumoral_within_organ": plan.spec.peritumoral_within_organ,
        "organ_roi": if plan.spec.organ_minus_tumour { "organ-minus-tumour" } else { "organ" },
        "body_threshold_hu": plan.body_threshold_hu,
        "params": plan.params_file,
        "perturb": plan.perturb,
        "icc_threshold": plan.icc_threshold,
    });
    let instances = Volume { geometry: g.clone(), data: lesions };
    let organ = plan.organ.as_ref().map(|o| (o.1.clone(), plan.spec.organ_minus_tumour));
    (instances, StudyRadiomics { rois, results, perturbations, iccs, settings, organ })
}

/// The PET/CT profile's PET radiomics: each lesion of the instance map on
/// the SUV image (`suv.nii.gz`, mask `lesions.nii.gz`, label n), and with
/// perturbations the ICC across lesions.
pub fn pet_study(suv: &Volume<f32>, lesions: &Volume<u32>, plan: &StudyPlan) -> StudyRadiomics {
    let (dims, spacing) = (suv.geometry.dims, suv.geometry.spacing);
    let count = lesions.data.iter().copied().max().unwrap_or(0);
    let perturbations = perturb::plan(plan.perturb);
    let mut results = Vec::new();
    let mut subjects = Vec::new();
    for n in 1..=count {
        let m: Vec<bool> = lesions.data.iter().map(|&l| l == n).collect();
        let voxels = m.iter().filter(|v| **v).count();
        if voxels == 0 {
            continue;
        }
        let output = run(suv, &m, &plan.params);
        if let (Ok(o), false) = (&output, perturbations.is_empty()) {
            let p =
                perturbations.iter().map(|p| run(suv, &perturb::apply(*p, &m, dims, spacing), &plan.params)).collect();
            subjects.push((format!("lesion-{n}_pet"), "pet", o.clone(), p));
        }
        results.push(RoiResult {
            name: format!("lesion-{n}_pet"),
            kind: "pet",
            lesion: Some(n),
            image: "suv.nii.gz".into(),
            mask: "lesions.nii.gz".into(),
            label: n,
            voxels,
            output,
        });
    }
    let iccs = if perturbations.is_empty() { Vec::new() } else { kind_iccs(&["pet"], subjects, plan.icc_threshold) };
    let settings = json!({
        "params": plan.params_file,
        "perturb": plan.perturb,
        "icc_threshold": plan.icc_threshold,
        "pet": true,
    });
    StudyRadiomics { rois: Vec::new(), results, perturbations, iccs, settings, organ: None }
}

impl StudyRadiomics {
    /// The ROIs seg.dcm and rtstruct.dcm carry besides the lesions and
    /// classes (`export::segments::radiomics_rois`).
    pub fn segments(&self, labels: &Volume<u8>) -> Vec<crate::export::segments::ExtraRoi> {
        let (name, minus) = match &self.organ {
            Some((n, m)) => (Some(n.as_str()), *m),
            None => (None, true),
        };
        crate::export::segments::radiomics_rois(&self.rois, name, labels, minus)
    }

    /// radiomics.csv: PyRadiomics' batch layout with the input columns
    /// Image, Mask, Label, ROI, Kind, Lesion, then the diagnostics and
    /// features; one row per ROI whose extraction succeeded, then per kind
    /// with perturbations an `ICC(1,1)` row and a `reproducible` row.
    pub fn csv(&self) -> String {
        let cols = |image: &str, mask: &str, label: String, roi: &str, kind: &str, lesion: Option<u32>| {
            vec![
                ("Image".to_string(), image.to_string()),
                ("Mask".to_string(), mask.to_string()),
                ("Label".to_string(), label),
                ("ROI".to_string(), roi.to_string()),
                ("Kind".to_string(), kind.to_string()),
                ("Lesion".to_string(), lesion.map(|n| n.to_string()).unwrap_or_default()),
            ]
        };
        let mut rows = Vec::new();
        for r in &self.results {
            if let Ok(out) = &r.output {
                rows.push((cols(&r.image, &r.mask, r.label.to_string(), &r.name, r.kind, r.lesion), out.clone()));
            }
        }
        if rows.is_empty() {
            // No ROI: the input columns alone.
            return "Image,Mask,Label,ROI,Kind,Lesion\n".into();
        }
        for k in &self.iccs {
            let (icc, rep) = perturb::csv_rows(&k.features);
            rows.push((cols("", "", String::new(), "ICC(1,1)", k.kind, None), icc));
            rows.push((cols("", "", String::new(), "reproducible", k.kind, None), rep));
        }
        super::output::to_csv(&rows)
    }

    /// report.json's `radiomics` object.
    pub fn report(&self) -> Json {
        let rois: Vec<Json> = self
            .results
            .iter()
            .map(|r| {
                let (features, error) = match &r.output {
                    Ok(o) => (Json::Object(o.iter().cloned().collect()), Json::Null),
                    Err(e) => (Json::Null, json!(e)),
                };
                json!({
                    "name": r.name, "kind": r.kind, "lesion": r.lesion, "image": r.image, "mask": r.mask,
                    "label": r.label, "voxels": r.voxels, "features": features, "error": error,
                })
            })
            .collect();
        let reproducibility = (!self.perturbations.is_empty()).then(|| {
            json!({
                "perturbations": self.perturbations.iter().enumerate().map(|(i, p)| {
                    let mut v = serde_json::to_value(p).unwrap_or(Json::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("index".into(), json!(i + 1));
                        o.insert("seed".into(), json!(perturb::seed(i + 1)));
                    }
                    v
                }).collect::<Vec<_>>(),
                "raters": self.perturbations.len() + 1,
                "icc": "ICC(1,1)",
                "by_kind": self.iccs.iter().map(|k| (k.kind.to_string(), json!({
                    "subjects": k.subjects,
                    "excluded": k.excluded.iter().map(|(n, e)| json!({"roi": n, "reason": e})).collect::<Vec<_>>(),
                    "features": perturb::iccs_json(&k.features),
                }))).collect::<serde_json::Map<String, Json>>(),
            })
        });
        json!({
            "csv": "radiomics.csv",
            "settings": self.settings,
            "rois": rois,
            "reproducibility": reproducibility,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Profile;

    fn labels() -> Vec<(u8, String)> {
        vec![(0, "background".into()), (1, "lung".into()), (2, "tumour".into())]
    }

    fn table(text: &str) -> Result<RadiomicsToml, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn labels_resolve_from_dataset_names_and_defaults_apply() {
        let t = table("").expect("empty table");
        let p = StudyPlan::resolve(Some(&t), Profile::CtRadiomics, &labels(), &[], Path::new("."))
            .expect("resolves")
            .expect("a plan");
        assert_eq!(p.tumour, vec![(2, "tumour".to_string())]);
        assert_eq!(p.organ, Some((1, "lung".to_string())));
        assert_eq!((p.spec.peritumoral_mm, p.spec.organ_minus_tumour, p.perturb), (5.0, false, 0));
        assert_eq!((p.body_threshold_hu, p.icc_threshold), (-500.0, 0.75));
        // No table: no radiomics.
        assert_eq!(StudyPlan::resolve(None, Profile::CtRadiomics, &labels(), &[], Path::new(".")), Ok(None));
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        assert!(table("perturbations = 3").expect_err("unknown key").contains("perturbations"));
        let cases = [
            ("organ_label = \"liver\"", Profile::CtRadiomics, "no label \"liver\""),
            ("organ_roi = \"both\"", Profile::CtRadiomics, "organ_roi"),
            ("peritumoral_mm = -1.0", Profile::CtRadiomics, "positive"),
            ("params = \"p.yaml\"", Profile::CtRadiomics, "not listed in [files]"),
            ("pet = true", Profile::CtRadiomics, "petct-total-tumour"),
            ("pet = true\norgan_label = \"lung\"", Profile::PetctTotalTumour, "organ_label"),
            ("tumour_labels = [\"lung\"]\norgan_label = \"lung\"", Profile::CtRadiomics, "both"),
            ("", Profile::CtScreening, "not used"),
        ];
        for (text, profile, want) in cases {
            let t = table(text).expect("parses");
            let e = StudyPlan::resolve(Some(&t), profile, &labels(), &[], Path::new(".")).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
