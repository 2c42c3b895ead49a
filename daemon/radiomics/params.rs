//! PyRadiomics parameter files (YAML or JSON: `imageType`, `featureClass`,
//! `setting`), read into typed settings with PyRadiomics' defaults. Every key is
//! checked against PyRadiomics' schema (paramSchema.yaml); an unknown key or a
//! value of the wrong type is an error naming its line and column.

use std::fmt;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a key or value sits in the parameter file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.col)
    }
}

/// A parameter file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The system's reason.
        reason: String,
    },
    /// Not YAML or JSON.
    #[error("{pos}: {reason}")]
    Syntax {
        /// Where the parser stopped.
        pos: Pos,
        /// The parser's reason.
        reason: String,
    },
    /// A key PyRadiomics does not know, or a value it would refuse.
    #[error("{pos}: {reason}")]
    Invalid {
        /// Where the key or value is.
        pos: Pos,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(String, Pos, Node)>),
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Its position.
    pub pos: Pos,
}

fn pos_of(m: Marker) -> Pos {
    Pos { line: m.line(), col: m.col() + 1 }
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<(String, Pos)>)>,
    root: Option<Node>,
    error: Option<ParamsError>,
}

fn scalar(text: &str, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = text.parse::<f64>() {
                if text.chars().any(|c| c.is_ascii_digit()) { Value::Float(f) } else { Value::Str(text.to_string()) }
            } else {
                Value::Str(text.to_string())
            }
        }
    }
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        let Some((top, key)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut top.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match key.take() {
                None => match node.value {
                    Value::Str(k) => *key = Some((k, node.pos)),
                    Value::Int(i) => *key = Some((i.to_string(), node.pos)),
                    Value::Float(f) => *key = Some((f.to_string(), node.pos)),
                    Value::Bool(b) => *key = Some((b.to_string(), node.pos)),
                    _ => {
                        self.error.get_or_insert(ParamsError::Invalid {
                            pos: node.pos,
                            reason: "a key must be a plain name".into(),
                        });
                    }
                },
                Some((k, kpos)) => entries.push((k, kpos, node)),
            },
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(mark);
        match ev {
            Event::Scalar(text, style, _, _) => self.push_value(Node { value: scalar(&text, style), pos }),
            Event::SequenceStart(..) => {
                self.stack.push((Node { value: Value::Seq(Vec::new()), pos }, None));
            }
            Event::MappingStart(..) => {
                self.stack.push((Node { value: Value::Map(Vec::new()), pos }, None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            Event::Alias(_) => {
                self.error.get_or_insert(ParamsError::Invalid {
                    pos,
                    reason: "YAML aliases are not supported in parameter files".into(),
                });
            }
            _ => {}
        }
    }
}

/// Parses YAML (or JSON, a subset of it) into a positioned tree.
pub fn parse_tree(text: &str) -> Result<Node, ParamsError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| {
        let m = e.marker();
        ParamsError::Syntax { pos: pos_of(*m), reason: e.info().to_string() }
    })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root.unwrap_or(Node { value: Value::Null, pos: Pos { line: 1, col: 1 } }))
}

/// GLCM weighting of the angles by their length in mm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightingNorm {
    /// Chebyshev length.
    Infinity,
    /// Euclidean length.
    Euclidean,
    /// Manhattan length.
    Manhattan,
    /// Every angle weighs 1 (angles summed before the features).
    NoWeighting,
}

impl WeightingNorm {
    /// The name in the parameter file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Infinity => "infinity",
            Self::Euclidean => "euclidean",
            Self::Manhattan => "manhattan",
            Self::NoWeighting => "no_weighting",
        }
    }
}

/// How `resegmentRange` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResegmentMode {
    /// Grey values.
    Absolute,
    /// Fractions of the ROI maximum.
    Relative,
    /// Multiples of the ROI standard deviation around its mean.
    Sigma,
}

