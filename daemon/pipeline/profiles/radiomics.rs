//! The CT radiomics profile (`ct-radiomics`): the model's channels on one
//! grid, run once; the tumour labels' 26-connected components become the
//! lesions, and each lesion's intra- and peri-tumoural ROIs, those of all
//! lesions together and the whole organ get PyRadiomics' features on the CT
//! (`radiomics::study::ct_study`, settings from model.toml `[radiomics]`);
//! mip.png shows the CT through the tumour.

use super::{Halves, Post, PostContext, Run};
use crate::pipeline::PipelineError;
use crate::radiomics::study;

/// The profile's halves.
pub(super) struct Radiomics;

impl Halves for Radiomics {
    fn post(&self, cx: &PostContext<'_>, runs: Vec<Run>) -> Result<Post, PipelineError> {
        let reference = runs.into_iter().next().ok_or_else(|| cx.no_input("no input volumes".into()))?;
        let Some(plan) = cx.pkg.radiomics.as_ref() else {
            return Ok(Post::unchanged(reference, cx.unused_backend()));
        };
        let ct_index = cx
            .pkg
            .meta
            .channels
            .iter()
            .position(|c| c.modality == "CT")
            .ok_or_else(|| cx.no_input("the ct-radiomics profile needs a CT channel".into()))?;
        let Some(ct) = reference.case.volumes.get(ct_index) else {
            return Err(cx.no_input(format!("no volume for the CT channel {ct_index}")));
        };
        let (lesions, radiomics) = study::ct_study(ct, &reference.labels, plan);
        let lesion_label = plan.tumour.first().map(|t| t.0);
        let mut post = Post::unchanged(reference, cx.unused_backend());
        post.lesions = Some(lesions);
        post.lesion_label = lesion_label;
        post.focus_class = lesion_label;
        post.radiomics = Some(radiomics);
        Ok(post)
    }
}
