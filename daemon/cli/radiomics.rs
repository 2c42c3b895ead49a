//! `edgeseg radiomics`: PyRadiomics-exact features of one image and mask, or
//! of every Image,Mask pair of a batch CSV (pyradiomics' batch layout).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeseg::export::nifti;
use edgeseg::radiomics::{self as rad, output, perturb};

use crate::progress::Progress;

/// Radiomics features exact to PyRadiomics (its parameter files and
/// output names) of one image and mask, or of every Image,Mask pair of a
/// batch CSV (pyradiomics' batch layout; output CSV).
#[derive(clap::Args)]
pub struct Args {
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
    /// Re-extract every feature under N segmentation perturbations (dilation,
    /// erosion, translations, rotations of the mask; fixed seeds) and report
    /// each feature's ICC(1,1) over the cases and a reproducible flag.
    #[arg(long, value_name = "N", default_value_t = 0)]
    perturb: usize,
    /// ICC(1,1) at or above which a feature is reproducible (with --perturb).
    #[arg(long, value_name = "ICC", default_value_t = 0.75, requires = "perturb")]
    icc_threshold: f64,
}

/// The extractions of one case: the original, then one per perturbation of
/// its ROI (the mask's voxels of the label, moved on the mask's own grid).
fn extract_case(
    (im, ma, scan): &(TypedImage, nifti::Stored, rad::MaskScan),
    params: &rad::params::Params,
    label: Option<i64>,
    perturb: &[perturb::Perturbation],
) -> Result<(rad::Output, perturb::Perturbed)> {
    let out = im.extract(rad::MaskVoxels::Scanned(ma, scan), params, label)?;
    if perturb.is_empty() {
        return Ok((out, Vec::new()));
    }
    let l = label.unwrap_or(params.settings.label) as f32;
    let ma = ma.to_f32();
    let roi: Vec<bool> = ma.data.iter().map(|&v| v == l).collect();
    let g = &ma.geometry;
    let moved = perturb
        .iter()
        .map(|p| {
            let m = perturb::apply(*p, &roi, g.dims, g.spacing);
            let v = edgeseg::volume::Volume {
                geometry: g.clone(),
                data: m.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect(),
            };
            im.extract(rad::MaskVoxels::F32(&v), params, Some(1)).map_err(|e| e.to_string())
        })
        .collect();
    Ok((out, moved))
}

/// The reproducibility block: the ICC(1,1) of each feature over the cases
/// whose every perturbation was extracted.
fn reproducibility(
    cases: &[(String, rad::Output, perturb::Perturbed)],
    plan: &[perturb::Perturbation],
    threshold: f64,
) -> (Vec<(String, perturb::FeatureIcc)>, serde_json::Value) {
    let mut table = Vec::new();
    let mut subjects = Vec::new();
    let mut excluded = Vec::new();
    for (name, out, moved) in cases {
        match moved.iter().cloned().collect::<Result<Vec<_>, String>>() {
            Ok(m) => {
                subjects.push(name.clone());
                table.push(std::iter::once(out.clone()).chain(m).collect::<Vec<_>>());
            }
            Err(e) => excluded.push(serde_json::json!({"case": name, "reason": e})),
        }
    }
    let iccs = perturb::feature_iccs(&table, threshold);
    let json = serde_json::json!({
        "perturbations": plan.iter().enumerate().map(|(i, p)| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("index".into(), serde_json::json!(i + 1));
                o.insert("seed".into(), serde_json::json!(perturb::seed(i + 1)));
            }
            v
        }).collect::<Vec<_>>(),
        "raters": plan.len() + 1,
        "icc": "ICC(1,1)",
        "icc_threshold": threshold,
        "subjects": subjects,
        "excluded": excluded,
        "features": perturb::iccs_json(&iccs),
    });
    (iccs, json)
}

/// The ICC(1,1) and reproducible rows of a CSV: the statistic's name in the
/// first input column, the other input columns empty.
fn icc_csv_rows(
    columns: &[String],
    iccs: &[(String, perturb::FeatureIcc)],
) -> Vec<(Vec<(String, String)>, rad::Output)> {
    let (icc, rep) = perturb::csv_rows(iccs);
    [("ICC(1,1)", icc), ("reproducible", rep)]
        .into_iter()
        .map(|(what, out)| {
            let cols = columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), if i == 0 { what.to_string() } else { String::new() }))
                .collect();
            (cols, out)
        })
        .collect()
}

/// An image as PyRadiomics sees it: the file's voxels in their stored type
/// and the voxel type SimpleITK would read it as (resampling writes back in
/// it; a scaled integer file is float32), valued as f64 where that type has
/// values float32 would round, else as f32.
struct TypedImage {
    stored: nifti::Stored,
    pixel: rad::PixelType,
}

impl TypedImage {
    fn of(stored: nifti::Stored) -> TypedImage {
        let sc = stored.scaling;
        let scaled = sc.slope != 0.0 && (sc.slope != 1.0 || sc.inter != 0.0);
        let pixel = rad::PixelType::from_nifti(stored.datatype, scaled);
        TypedImage { stored, pixel }
    }

    fn extract(
        &self,
        mask: rad::MaskVoxels<'_>,
        params: &rad::params::Params,
        label: Option<i64>,
    ) -> Result<rad::Output, rad::RadiomicsError> {
        let image = rad::StoredImage { stored: &self.stored, wide: self.pixel.rounds_in_f32() };
        rad::extract_stored(&image, self.pixel, mask, params, label)
    }
}

