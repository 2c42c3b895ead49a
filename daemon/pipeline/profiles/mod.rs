//! Task profiles: model.toml's `profile`, parsed once into [`Profile`], and
//! each profile's two halves behind the `Halves` trait: the load half (which
//! series become which runs of the network; on the daemon's loader thread)
//! and the post half (the profile's rules on the network's class maps). A
//! profile is a file here and one arm of [`Profile`].

mod petct;
mod radiomics;
mod screening;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::screening::ct_phases;
use super::PipelineError;
use super::load::Case;
use super::stage::Progress;
use crate::export::report::ProfileRules;
use crate::gpu::select::{PostBackend, PostRun};
use crate::infer::model::ModelPackage;
use crate::ingest::FolderIndex;
use crate::post::pet::{Lesion, PatientFigures};
use crate::post::screening::StudyVerdict;
use crate::volume::Volume;

/// A task profile (model.toml `profile`; report.json `model.profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `petct-total-tumour`: PET and CT on the PET grid; lesions, their
    /// figures and the patient's (seed 003).
    PetctTotalTumour,
    /// `ct-screening`: the model on each contrast phase of a CT study; the
    /// S4C verdict (seed 002).
    CtScreening,
    /// `ct-radiomics`: the channels on one grid; the class map as the
    /// network gives it.
    CtRadiomics,
}

impl Profile {
    /// Every profile this build knows.
    pub const ALL: [Profile; 3] = [Profile::PetctTotalTumour, Profile::CtScreening, Profile::CtRadiomics];

    /// Its name in model.toml and report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::PetctTotalTumour => "petct-total-tumour",
            Profile::CtScreening => "ct-screening",
            Profile::CtRadiomics => "ct-radiomics",
        }
    }

    fn halves(self) -> &'static dyn Halves {
        match self {
            Profile::PetctTotalTumour => &petct::PetCt,
            Profile::CtScreening => &screening::Screening,
            Profile::CtRadiomics => &radiomics::Radiomics,
        }
    }

    /// The load half: the study's series, loaded into the network's runs
    /// (not yet preprocessed).
    pub(super) fn load(
        self,
        pkg: &ModelPackage,
        index: &FolderIndex,
        study_uid: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Case>, PipelineError> {
        self.halves().load(&Study { pkg, index, study_uid, profile: self }, progress)
    }

    /// The post half: the profile's rules on the runs' class maps.
    pub(super) fn post(
        self,
        pkg: &ModelPackage,
        backend: &PostBackend,
        study_uid: &str,
        runs: Vec<Run>,
    ) -> Result<Post, PipelineError> {
        self.halves().post(&PostContext { pkg, backend, study_uid }, runs)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model.toml `profile` this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("profile {0:?} is not one this edgeseg knows ({known})", known = known_profiles())]
pub struct UnknownProfile(pub String);

fn known_profiles() -> String {
    Profile::ALL.map(Profile::as_str).join(", ")
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, UnknownProfile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownProfile(s.to_string()))
    }
}

impl Serialize for Profile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Profile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a profile's load half reads.
pub(super) struct Study<'a> {
    pub pkg: &'a ModelPackage,
    pub index: &'a FolderIndex,
    pub study_uid: &'a str,
    pub profile: Profile,
}

impl Study<'_> {
    /// The study lacks what the profile needs.
    pub fn no_input(&self, reason: String) -> PipelineError {
        PipelineError::NoInput { study_uid: self.study_uid.to_string(), reason }
    }
}

/// What a profile's post half works with besides the runs.
pub(super) struct PostContext<'a> {
    pub pkg: &'a ModelPackage,
    pub backend: &'a PostBackend,
    pub study_uid: &'a str,
}

impl PostContext<'_> {
    /// The study lacks what the profile needs.
    pub fn no_input(&self, reason: String) -> PipelineError {
        PipelineError::NoInput { study_uid: self.study_uid.to_string(), reason }
    }

    /// Where post-processing runs when no step of it ran.
    pub fn unused_backend(&self) -> PostRun {
        PostRun { backend: self.backend.name(), fallback: None }
    }
}