/// Every setting of PyRadiomics' `setting` block, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Fewer dimensions of size > 1 in the ROI are refused.
    pub minimum_roi_dimensions: i64,
    /// ROIs with at most this many voxels are refused.
    pub minimum_roi_size: Option<i64>,
    /// Geometry tolerance for comparing image and mask.
    pub geometry_tolerance: Option<f64>,
    /// Resample the mask onto the image grid when they differ.
    pub correct_mask: bool,
    /// Emit the `diagnostics_*` block.
    pub additional_info: bool,
    /// Label value of the ROI in the mask.
    pub label: i64,
    /// Channel of a vector mask.
    pub label_channel: i64,
    /// Bin width.
    pub bin_width: f64,
    /// Fixed bin count (overrides the bin width).
    pub bin_count: Option<i64>,
    /// Normalise the image (z-score over the whole image).
    pub normalize: bool,
    /// Scale after normalisation.
    pub normalize_scale: f64,
    /// Clamp normalised values to ± this many standard deviations.
    pub remove_outliers: Option<f64>,
    /// Resampled spacing (x, y, z), mm; 0 keeps an axis.
    pub resampled_pixel_spacing: Option<Vec<f64>>,
    /// Interpolator name for resampling.
    pub interpolator: Option<String>,
    /// Padding (voxels) around the ROI when cropping for resampling / preCrop.
    pub pad_distance: i64,
    /// GLCM / GLDM / NGTDM neighbour distances.
    pub distances: Vec<i64>,
    /// Extract in 2D slices.
    pub force_2d: bool,
    /// The slice axis for force2D (0 = z).
    pub force_2d_dimension: i64,
    /// Resegmentation range.
    pub resegment_range: Option<Vec<f64>>,
    /// Resegmentation mode.
    pub resegment_mode: ResegmentMode,
    /// Shape from the resegmented mask.
    pub resegment_shape: bool,
    /// Crop before filtering.
    pub pre_crop: bool,
    /// LoG sigmas (mm).
    pub sigma: Vec<f64>,
    /// Each sigma as Python's str() writes the value the file holds (for the
    /// image name `log-sigma-3-0-mm-3D`).
    pub sigma_text: Vec<String>,
    /// Wavelet start level.
    pub start_level: i64,
    /// Wavelet levels.
    pub level: i64,
    /// Wavelet name.
    pub wavelet: String,
    /// Gradient uses the spacing.
    pub gradient_use_spacing: bool,
    /// LBP 3D levels.
    pub lbp3d_levels: i64,
    /// LBP 3D icosphere radius (voxels).
    pub lbp3d_icosphere_radius: f64,
    /// LBP 3D icosphere subdivisions.
    pub lbp3d_icosphere_subdivision: i64,
    /// LBP 2D sampling radius (pixels).
    pub lbp2d_radius: f64,
    /// LBP 2D samples on the circle.
    pub lbp2d_samples: i64,
    /// LBP 2D method (`default`, `ror`, `uniform`, `var`).
    pub lbp2d_method: Lbp2DMethod,
    /// Shift added to grey values before Energy / RMS.
    pub voxel_array_shift: i64,
    /// GLCM made symmetrical.
    pub symmetrical_glcm: bool,
    /// Angle weighting.
    pub weighting_norm: Option<WeightingNorm>,
    /// GLDM dependence threshold.
    pub gldm_a: i64,
    /// Keys the file set explicitly, for the diagnostics block.
    pub explicit: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            minimum_roi_dimensions: 2,
            minimum_roi_size: None,
            geometry_tolerance: None,
            correct_mask: false,
            additional_info: true,
            label: 1,
            label_channel: 0,
            bin_width: 25.0,
            bin_count: None,
            normalize: false,
            normalize_scale: 1.0,
            remove_outliers: None,
            resampled_pixel_spacing: None,
            interpolator: Some("sitkBSpline".into()),
            pad_distance: 5,
            distances: vec![1],
            force_2d: false,
            force_2d_dimension: 0,
            resegment_range: None,
            resegment_mode: ResegmentMode::Absolute,
            resegment_shape: false,
            pre_crop: false,
            sigma: Vec::new(),
            sigma_text: Vec::new(),
            start_level: 0,
            level: 1,
            wavelet: "coif1".into(),
            gradient_use_spacing: true,
            lbp3d_levels: 2,
            lbp3d_icosphere_radius: 1.0,
            lbp3d_icosphere_subdivision: 1,
            lbp2d_radius: 1.0,
            lbp2d_samples: 8,
            lbp2d_method: Lbp2DMethod::Uniform,
            voxel_array_shift: 0,
            symmetrical_glcm: true,
            weighting_norm: None,
            gldm_a: 0,
            explicit: Vec::new(),
        }
    }
}

