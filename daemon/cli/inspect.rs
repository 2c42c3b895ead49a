//! `edgeseg inspect`: the DICOM series of a folder, their geometry, transfer
//! syntaxes and SUV, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use edgeseg::ingest::{self, summary};

/// List the DICOM series in a folder: geometry, transfer syntaxes, SUV.
#[derive(clap::Args)]
pub struct Args {
    /// Folder to scan recursively.
    dir: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Refuse slice stacks that need resampling (irregular spacing, gantry tilt).
    #[arg(long)]
    strict_geometry: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let (dir, json) = (a.dir.as_path(), a.json);
    let index = super::dicom_index(dir, a.strict_geometry)?;
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