/// An image and its mask: the image's file read first (a compressed one by
/// both cores), then its voxels inflated on this thread while the other
/// takes the page faults of their buffer, reads the mask and scans it for
/// its labels and `label`'s box (decompressing the image is most of a small
/// ROI's time); an image already read (the batch's previous row's) is taken
/// as it is.
fn read_pair(
    image: &Path,
    mask: &Path,
    label: i64,
    params: &rad::params::Params,
    cached: Option<TypedImage>,
) -> Result<(TypedImage, nifti::Stored, rad::MaskScan)> {
    let read_mask = || -> Result<(nifti::Stored, rad::MaskScan)> {
        let m = nifti::read_stored(mask)?;
        let scan = rad::MaskScan::of(&m, label, params);
        Ok((m, scan))
    };
    let (i, m) = match cached {
        Some(i) => (Ok(i), read_mask()),
        None => {
            let opened = nifti::open(image)?;
            let prefault = opened.prefault();
            let (i, m) = rayon::join(
                || opened.read(),
                || {
                    prefault.run();
                    read_mask()
                },
            );
            (i.map(TypedImage::of).map_err(anyhow::Error::from), m)
        }
    };
    let i = i?;
    let (m, scan) = m?;
    Ok((i, m, scan))
}

/// One case (text, --json or --csv) or a batch CSV (CSV or JSON on stdout,
/// progress on stderr; failed cases named on stderr and left out, exit 2).
/// With --perturb: the ICC(1,1) rows (CSV), an `ICC(1,1)` line per feature
/// (text), or `{"cases": [...], "reproducibility": {...}}` (JSON).
pub fn run(a: Args) -> Result<bool> {
    let params = match a.params.as_deref() {
        Some(p) => rad::params::Params::from_file(p).with_context(|| format!("{}", p.display()))?,
        None => rad::params::Params::default(),
    };
    let plan = perturb::plan(a.perturb);
    let Some(mask) = a.mask.as_deref() else {
        let cases = output::read_batch(&a.image)?;
        let mut progress = Progress::new("case", cases.len(), true);
        let mut rows = Vec::new();
        let mut done = Vec::new();
        let mut all_ok = true;
        // The image of the previous row, kept for the next row when it names
        // the same file (rows of one image with several masks).
        let mut last: Option<(PathBuf, TypedImage)> = None;
        for (i, case) in cases.iter().enumerate() {
            progress.begin("");
            let cached = last.take().filter(|(p, _)| *p == case.image).map(|(_, im)| im);
            let label = a.label.or(case.label);
            let l = label.unwrap_or(params.settings.label);
            let result = read_pair(&case.image, &case.mask, l, &params, cached).and_then(|case_data| {
                let r = extract_case(&case_data, &params, label, &plan);
                last = Some((case.image.clone(), case_data.0));
                r
            });
            match result {
                Ok((out, moved)) => {
                    done.push((format!("case {}", i + 1), out.clone(), moved));
                    rows.push((case.columns.clone(), out));
                }
                Err(e) => {
                    all_ok = false;
                    progress.suspend(|| eprintln!("error: case {} ({}): {e:#}", i + 1, case.image.display()));
                }
            }
        }
        progress.finish();
        let repro = (!plan.is_empty()).then(|| reproducibility(&done, &plan, a.icc_threshold));
        if a.json {
            let all: Vec<serde_json::Value> = rows
                .iter()
                .map(|(cols, out)| {
                    let mut m: serde_json::Map<String, serde_json::Value> =
                        cols.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
                    m.extend(out.iter().cloned());
                    serde_json::Value::Object(m)
                })
                .collect();
            let v = match repro {
                Some((_, r)) => serde_json::json!({"cases": all, "reproducibility": r}),
                None => serde_json::Value::Array(all),
            };
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            if let (Some((iccs, _)), Some((cols, _))) = (&repro, rows.first()) {
                let names: Vec<String> = cols.iter().map(|(k, _)| k.clone()).collect();
                rows.extend(icc_csv_rows(&names, iccs));
            }
            std::io::Write::write_all(&mut std::io::stdout().lock(), output::to_csv(&rows).as_bytes())?;
        }
        return Ok(all_ok);
    };
    let case = read_pair(&a.image, mask, a.label.unwrap_or(params.settings.label), &params, None)?;
    let (out, moved) = extract_case(&case, &params, a.label, &plan)?;
    let repro =
        (!plan.is_empty()).then(|| reproducibility(&[("case 1".into(), out.clone(), moved)], &plan, a.icc_threshold));
    let text = if a.json {
        match &repro {
            Some((_, r)) => {
                let case = serde_json::Value::Object(out.iter().cloned().collect());
                serde_json::to_string_pretty(&serde_json::json!({"cases": [case], "reproducibility": r}))? + "\n"
            }
            None => output::to_json(&out) + "\n",
        }
    } else if a.csv {
        let cols = vec![
            ("Image".to_string(), a.image.display().to_string()),
            ("Mask".to_string(), mask.display().to_string()),
        ];
        let mut rows = vec![(cols, out)];
        if let Some((iccs, _)) = &repro {
            rows.extend(icc_csv_rows(&["Image".into(), "Mask".into()], iccs));
        }
        output::to_csv(&rows)
    } else {
        let mut t = output::to_text(&out);
        if let Some((iccs, _)) = &repro {
            for (name, r) in iccs {
                let verdict = match (r.icc, r.reproducible, &r.reason) {
                    (Some(icc), Some(rep), _) => {
                        format!("{icc} ({})", if rep { "reproducible" } else { "not reproducible" })
                    }
                    (_, _, reason) => format!("undefined: {}", reason.as_deref().unwrap_or("")),
                };
                t.push_str(&format!("ICC(1,1) {name}: {verdict}\n"));
            }
        }
        t
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(true)
}
