//! The PET/CT total-tumour profile (`petct-total-tumour`, seed 003): PET and
//! CT on the PET grid, run once; `post::pet::total_tumour` makes the lesions,
//! their figures and the patient's, and the PET in SUV is kept for
//! suv.nii.gz and `edgeseg add-lesion`. With model.toml `[radiomics] pet =
//! true`, PyRadiomics features of each lesion on the SUV image.

use super::{Halves, Post, PostContext, Run, Study};
use crate::export::report::ProfileRules;
use crate::pipeline::PipelineError;
use crate::pipeline::load::{Case, load_channels};
use crate::pipeline::stage::Progress;
use crate::post::pet::{self, PetRules};
use crate::radiomics::study;
use crate::volume::Volume;

/// The profile's halves.
pub(super) struct PetCt;

/// The model channel that takes the PET.
fn pet_channel(pkg: &crate::infer::model::ModelPackage) -> Option<usize> {
    pkg.meta.channels.iter().position(|c| c.modality == "PT")
}

impl Halves for PetCt {
    fn load(&self, study: &Study<'_>, _: &mut dyn FnMut(Progress)) -> Result<Vec<Case>, PipelineError> {
        if pet_channel(study.pkg).is_none() {
            return Err(study.no_input("the PET/CT profile needs a PT channel".into()));
        }
        Ok(vec![load_channels(study.pkg, study.index, study.study_uid)?])
    }

    fn post(&self, cx: &PostContext<'_>, runs: Vec<Run>) -> Result<Post, PipelineError> {
        let pet_index =
            pet_channel(cx.pkg).ok_or_else(|| cx.no_input("the PET/CT profile needs a PT channel".into()))?;
        let mut reference = runs.into_iter().next().ok_or_else(|| cx.no_input("no input volumes".into()))?;
        let Some(pet_volume) = reference.case.volumes.get(pet_index) else {
            return Err(cx.no_input(format!("no volume for the PT channel {pet_index}")));
        };
        let r = PetRules::default();
        let labels = &reference.labels;
        let (result, ran) =
            cx.backend.run("lesion post-processing", |b| pet::total_tumour(b, labels, pet_volume, &r))?;
        let geometry = pet_volume.geometry.clone();
        reference.labels = result.classes;
        // The PET leaves the case: it becomes suv.nii.gz.
        let suv = reference.case.volumes.swap_remove(pet_index);
        let lesions = Volume { geometry, data: result.lesions.data };
        // PET radiomics per lesion on SUV, when model.toml asks for it.
        let radiomics = cx.pkg.radiomics.as_ref().filter(|p| p.pet).map(|p| study::pet_study(&suv, &lesions, p));
        Ok(Post {
            lesions: Some(lesions),
            lesion_label: Some(r.lesion_label),
            suv: Some(suv),
            focus_class: None,
            lesion_table: result.table,
            patient: Some(result.patient),
            rules: Some(ProfileRules::Pet(r)),
            verdict: None,
            ran,
            reference,
            radiomics,
        })
    }
}
