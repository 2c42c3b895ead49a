//! Series selection: which of a study's series feeds each model channel (PET
//! and CT from one frame of reference, else the series of the channel's
//! modality with most frames).

use super::PipelineError;
use crate::infer::Predictor;
use crate::infer::model::Channel;
use crate::ingest::{self, FolderIndex, SeriesIndex};

/// Picks, for each model channel, the study's series of that modality; PET
/// and CT come from one frame of reference (a PET/CT pair).
pub fn select_series<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
    predictor: &Predictor,
) -> Result<Vec<&'a SeriesIndex>, PipelineError> {
    select_for_channels(index, study_uid, &predictor.package.meta.channels)
}

/// [`select_series`] for a list of model channels.
pub fn select_for_channels<'a>(
    index: &'a FolderIndex,
    study_uid: &str,
    channels: &[Channel],
) -> Result<Vec<&'a SeriesIndex>, PipelineError> {
    let series: Vec<&SeriesIndex> = index.series.iter().filter(|s| s.study_uid == study_uid).collect();
    let mods: Vec<&str> = channels.iter().map(|c| c.modality.as_str()).collect();
    let no = |reason: String| PipelineError::NoInput { study_uid: study_uid.to_string(), reason };
    if mods.contains(&"PT") && mods.contains(&"CT") {
        let pairing = ingest::pair(&series);
        let p = pairing.pairs.first().ok_or_else(|| {
            let found: Vec<String> = pairing.unpaired.iter().map(ToString::to_string).collect();
            let found = if found.is_empty() { "no PET or CT series".to_string() } else { found.join("; ") };
            no(format!("the model needs a PET/CT pair (PET and CT in one frame of reference); found {found}"))
        })?;
        return channels
            .iter()
            .map(|c| {
                let uid = if c.modality == "PT" { &p.pet_series_uid } else { &p.ct_series_uid };
                series
                    .iter()
                    .copied()
                    .find(|s| &s.series_uid == uid)
                    .ok_or_else(|| no(format!("series {uid} vanished")))
            })
            .collect();
    }
    channels
        .iter()
        .map(|c| {
            series
                .iter()
                .copied()
                .filter(|s| s.modality == c.modality)
                .max_by_key(|s| s.frame_count())
                .ok_or_else(|| no(format!("no {} series for channel {} ({})", c.modality, c.index, c.name)))
        })
        .collect()
}
