//! The CT screening profile (`ct-screening`, seed 002, S4C): the study's
//! contrast phases found by [`ct_phases`] and each run through the model;
//! the component rule and voxel-count verdict per phase
//! (`post::screening`), arterial OR venous. labels.nii.gz,
//! probabilities.nii.gz and mip.png are on the phase that shows the finding
//! (the arterial one when it is abnormal with more tumour voxels than the
//! venous one, else the venous one, else the one there is); report.json
//! `reference_series_uid` names it and `verdict` holds both phases.

use super::{Halves, Post, PostContext, Run, Study};
use crate::export::report::ProfileRules;
use crate::ingest::{FolderIndex, SeriesIndex};
use crate::pipeline::PipelineError;
use crate::pipeline::load::{Case, Phase, load_series};
use crate::pipeline::stage::{Progress, Stage};
use crate::post::screening::{self, PhaseVerdict, ScreeningRules};

/// The profile's halves.
pub(super) struct Screening;

/// The phase a CT series' SeriesDescription names: arterial ("arterial",
/// "art", "ap") or venous ("venous", "portal", "pv", "ven", "vp").
fn named_phase(description: &str) -> Option<Phase> {
    let d = description.to_lowercase();
    let words: Vec<&str> = d.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    if d.contains("arter") || words.iter().any(|w| matches!(*w, "art" | "ap")) {
        Some(Phase::Arterial)
    } else if d.contains("venous") || d.contains("portal") || words.iter().any(|w| matches!(*w, "pv" | "ven" | "vp")) {
        Some(Phase::Venous)
    } else {
        None
    }
}

/// The arterial and venous CT series of a study. A series is placed by its
/// SeriesDescription ([`named_phase`]; of several, the one with most
/// frames); series it names no phase for fill the empty places in
/// SeriesNumber order (the earlier series is the arterial one); a lone
/// unnamed series is taken as the venous phase.
pub fn ct_phases<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
) -> Result<(Option<&'a SeriesIndex>, Option<&'a SeriesIndex>), PipelineError> {
    let cts: Vec<&SeriesIndex> =
        index.series.iter().filter(|s| s.study_uid == study_uid && s.modality == "CT" && s.frame_count() > 0).collect();
    if cts.is_empty() {
        return Err(PipelineError::NoInput {
            study_uid: study_uid.to_string(),
            reason: "the CT screening profile needs a CT series".into(),
        });
    }
    let description = |s: &SeriesIndex| s.instances.first().and_then(|h| h.series_description.clone());
    let named = |phase: Phase| {
        cts.iter()
            .copied()
            .filter(|s| description(s).as_deref().and_then(named_phase) == Some(phase))
            .max_by_key(|s| s.frame_count())
    };
    let (mut arterial, mut venous) = (named(Phase::Arterial), named(Phase::Venous));
    let mut unnamed: Vec<&SeriesIndex> =
        cts.iter().copied().filter(|s| description(s).as_deref().and_then(named_phase).is_none()).collect();
    unnamed
        .sort_by_key(|s| (s.instances.first().and_then(|h| h.series_number).unwrap_or(i64::MAX), s.series_uid.clone()));
    let mut rest = unnamed.into_iter();
    match (arterial.is_some(), venous.is_some()) {
        (false, false) => {
            let (a, b) = (rest.next(), rest.next());
            if b.is_some() {
                (arterial, venous) = (a, b);
            } else {
                venous = a;
            }
        }
        (true, false) => venous = rest.next(),
        (false, true) => arterial = rest.next(),
        (true, true) => {}
    }
    Ok((arterial, venous))
}

impl Halves for Screening {
    /// Each contrast phase there is, arterial first, as a case of its own.
    fn load(&self, study: &Study<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Case>, PipelineError> {
        let channels = &study.pkg.meta.channels;
        if channels.len() != 1 || channels[0].modality != "CT" {
            return Err(study.no_input(format!("the {} profile takes a one-channel CT model", study.profile)));
        }
        let (arterial, venous) = ct_phases(study.index, study.study_uid)?;
        let mut cases = Vec::new();
        for (phase, series) in [(Phase::Arterial, arterial), (Phase::Venous, venous)] {
            let Some(series) = series else { continue };
            progress(Progress::new(Stage::Load, Some(phase)));
            cases.push(load_series(series, phase)?);
        }
        Ok(cases)
    }

    fn post(&self, cx: &PostContext<'_>, runs: Vec<Run>) -> Result<Post, PipelineError> {
        let rules = ScreeningRules::default();
        let mut post_run = cx.unused_backend();
        let [mut arterial, mut venous]: [Option<(Run, PhaseVerdict)>; 2] = [None, None];
        for mut run in runs {
            let (verdict, ran) = cx.backend.run("screening post-processing", |b| {
                // On a copy: a step that fails half-way must leave the labels as the network gave them.
                let mut labels = run.labels.clone();
                screening::screen_phase(b, &mut labels, &rules).map(|v| (v, labels))
            })?;
            let (verdict, labels) = verdict;
            if ran.fallback.is_some() || post_run.fallback.is_none() {
                post_run = ran;
            }
            run.labels = labels;
            match run.case.phase {
                Some(Phase::Arterial) => arterial = Some((run, verdict)),
                Some(Phase::Venous) | None => venous = Some((run, verdict)),
            }
        }
        // The reference is the phase that shows the finding: the arterial one
        // when it has more tumour voxels and is abnormal, else the venous one.
        let arterial_shows = match (&arterial, &venous) {
            (Some((_, a)), Some((_, v))) => a.abnormal && a.tumour_voxels > v.tumour_voxels,
            (Some(_), None) => true,
            _ => false,
        };
        let (art_run, art) = arterial.map_or((None, None), |(r, v)| (Some(r), Some(v)));
        let (ven_run, ven) = venous.map_or((None, None), |(r, v)| (Some(r), Some(v)));
        let reference = if arterial_shows { art_run } else { ven_run.or(art_run) };
        let reference = reference.ok_or_else(|| cx.no_input("no CT phase".into()))?;
        Ok(Post {
            reference,
            lesions: None,
            lesion_label: None,
            suv: None,
            focus_class: Some(rules.tumour_label),
            lesion_table: Vec::new(),
            patient: None,
            verdict: Some(screening::fuse(art, ven)),
            rules: Some(ProfileRules::Screening(rules)),
            ran: post_run,
            radiomics: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_from_series_descriptions() {
        for (d, want) in [
            ("Pancreas arterial phase 1.5 mm", Some(Phase::Arterial)),
            ("ART 1.0 B30f", Some(Phase::Arterial)),
            ("Abdomen AP", Some(Phase::Arterial)),
            ("Portal venous 3mm", Some(Phase::Venous)),
            ("PV phase", Some(Phase::Venous)),
            ("abd_ven_1mm", Some(Phase::Venous)),
            ("Abdomen 5.0 B30f", None),
            ("Cardiac", None),
            ("Event", None),
        ] {
            assert_eq!(named_phase(d), want, "{d}");
        }
    }
}