/// scikit-image's `local_binary_pattern` methods PyRadiomics' schema accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lbp2DMethod {
    /// The P-bit pattern.
    Default,
    /// The pattern's smallest rotation.
    Ror,
    /// Rotation-invariant uniform patterns (0..=P+1).
    Uniform,
    /// The uniform pattern divided by the variance of the samples.
    Var,
}

impl Lbp2DMethod {
    /// The name in the parameter file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Ror => "ror",
            Self::Uniform => "uniform",
            Self::Var => "var",
        }
    }
}

/// The image types PyRadiomics knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// The image as it is.
    Original,
    /// Laplacian of Gaussian, one image per sigma.
    LoG,
    /// Undecimated wavelet decompositions.
    Wavelet,
    /// (c·x)², c = 1/sqrt(max|x|).
    Square,
    /// sqrt(|x|·max|x|) with the sign of x.
    SquareRoot,
    /// log(|x|+1) with the sign, rescaled to the original range.
    Logarithm,
    /// exp(log(max|x|)/max|x| · x).
    Exponential,
    /// Gradient magnitude.
    Gradient,
    /// Local binary pattern, 2D.
    Lbp2D,
    /// Local binary pattern, 3D.
    Lbp3D,
}

impl ImageType {
    /// All image types, with their parameter-file names.
    pub const ALL: [(ImageType, &'static str); 10] = [
        (ImageType::Original, "Original"),
        (ImageType::LoG, "LoG"),
        (ImageType::Wavelet, "Wavelet"),
        (ImageType::Square, "Square"),
        (ImageType::SquareRoot, "SquareRoot"),
        (ImageType::Logarithm, "Logarithm"),
        (ImageType::Exponential, "Exponential"),
        (ImageType::Gradient, "Gradient"),
        (ImageType::Lbp2D, "LBP2D"),
        (ImageType::Lbp3D, "LBP3D"),
    ];

    /// The parameter-file name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(t, _)| *t == self).map_or("Original", |(_, n)| n)
    }
}

/// The feature classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeatureClass {
    /// 3D shape.
    Shape,
    /// 2D shape (under force2D, a ROI one voxel thick).
    Shape2D,
    /// First order statistics.
    FirstOrder,
    /// Grey level co-occurrence matrix.
    Glcm,
    /// Grey level dependence matrix.
    Gldm,
    /// Grey level run length matrix.
    Glrlm,
    /// Grey level size zone matrix.
    Glszm,
    /// Neighbouring grey tone difference matrix.
    Ngtdm,
}

impl FeatureClass {
    /// Every class a parameter file may name (shape2D is left out of
    /// PyRadiomics' defaults without a parameter file).
    pub const NAMED: [FeatureClass; 8] = [
        FeatureClass::Shape,
        FeatureClass::Shape2D,
        FeatureClass::FirstOrder,
        FeatureClass::Glcm,
        FeatureClass::Gldm,
        FeatureClass::Glrlm,
        FeatureClass::Glszm,
        FeatureClass::Ngtdm,
    ];

    /// Classes in PyRadiomics' default order (shape first, then alphabetical).
    pub const ALL: [FeatureClass; 7] = [
        FeatureClass::Shape,
        FeatureClass::FirstOrder,
        FeatureClass::Glcm,
        FeatureClass::Gldm,
        FeatureClass::Glrlm,
        FeatureClass::Glszm,
        FeatureClass::Ngtdm,
    ];

