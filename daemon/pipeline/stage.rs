//! The stages a study goes through, by name: the metric's `stage` label and
//! report.json's `timings_s` key ([`Stage::label`]), and the words of a
//! status line while a study is in one ([`Progress`]).

use std::fmt;

use super::load::Phase;
use crate::export::report::StageTimings;

/// A stage of a study, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reading the series.
    Load,
    /// nnU-Net's preprocessing.
    Preprocess,
    /// Sliding-window inference, all folds.
    Inference,
    /// Back to the reference grid.
    Export,
    /// The profile's post-processing: lesions, figures, verdict.
    Postprocess,
    /// Writing the study folder.
    Write,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] =
        [Stage::Load, Stage::Preprocess, Stage::Inference, Stage::Export, Stage::Postprocess, Stage::Write];

    /// The metric's `stage` label and report.json's `timings_s` key.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Export => "export",
            Stage::Postprocess => "postprocess",
            Stage::Write => "write",
        }
    }

    /// What a status line says while a study is in it.
    fn doing(self) -> &'static str {
        match self {
            Stage::Load => "loading series",
            Stage::Preprocess => "preprocessing",
            Stage::Inference => "inference",
            Stage::Export => "export",
            Stage::Postprocess => "post-processing",
            Stage::Write => "writing",
        }
    }
}

impl StageTimings {
    /// Seconds of one stage.
    pub fn get(&self, stage: Stage) -> f64 {
        match stage {
            Stage::Load => self.load,
            Stage::Preprocess => self.preprocess,
            Stage::Inference => self.inference,
            Stage::Export => self.export,
            Stage::Postprocess => self.postprocess,
            Stage::Write => self.write,
        }
    }
}

/// Where a study is, for status lines and logs: `inference 40%`, `arterial
/// phase: preprocessing`. Its `Display` is the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// The contrast phase, for a profile that runs the model on each.
    pub phase: Option<Phase>,
    /// How far inference is, in tens of percent (10 to 90).
    pub percent: Option<u8>,
}

impl Progress {
    /// Entering `stage`, for the contrast phase `phase` where there is one.
    pub fn new(stage: Stage, phase: Option<Phase>) -> Self {
        Progress { stage, phase, percent: None }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            // A phase is one series: "arterial phase: loading".
            Some(p) if self.stage == Stage::Load => write!(f, "{} phase: loading", p.as_str())?,
            Some(p) => write!(f, "{} phase: {}", p.as_str(), self.stage.doing())?,
            None => f.write_str(self.stage.doing())?,
        }
        match self.percent {
            Some(p) => write!(f, " {p}%"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_metric_and_report_names() {
        let t = StageTimings { load: 1.0, preprocess: 2.0, inference: 3.0, export: 4.0, postprocess: 5.0, write: 6.0 };
        let typed: Vec<(&str, f64)> = Stage::ALL.iter().map(|&s| (s.label(), t.get(s))).collect();
        assert_eq!(typed, t.by_stage().to_vec());
        let json = serde_json::to_value(&t).unwrap();
        for s in Stage::ALL {
            assert_eq!(json[s.label()], t.get(s), "report.json timings_s.{}", s.label());
        }
    }

    #[test]
    fn status_words() {
        let p = |stage, phase| Progress::new(stage, phase).to_string();
        assert_eq!(p(Stage::Load, None), "loading series");
        assert_eq!(p(Stage::Preprocess, None), "preprocessing");
        assert_eq!(p(Stage::Postprocess, None), "post-processing");
        assert_eq!(p(Stage::Load, Some(Phase::Arterial)), "arterial phase: loading");
        assert_eq!(p(Stage::Preprocess, Some(Phase::Venous)), "venous phase: preprocessing");
        let at = Progress { stage: Stage::Inference, phase: None, percent: Some(40) };
        assert_eq!(at.to_string(), "inference 40%");
    }
}