/// A case after the network: its class map and probabilities.
pub struct Run {
    /// The case (its preprocessing consumed).
    pub case: Case,
    /// Class per voxel, on the case's grid.
    pub labels: Volume<u8>,
    /// Class probabilities, when asked for.
    pub probabilities: Option<Vec<Volume<f32>>>,
}

/// What a profile's post half gives.
pub struct Post {
    /// The run the outputs are on, its class map as the profile left it.
    pub reference: Run,
    /// Lesion instance map, where the profile makes one.
    pub lesions: Option<Volume<u32>>,
    /// The class the lesion instance map numbers (seg.dcm's "Lesion n").
    pub lesion_label: Option<u8>,
    /// The PET in SUV on the reference grid, where the profile keeps it.
    pub suv: Option<Volume<f32>>,
    /// The class mip.png's axial CT slices go through first.
    pub focus_class: Option<u8>,
    /// The rules as applied.
    pub rules: Option<ProfileRules>,
    /// Lesion table.
    pub lesion_table: Vec<Lesion>,
    /// Patient figures.
    pub patient: Option<PatientFigures>,
    /// The verdict, where the profile gives one.
    pub verdict: Option<StudyVerdict>,
    /// Where post-processing ran.
    pub ran: PostRun,
    /// Radiomics, where the profile extracts them.
    pub radiomics: Option<crate::radiomics::study::StudyRadiomics>,
}

impl Post {
    /// The reference run as the network left it: no rule applied.
    fn unchanged(reference: Run, ran: PostRun) -> Self {
        Post {
            reference,
            lesions: None,
            lesion_label: None,
            suv: None,
            focus_class: None,
            rules: None,
            lesion_table: Vec::new(),
            patient: None,
            verdict: None,
            ran,
            radiomics: None,
        }
    }
}

/// A profile's two halves. The defaults are the plain profile's: the
/// model's channels on one grid, run once, and its class map kept as it is.
trait Halves: Sync {
    /// The load half: the study's series into the network's runs.
    fn load(&self, study: &Study<'_>, _progress: &mut dyn FnMut(Progress)) -> Result<Vec<Case>, PipelineError> {
        Ok(vec![super::load::load_channels(study.pkg, study.index, study.study_uid)?])
    }

    /// The post half: the profile's rules on the runs' class maps.
    fn post(&self, cx: &PostContext<'_>, runs: Vec<Run>) -> Result<Post, PipelineError> {
        let reference = runs.into_iter().next().ok_or_else(|| cx.no_input("no input volumes".into()))?;
        Ok(Post::unchanged(reference, cx.unused_backend()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::model::ModelError;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn an_unknown_profile_is_a_package_error_naming_model_toml_and_the_known_ones() {
        let d = tempfile::tempdir().unwrap();
        let toml = "name = \"m\"\nversion = \"1\"\nconfiguration = \"3d_fullres\"\nprofile = \"ct-fancy\"\n\
                    folds = [0]\n\n[[channels]]\nindex = 0\nname = \"CT\"\nmodality = \"CT\"\n\n\
                    [inference]\nallowed_mirroring_axes = []\n\n[files]\n";
        std::fs::write(d.path().join("model.toml"), toml).unwrap();
        match ModelPackage::load(d.path()) {
            Err(e @ ModelError::Parse { .. }) => {
                let text = e.to_string();
                assert!(text.contains("model.toml") && text.contains("\"ct-fancy\""), "{text}");
                for p in Profile::ALL {
                    assert!(text.contains(p.as_str()), "{text}");
                }
            }
            other => panic!("{:?}", other.map(|p| p.meta.profile)),
        }
        // A known one parses.
        let fine = toml.replace("ct-fancy", "ct-screening");
        let meta: crate::infer::model::ModelToml = toml::from_str(&fine).unwrap();
        assert_eq!(meta.profile, Profile::CtScreening);
    }
}