    /// The name in feature names and parameter files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shape => "shape",
            Self::Shape2D => "shape2D",
            Self::FirstOrder => "firstorder",
            Self::Glcm => "glcm",
            Self::Gldm => "gldm",
            Self::Glrlm => "glrlm",
            Self::Glszm => "glszm",
            Self::Ngtdm => "ngtdm",
        }
    }

    /// Feature names of the class with whether each is deprecated (not
    /// computed unless named), in PyRadiomics' order.
    pub fn features(self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Shape => super::shape::FEATURES,
            Self::Shape2D => super::shape2d::FEATURES,
            Self::FirstOrder => super::firstorder::FEATURES,
            Self::Glcm => super::glcm::FEATURES,
            Self::Gldm => super::gldm::FEATURES,
            Self::Glrlm => super::glrlm::FEATURES,
            Self::Glszm => super::glszm::FEATURES,
            Self::Ngtdm => super::ngtdm::FEATURES,
        }
    }
}

/// A parameter file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Enabled image types in file order, each with its own setting overrides.
    pub image_types: Vec<(ImageType, Vec<(String, Node)>)>,
    /// Enabled feature classes in file order; an empty list means all
    /// (non-deprecated) features of the class.
    pub feature_classes: Vec<(FeatureClass, Vec<String>)>,
    /// Settings (defaults plus the file's `setting` block).
    pub settings: Settings,
}

impl Default for Params {
    /// PyRadiomics' defaults: Original image, every feature class but shape2D.
    fn default() -> Self {
        Params {
            image_types: vec![(ImageType::Original, Vec::new())],
            feature_classes: FeatureClass::ALL.iter().map(|c| (*c, Vec::new())).collect(),
            settings: Settings::default(),
        }
    }
}

fn invalid(pos: Pos, reason: impl Into<String>) -> ParamsError {
    ParamsError::Invalid { pos, reason: reason.into() }
}

fn as_bool(n: &Node, key: &str) -> Result<bool, ParamsError> {
    match n.value {
        Value::Bool(b) => Ok(b),
        _ => Err(invalid(n.pos, format!("{key} must be true or false"))),
    }
}

fn as_int(n: &Node, key: &str) -> Result<i64, ParamsError> {
    match n.value {
        Value::Int(i) => Ok(i),
        _ => Err(invalid(n.pos, format!("{key} must be an integer"))),
    }
}

fn as_float(n: &Node, key: &str) -> Result<f64, ParamsError> {
    match n.value {
        Value::Int(i) => Ok(i as f64),
        Value::Float(f) => Ok(f),
        _ => Err(invalid(n.pos, format!("{key} must be a number"))),
    }
}

fn as_str<'a>(n: &'a Node, key: &str) -> Result<&'a str, ParamsError> {
    match &n.value {
        Value::Str(s) => Ok(s),
        _ => Err(invalid(n.pos, format!("{key} must be a string"))),
    }
}

fn seq<'a>(n: &'a Node, key: &str) -> Result<&'a [Node], ParamsError> {
    match &n.value {
        Value::Seq(v) => Ok(v),
        _ => Err(invalid(n.pos, format!("{key} must be a list"))),
    }
}

fn range_check(
    n: &Node,
    key: &str,
    v: f64,
    min: Option<f64>,
    min_ex: Option<f64>,
    max: Option<f64>,
) -> Result<(), ParamsError> {
    if min.is_some_and(|m| v < m) || min_ex.is_some_and(|m| v <= m) || max.is_some_and(|m| v > m) {
        let mut bounds = Vec::new();
        if let Some(m) = min {
            bounds.push(format!("at least {m}"));
        }
        if let Some(m) = min_ex {
            bounds.push(format!("above {m}"));
        }
        if let Some(m) = max {
            bounds.push(format!("at most {m}"));
        }
        return Err(invalid(n.pos, format!("{key} must be {}", bounds.join(" and "))));
    }
    Ok(())
}

