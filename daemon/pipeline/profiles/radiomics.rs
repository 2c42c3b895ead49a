//! The CT radiomics profile (`ct-radiomics`): the model's channels on one
//! grid, run once, and the class map kept as the network gives it (the
//! halves' defaults); mip.png shows the CT.

use super::Halves;

/// The profile's halves.
pub(super) struct Radiomics;

impl Halves for Radiomics {}