/// Applies one `setting` key to `s`, as PyRadiomics' schema checks it.
pub fn apply_setting(s: &mut Settings, key: &str, kpos: Pos, n: &Node) -> Result<(), ParamsError> {
    let int_in = |min: Option<f64>, min_ex: Option<f64>, max: Option<f64>| -> Result<i64, ParamsError> {
        let v = as_int(n, key)?;
        range_check(n, key, v as f64, min, min_ex, max)?;
        Ok(v)
    };
    let float_in = |min: Option<f64>, min_ex: Option<f64>| -> Result<f64, ParamsError> {
        let v = as_float(n, key)?;
        range_check(n, key, v, min, min_ex, None)?;
        Ok(v)
    };
    let null = matches!(n.value, Value::Null);
    match key {
        "minimumROIDimensions" => s.minimum_roi_dimensions = int_in(Some(1.0), None, Some(3.0))?,
        "minimumROISize" => s.minimum_roi_size = if null { None } else { Some(int_in(None, Some(0.0), None)?) },
        "geometryTolerance" => s.geometry_tolerance = if null { None } else { Some(float_in(None, Some(0.0))?) },
        "correctMask" => s.correct_mask = as_bool(n, key)?,
        "additionalInfo" => s.additional_info = as_bool(n, key)?,
        "label" => s.label = int_in(None, Some(0.0), None)?,
        "label_channel" => s.label_channel = int_in(Some(0.0), None, None)?,
        "binWidth" => s.bin_width = float_in(None, Some(0.0))?,
        "binCount" => s.bin_count = if null { None } else { Some(int_in(None, Some(0.0), None)?) },
        "normalize" => s.normalize = as_bool(n, key)?,
        "normalizeScale" => s.normalize_scale = float_in(None, Some(0.0))?,
        "removeOutliers" => s.remove_outliers = if null { None } else { Some(float_in(None, Some(0.0))?) },
        "resampledPixelSpacing" => {
            s.resampled_pixel_spacing = if null {
                None
            } else {
                let mut v = Vec::new();
                for item in seq(n, key)? {
                    let f = as_float(item, key)?;
                    range_check(item, key, f, Some(0.0), None, None)?;
                    v.push(f);
                }
                Some(v)
            }
        }
        "interpolator" => {
            // PyRadiomics accepts every SimpleITK interpolator name (or its
            // number, 1 to 10); edgeseg implements three of them exactly.
            const KNOWN: [&str; 10] = [
                "sitkNearestNeighbor",
                "sitkLinear",
                "sitkBSpline",
                "sitkGaussian",
                "sitkLabelGaussian",
                "sitkHammingWindowedSinc",
                "sitkCosineWindowedSinc",
                "sitkWelchWindowedSinc",
                "sitkLanczosWindowedSinc",
                "sitkBlackmanWindowedSinc",
            ];
            const SUPPORTED: [&str; 3] = ["sitkNearestNeighbor", "sitkLinear", "sitkBSpline"];
            s.interpolator = match &n.value {
                Value::Null => None,
                Value::Str(name) => {
                    if !KNOWN.contains(&name.as_str()) {
                        return Err(invalid(n.pos, format!("interpolator {name} is not one of {}", KNOWN.join(", "))));
                    }
                    if !SUPPORTED.contains(&name.as_str()) {
                        return Err(invalid(
                            n.pos,
                            format!("interpolator {name} is not supported by edgeseg ({} are)", SUPPORTED.join(", ")),
                        ));
                    }
                    Some(name.clone())
                }
                // SimpleITK's enum: 1 nearest neighbour, 2 linear; sitkBSpline
                // is 23 in SimpleITK 2.x, outside PyRadiomics' range 1 to 10.
                Value::Int(1) => Some("sitkNearestNeighbor".to_string()),
                Value::Int(2) => Some("sitkLinear".to_string()),
                Value::Int(i) if (3..=10).contains(i) => {
                    return Err(invalid(
                        n.pos,
                        format!(
                            "interpolator {i} is not supported by edgeseg (1 sitkNearestNeighbor, 2 sitkLinear, or the name sitkBSpline)"
                        ),
                    ));
                }
                _ => return Err(invalid(n.pos, "interpolator must be an interpolator name or 1 to 10")),
            }
        }
        "padDistance" => s.pad_distance = int_in(Some(0.0), None, None)?,
        "distances" => {
            let mut v = Vec::new();
            for item in seq(n, key)? {
                let d = as_int(item, key)?;
                range_check(item, key, d as f64, None, Some(0.0), None)?;
                v.push(d);
            }
            s.distances = v;
        }
        "force2D" => s.force_2d = as_bool(n, key)?,
        "force2Ddimension" => s.force_2d_dimension = int_in(Some(0.0), None, Some(2.0))?,
        "resegmentRange" => {
            s.resegment_range = if null {
                None
            } else {
                let v = seq(n, key)?.iter().map(|i| as_float(i, key)).collect::<Result<Vec<_>, _>>()?;
                if v.is_empty() || v.len() > 2 {
                    return Err(invalid(n.pos, "resegmentRange must hold one or two values"));
                }
                Some(v)
            }
        }
        "resegmentMode" => {
            s.resegment_mode = match as_str(n, key)? {
                "absolute" => ResegmentMode::Absolute,
                "relative" => ResegmentMode::Relative,
                "sigma" => ResegmentMode::Sigma,
                other => {
                    return Err(invalid(n.pos, format!("resegmentMode {other} is not absolute, relative or sigma")));
                }
            }
        }
        "resegmentShape" => s.resegment_shape = as_bool(n, key)?,
        "preCrop" => s.pre_crop = as_bool(n, key)?,
        "sigma" => {
            let mut v = Vec::new();
            let mut text = Vec::new();
            for item in seq(n, key)? {
                let f = as_float(item, key)?;
                range_check(item, key, f, None, Some(0.0), None)?;
                v.push(f);
                // PyRadiomics names the image with Python's str() of the value
                // as the file wrote it: 3 gives log-sigma-3-mm-3D, 3.0 log-sigma-3-0-mm-3D.
                text.push(match item.value {
                    Value::Int(i) => i.to_string(),
                    _ => python_float_str(f),
                });
            }
            s.sigma = v;
            s.sigma_text = text;
        }
        "start_level" => s.start_level = int_in(Some(0.0), None, None)?,
        "level" => s.level = int_in(None, Some(0.0), None)?,
        "wavelet" => {
            let w = as_str(n, key)?;
            if w != "coif1" {
                return Err(invalid(n.pos, format!("wavelet {w} is not supported (coif1 is)")));
            }
            s.wavelet = w.to_string();
        }
        "gradientUseSpacing" => s.gradient_use_spacing = as_bool(n, key)?,
        "lbp3DLevels" => s.lbp3d_levels = int_in(Some(1.0), None, None)?,
        "lbp3DIcosphereRadius" => s.lbp3d_icosphere_radius = float_in(None, Some(0.0))?,
        "lbp3DIcosphereSubdivision" => s.lbp3d_icosphere_subdivision = int_in(Some(0.0), None, None)?,
        "lbp2DRadius" => s.lbp2d_radius = float_in(None, Some(0.0))?,
        "lbp2DSamples" => s.lbp2d_samples = int_in(Some(1.0), None, None)?,
        "lbp2DMethod" => {
            s.lbp2d_method = match as_str(n, key)? {
                "default" => Lbp2DMethod::Default,
                "ror" => Lbp2DMethod::Ror,
                "uniform" => Lbp2DMethod::Uniform,
                "var" => Lbp2DMethod::Var,
                other => {
                    return Err(invalid(n.pos, format!("lbp2DMethod {other} is not default, ror, uniform or var")));
                }
            }
        }
        "voxelArrayShift" => s.voxel_array_shift = as_int(n, key)?,
        "symmetricalGLCM" => s.symmetrical_glcm = as_bool(n, key)?,
        "weightingNorm" => {
            s.weighting_norm = match &n.value {
                Value::Null => None,
                Value::Str(w) => Some(match w.as_str() {
                    "infinity" => WeightingNorm::Infinity,
                    "euclidean" => WeightingNorm::Euclidean,
                    "manhattan" => WeightingNorm::Manhattan,
                    "no_weighting" => WeightingNorm::NoWeighting,
                    other => {
                        return Err(invalid(
                            n.pos,
                            format!("weightingNorm {other} is not euclidean, manhattan, infinity or no_weighting"),
                        ));
                    }
                }),
                _ => return Err(invalid(n.pos, "weightingNorm must be a name or null")),
            }
        }
        "gldm_a" => s.gldm_a = int_in(Some(0.0), None, None)?,
        _ => return Err(invalid(kpos, format!("unknown setting {key}"))),
    }
    if !s.explicit.iter().any(|k| k == key) {
        s.explicit.push(key.to_string());
    }
    Ok(())
}

/// Python's `str(float)`: the shortest round-trip digits, `.0` on whole
/// numbers, exponent notation below 1e-4 and from 1e16 (`1e-05`, `1e+16`).
pub fn python_float_str(f: f64) -> String {
    if f == 0.0 || (1e-4..1e16).contains(&f.abs()) {
        let t = format!("{f}");
        if t.contains('.') || !f.is_finite() { t } else { format!("{t}.0") }
    } else if f.is_finite() {
        let t = format!("{f:e}");
        match t.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => t,
        }
    } else if f.is_nan() {
        "nan".into()
    } else if f > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

fn map<'a>(n: &'a Node, what: &str) -> Result<&'a [(String, Pos, Node)], ParamsError> {
    match &n.value {
        Value::Map(m) => Ok(m),
        _ => Err(invalid(n.pos, format!("{what} must be a mapping"))),
    }
}

impl Params {
    /// Reads a parameter file.
    pub fn from_file(path: &Path) -> Result<Params, ParamsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ParamsError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Params::from_text(&text)
    }

    /// Parses a parameter file's text (YAML or JSON).
    pub fn from_text(text: &str) -> Result<Params, ParamsError> {
        let root = parse_tree(text)?;
        let mut p = Params::default();
        let entries: &[(String, Pos, Node)] = match &root.value {
            Value::Null => &[],
            _ => map(&root, "the parameter file")?,
        };
        let mut image_types = Vec::new();
        let mut classes = Vec::new();
        for (key, kpos, node) in entries {
            match key.as_str() {
                "setting" => {
                    if matches!(node.value, Value::Null) {
                        continue;
                    }
                    for (k, kp, v) in map(node, "setting")? {
                        apply_setting(&mut p.settings, k, *kp, v)?;
                    }
                }
                "voxelSetting" => {
                    return Err(invalid(
                        *kpos,
                        "voxelSetting is not supported: edgeseg extracts segment-based features",
                    ));
                }
                "imageType" => {
                    for (k, kp, v) in map(node, "imageType")? {
                        let Some((t, _)) = ImageType::ALL.iter().find(|(_, n)| n == k) else {
                            return Err(invalid(*kp, format!("unknown image type {k}")));
                        };
                        let mut custom = Vec::new();
                        if !matches!(v.value, Value::Null) {
                            let mut probe = Settings::default();
                            for (sk, skp, sv) in map(v, k)? {
                                apply_setting(&mut probe, sk, *skp, sv)?;
                                custom.push((sk.clone(), sv.clone()));
                            }
                        }
                        image_types.push((*t, custom));
                    }
                }
                "featureClass" => {
                    if matches!(node.value, Value::Null) {
                        return Err(invalid(node.pos, "featureClass must be a mapping"));
                    }
                    for (k, kp, v) in map(node, "featureClass")? {
                        let Some(c) = FeatureClass::NAMED.iter().find(|c| c.name() == k) else {
                            return Err(invalid(*kp, format!("unknown feature class {k}")));
                        };
                        let mut names = Vec::new();
                        match &v.value {
                            Value::Null => {}
                            Value::Seq(items) => {
                                for item in items {
                                    let name = as_str(item, k)?;
                                    if !c.features().iter().any(|(f, _)| *f == name) {
                                        return Err(invalid(item.pos, format!("{k} has no feature {name}")));
                                    }
                                    names.push(name.to_string());
                                }
                            }
                            _ => return Err(invalid(v.pos, format!("{k} must be a list of feature names or empty"))),
                        }
                        classes.push((*c, names));
                    }
                }
                other => {
                    return Err(invalid(
                        *kpos,
                        format!("unknown key {other} (expected imageType, featureClass, setting)"),
                    ));
                }
            }
        }
        if !image_types.is_empty() {
            p.image_types = image_types;
        }
        if !classes.is_empty() {
            p.feature_classes = classes;
        } else if !matches!(root.value, Value::Null) {
            // A parameter file without featureClass (or with an empty one)
            // enables every class PyRadiomics knows, shape2D included (its
            // constructor without a file leaves shape2D out).
            p.feature_classes = FeatureClass::NAMED.iter().map(|c| (*c, Vec::new())).collect();
        }
        Ok(p)
    }

    /// The settings for one image type: the file's settings plus that type's overrides.
    pub fn settings_for(&self, custom: &[(String, Node)]) -> Result<Settings, ParamsError> {
        let mut s = self.settings.clone();
        for (k, v) in custom {
            apply_setting(&mut s, k, v.pos, v)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_pyradiomics() {
        let p = Params::from_text("").expect("empty file");
        assert_eq!(p.settings.bin_width, 25.0);
        assert_eq!(p.settings.distances, vec![1]);
        assert_eq!(p.settings.label, 1);
        assert_eq!(p.image_types.len(), 1);
        assert_eq!(p.feature_classes.len(), 7);
    }

    #[test]
    fn yaml_file_is_read() {
        let text = "imageType:\n  Original: {}\n  LoG:\n    sigma: [1.0, 3.0]\nfeatureClass:\n  shape:\n  glcm: [Contrast, Idmn]\nsetting:\n  binWidth: 10\n  label: 2\n  weightingNorm: euclidean\n";
        let p = Params::from_text(text).expect("valid file");
        assert_eq!(p.settings.bin_width, 10.0);
        assert_eq!(p.settings.label, 2);
        assert_eq!(p.settings.weighting_norm, Some(WeightingNorm::Euclidean));
        assert_eq!(p.image_types[1].0, ImageType::LoG);
        let s = p.settings_for(&p.image_types[1].1).expect("overrides");
        assert_eq!(s.sigma, vec![1.0, 3.0]);
        assert_eq!(p.feature_classes[1], (FeatureClass::Glcm, vec!["Contrast".to_string(), "Idmn".to_string()]));
    }

    #[test]
    fn json_file_is_read() {
        let p =
            Params::from_text(r#"{"setting": {"binCount": 32}, "featureClass": {"firstorder": []}}"#).expect("json");
        assert_eq!(p.settings.bin_count, Some(32));
        assert_eq!(p.feature_classes, vec![(FeatureClass::FirstOrder, Vec::new())]);
    }

    #[test]
    fn a_file_without_feature_class_enables_shape2d() {
        let p = Params::from_text("setting:\n  force2D: true\n").expect("file");
        assert!(p.feature_classes.iter().any(|(c, _)| *c == FeatureClass::Shape2D));
        assert_eq!(p.feature_classes.len(), 8);
        assert!(!Params::default().feature_classes.iter().any(|(c, _)| *c == FeatureClass::Shape2D));
        let p = Params::from_text("featureClass:\n  shape2D: [Perimeter]\n").expect("named");
        assert_eq!(p.feature_classes, vec![(FeatureClass::Shape2D, vec!["Perimeter".to_string()])]);
    }

    #[test]
    fn lbp_settings_follow_the_schema() {
        let p = Params::from_text(
            "setting:\n  lbp2DRadius: 2\n  lbp2DSamples: 12\n  lbp2DMethod: ror\n  lbp3DIcosphereSubdivision: 0\n",
        )
        .expect("lbp");
        assert_eq!(p.settings.lbp2d_radius, 2.0);
        assert_eq!(p.settings.lbp2d_samples, 12);
        assert_eq!(p.settings.lbp2d_method, Lbp2DMethod::Ror);
        assert_eq!(p.settings.lbp3d_icosphere_subdivision, 0);
        let e = Params::from_text("setting:\n  lbp2DRadius: 0\n").expect_err("radius");
        assert_eq!(e.to_string(), "line 2 column 16: lbp2DRadius must be above 0");
        let e = Params::from_text("setting:\n  lbp2DMethod: nri_uniform\n").expect_err("method");
        assert_eq!(e.to_string(), "line 2 column 16: lbp2DMethod nri_uniform is not default, ror, uniform or var");
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let e = Params::from_text("setting:\n  binWidht: 25\n").expect_err("typo");
        assert_eq!(e.to_string(), "line 2 column 3: unknown setting binWidht");
        let e = Params::from_text("featureClass:\n  glcm: [Contrast, Nope]\n").expect_err("feature");
        assert_eq!(e.to_string(), "line 2 column 20: glcm has no feature Nope");
        let e = Params::from_text("setting:\n  binWidth: -1\n").expect_err("range");
        assert_eq!(e.to_string(), "line 2 column 13: binWidth must be above 0");
    }
}
