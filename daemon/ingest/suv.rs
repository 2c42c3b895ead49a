//! SUV after the QIBA vendor-neutral pseudo-code and the IBSI-affiliated SUV
//! manual (Vácha, Zwanenburg et al., oncoray/suv_computation `docs/suv.docx`).
//!
//! The factor returned multiplies the *rescaled* stored value (stored × slope +
//! intercept) and gives SUV of [`Suv::kind`]: body-weight SUV (g/ml) whenever
//! the headers allow it. Stored values already in SUV of another kind (Units
//! GML with SUVType LBM or IBW, Units CM2ML) are converted to SUVbw with the
//! patient's lean body mass, ideal body weight or body surface area, or kept in
//! their own kind with the reason they could not be converted. Every input of
//! the formula is checked for plausibility (see [`limits`]); when the headers
//! do not allow an SUV the reason is returned instead, never a number.
//!
//! Timing is per slice: [`compute`] is called with the slice's own acquisition
//! time, so a series whose SeriesTime is after its acquisition (several beds
//! or frames) is back-computed per slice, and DecayCorrection NONE is decay
//! corrected per slice.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde::Serialize;

use super::header::PetHeader;

/// Plausibility limits on the inputs of the SUV formula. A value outside
/// them makes the SUV unavailable (or, for a body size, the conversion).
pub mod limits {
    /// Injected dose, Bq (after the MBq rule): 1 MBq to 20 GBq.
    pub const DOSE_BQ: (f64, f64) = (1e6, 2e10);
    /// A RadionuclideTotalDose at or below this is read as MBq (×10⁶): no PET
    /// dose is 10 kBq, and 10 000 MBq is above any diagnostic dose.
    pub const DOSE_MBQ_BELOW: f64 = 1e4;
    /// Patient weight, kg.
    pub const WEIGHT_KG: (f64, f64) = (0.5, 500.0);
    /// A PatientWeight above this is read as grams.
    pub const WEIGHT_GRAMS_ABOVE: f64 = 1000.0;
    /// Patient height, m.
    pub const HEIGHT_M: (f64, f64) = (0.3, 2.75);
    /// A PatientSize above this is read as centimetres.
    pub const HEIGHT_CM_ABOVE: f64 = 3.0;
    /// Radionuclide half-life, s (Rb-82 76 s to beyond I-124 4.2 d).
    pub const HALF_LIFE_S: (f64, f64) = (60.0, 1e7);
    /// Decay time from injection to the time the values refer to, s: 0 to
    /// 24 h; with a full RadiopharmaceuticalStartDateTime also up to ten
    /// half-lives (Zr-89, I-124 are imaged days after injection).
    pub const DECAY_S: f64 = 86_400.0;
    /// Philips (7053,1000) SUV scale factor (counts to SUVbw).
    pub const PHILIPS_SUV_SCALE: (f64, f64) = (1e-9, 1.0);
    /// Philips (7053,1009) activity concentration scale factor (counts to Bq/ml).
    pub const PHILIPS_ACTIVITY_SCALE: (f64, f64) = (1e-6, 1e4);
    /// Lean body mass, ideal body weight: kg.
    pub const BODY_MASS_KG: (f64, f64) = (0.5, 300.0);
    /// Body surface area, m².
    pub const BSA_M2: (f64, f64) = (0.05, 5.0);
}

/// The normalisation of an SUV: SUVType (0054,1006), PS3.16 CID 85.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SuvKind {
    /// Body weight (g/ml).
    #[serde(rename = "SUVbw")]
    Bw,
    /// Lean body mass after James (1976), 128/148 (g/ml).
    #[serde(rename = "SUVlbm-James")]
    LbmJames,
    /// Lean body mass after Janmahasatian (2005) (g/ml).
    #[serde(rename = "SUVlbm-Janmahasatian")]
    LbmJanmahasatian,
    /// Ideal body weight after Devine (1974) (g/ml).
    #[serde(rename = "SUVibw")]
    Ibw,
    /// Body surface area after DuBois & DuBois (1916) (cm²/ml).
    #[serde(rename = "SUVbsa")]
    Bsa,
}

impl SuvKind {
    /// The name as serialised (`SUVbw`, `SUVlbm-James`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SuvKind::Bw => "SUVbw",
            SuvKind::LbmJames => "SUVlbm-James",
            SuvKind::LbmJanmahasatian => "SUVlbm-Janmahasatian",
            SuvKind::Ibw => "SUVibw",
            SuvKind::Bsa => "SUVbsa",
        }
    }

    /// The unit of its values.
    pub fn unit(self) -> &'static str {
        if self == SuvKind::Bsa { "cm2/ml" } else { "g/ml" }
    }
}

/// How the SUV factor was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SuvMethod {
    /// Units BQML, decay from injection to SeriesDate/SeriesTime.
    #[serde(rename = "BQML")]
    Bqml,
    /// Units BQML, series time after acquisition: GE private scan date-time (0009,100D).
    #[serde(rename = "BQML-GE-private-scan-time")]
    BqmlGePrivateScanTime,
    /// Units BQML, series time after acquisition, no GE tag: scan start back-computed
    /// per slice from its own acquisition time, FrameReferenceTime and ActualFrameDuration.
    #[serde(rename = "BQML-frame-reference-time")]
    BqmlFrameReferenceTime,
    /// Enhanced PET: decay from injection to DecayCorrectionDateTime (0018,9701).
    #[serde(rename = "BQML-decay-correction-date-time")]
    BqmlDecayCorrectionDateTime,
    /// Units BQML with DecayCorrection ADMIN: already decay-corrected to injection.
    #[serde(rename = "BQML-ADMIN")]
    BqmlAdmin,
    /// Units BQML with DecayCorrection NONE: each slice decay-corrected from
    /// injection to the time of its frame's mean activity.
    #[serde(rename = "BQML-NONE-per-slice")]
    BqmlNone,
    /// Units CNTS with the Philips private SUV scale factor (7053,1000).
    #[serde(rename = "CNTS-philips-suv-scale")]
    CntsPhilipsSuvScale,
    /// Units CNTS: Philips (7053,1009) to Bq/ml, then as BQML.
    #[serde(rename = "CNTS-philips-activity-scale")]
    CntsPhilipsActivityScale,
    /// Units GML: the values are SUV already (of the kind SUVType names).
    #[serde(rename = "GML")]
    Gml,
    /// Units CM2ML: the values are SUVbsa already.
    #[serde(rename = "CM2ML")]
    Cm2ml,
}

/// The body size that converts stored SUV of another kind to SUVbw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodySize {
    /// The kind the stored values are in.
    pub stored_kind: SuvKind,
    /// Lean body mass or ideal body weight (kg), or body surface area (m²).
    pub value: f64,
    /// `kg` or `m2`.
    pub unit: &'static str,
    /// The formula, as the manual names it.
    pub formula: &'static str,
    /// SUVbw = stored value × this (weight / body size).
    pub to_suvbw: f64,
}

/// A computed SUV conversion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suv {
    /// Multiply a rescaled stored value by this to get SUV of `kind` (the
    /// series reports its first slice's; see `per_slice` when slices differ).
    pub factor: f64,
    /// The kind of SUV the factor gives: SUVbw unless stored SUV of another
    /// kind could not be converted (`not_converted` says why).
    pub kind: SuvKind,
    /// How it was found.
    pub method: SuvMethod,
    /// Multiply a rescaled stored value by this to get Bq/ml, where known.
    pub to_bqml: Option<f64>,
    /// Seconds of decay from injection to the time the values refer to, where used.
    pub decay_seconds: Option<f64>,
    /// The injected dose decayed to that time, in Bq, where used.
    pub decayed_dose_bq: Option<f64>,
    /// The scan start the decay was computed to (ISO 8601), where used.
    pub scan_date_time: Option<String>,
    /// The injected dose in Bq, after the unit rule, where used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected_dose_bq: Option<f64>,
    /// The patient weight in kg, after the unit rule, where used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_kg: Option<f64>,
    /// Stored SUV of another kind converted to SUVbw with this body size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<BodySize>,
    /// Stored SUV of another kind kept as it is: why it could not be converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_converted: Option<String>,
    /// Slices with factors of their own (several frames or beds): the range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_slice: Option<PerSlice>,
    /// Inputs read in a unit or place other than the standard's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The spread of per-slice factors over a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerSlice {
    /// Smallest factor.
    pub min_factor: f64,
    /// Largest factor.
    pub max_factor: f64,
    /// Shortest decay time (s).
    pub min_decay_seconds: Option<f64>,
    /// Longest decay time (s).
    pub max_decay_seconds: Option<f64>,
}

impl Suv {
    fn new(factor: f64, kind: SuvKind, method: SuvMethod) -> Self {
        Suv {
            factor,
            kind,
            method,
            to_bqml: None,
            decay_seconds: None,
            decayed_dose_bq: None,
            scan_date_time: None,
            injected_dose_bq: None,
            weight_kg: None,
            converted_from: None,
            not_converted: None,
            per_slice: None,
            warnings: Vec::new(),
        }
    }
}

/// Parses a DICOM DA value (YYYYMMDD; the old YYYY.MM.DD form too).
pub fn parse_da(s: &str) -> Option<NaiveDate> {
    let d: String = s.trim().chars().filter(|c| c.is_ascii_digit()).collect();
    if d.len() != 8 {
        return None;
    }
    NaiveDate::from_ymd_opt(d[0..4].parse().ok()?, d[4..6].parse().ok()?, d[6..8].parse().ok()?)
}

/// Parses a DICOM TM value (HH, HHMM, HHMMSS, HHMMSS.FFFFFF; old HH:MM:SS too).
pub fn parse_tm(s: &str) -> Option<NaiveTime> {
    let s = s.trim().replace(':', "");
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w.to_string(), f.to_string()),
        None => (s.clone(), String::new()),
    };
    if whole.is_empty() || whole.len() % 2 != 0 || whole.len() > 6 || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: u32 = whole[0..2].parse().ok()?;
    let m: u32 = if whole.len() >= 4 { whole[2..4].parse().ok()? } else { 0 };
    let sec: u32 = if whole.len() >= 6 { whole[4..6].parse().ok()? } else { 0 };
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().take(6).collect();
        if !f.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{f:0<6}").parse().ok()?
    };
    // A leap second (60) is clamped to 59.999999 rather than rejected.
    if sec == 60 {
        return NaiveTime::from_hms_micro_opt(h, m, 59, 999_999);
    }
    NaiveTime::from_hms_micro_opt(h, m, sec, micros)
}

/// Parses a DICOM DT value (YYYYMMDDHHMMSS.FFFFFF, optional &ZZXX offset ignored:
/// all times of one study are on the scanner's clock).
pub fn parse_dt(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let s = s.split(['+', '-']).next().unwrap_or(s);
    if s.len() < 8 {
        return None;
    }
    let date = parse_da(&s[0..8])?;
    let time = if s.len() > 8 { parse_tm(&s[8..])? } else { NaiveTime::MIN };
    Some(NaiveDateTime::new(date, time))
}

fn iso(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_microseconds().map_or(d.num_seconds() as f64, |us| us as f64 / 1e6)
}

/// What is plausible, by the limits of [`limits`]: the value if inside `range`.
fn within(v: f64, range: (f64, f64)) -> bool {
    v.is_finite() && v >= range.0 && v <= range.1
}

/// RadionuclideTotalDose in Bq: the manual's unit rule (a value this small is
/// MBq), then the plausible range.
pub fn dose_bq(raw: Option<f64>, warnings: &mut Vec<String>) -> Result<f64, String> {
    let raw = raw.ok_or("RadionuclideTotalDose (0018,1074) is missing")?;
    if !(raw.is_finite() && raw > 0.0) {
        return Err(format!("RadionuclideTotalDose (0018,1074) {raw} is not positive"));
    }
    let bq = if raw <= limits::DOSE_MBQ_BELOW {
        warnings.push(format!("RadionuclideTotalDose {raw} read as MBq ({:.6e} Bq)", raw * 1e6));
        raw * 1e6
    } else {
        raw
    };
    if !within(bq, limits::DOSE_BQ) {
        return Err(format!(
            "RadionuclideTotalDose (0018,1074) {raw} is implausible ({:.0e} to {:.0e} Bq, or MBq up to {})",
            limits::DOSE_BQ.0,
            limits::DOSE_BQ.1,
            limits::DOSE_MBQ_BELOW
        ));
    }
    Ok(bq)
}

/// PatientWeight in kg: grams recognised, then the plausible range.
pub fn weight_kg(raw: Option<f64>, warnings: &mut Vec<String>) -> Result<f64, String> {
    let raw = raw.ok_or("PatientWeight (0010,1030) is missing")?;
    if !(raw.is_finite() && raw > 0.0) {
        return Err(format!("PatientWeight (0010,1030) {raw} is not positive"));
    }
    let kg = if raw > limits::WEIGHT_GRAMS_ABOVE {
        warnings.push(format!("PatientWeight {raw} read as grams ({} kg)", raw / 1000.0));
        raw / 1000.0
    } else {
        raw
    };
    if !within(kg, limits::WEIGHT_KG) {
        return Err(format!(
            "PatientWeight (0010,1030) {raw} is implausible ({} to {} kg, or grams above {})",
            limits::WEIGHT_KG.0,
            limits::WEIGHT_KG.1,
            limits::WEIGHT_GRAMS_ABOVE
        ));
    }
    Ok(kg)
}

/// PatientSize in m: centimetres recognised, then the plausible range.
pub fn height_m(raw: Option<f64>, warnings: &mut Vec<String>) -> Result<f64, String> {
    let raw = raw.ok_or("PatientSize (0010,1020) is missing")?;
    if !(raw.is_finite() && raw > 0.0) {
        return Err(format!("PatientSize (0010,1020) {raw} is not positive"));
    }
    let m = if raw > limits::HEIGHT_CM_ABOVE {
        warnings.push(format!("PatientSize {raw} read as centimetres ({} m)", raw / 100.0));
        raw / 100.0
    } else {
        raw
    };
    if !within(m, limits::HEIGHT_M) {
        return Err(format!(
            "PatientSize (0010,1020) {raw} is implausible ({} to {} m, or cm)",
            limits::HEIGHT_M.0,
            limits::HEIGHT_M.1
        ));
    }
    Ok(m)
}

/// The kind of SUV stored values are in, from Units and SUVType.
fn stored_kind(units: &str, suv_type: Option<&str>) -> Result<SuvKind, String> {
    let t = suv_type.unwrap_or(if units == "CM2ML" { "BSA" } else { "BW" });
    let kind = match t {
        "BW" => SuvKind::Bw,
        // Plain LBM: the manual's and the vendors' (GE) default, James.
        "LBM" | "LBMJAM" | "LBMJAMES" | "LBMJAMES128" => SuvKind::LbmJames,
        "LBMJANMA" | "LBMJANMAHASATIAN" => SuvKind::LbmJanmahasatian,
        "IBW" => SuvKind::Ibw,
        "BSA" => SuvKind::Bsa,
        other => return Err(format!("SUVType (0054,1006) {other} is not one of BW, LBM, LBMJAM, LBMJANMA, IBW, BSA")),
    };
    match (units, kind) {
        ("CM2ML", SuvKind::Bsa) => Ok(kind),
        ("CM2ML", k) => Err(format!("Units CM2ML with SUVType {t}: {} is in g/ml, not cm2/ml", k.name())),
        (_, SuvKind::Bsa) => Err(format!("Units {units} with SUVType BSA: SUVbsa is in cm2/ml (Units CM2ML)")),
        _ => Ok(kind),
    }
}

/// The body size that turns stored SUV of `kind` into SUVbw, or why none.
fn body_size(p: &PetHeader, kind: SuvKind, warnings: &mut Vec<String>) -> Result<BodySize, String> {
    let w = weight_kg(p.weight_kg, warnings)?;
    let h = height_m(p.height_m, warnings)?;
    let sex = p.sex.as_deref().unwrap_or("");
    let male = match sex {
        "M" => true,
        "F" => false,
        // Body surface area does not depend on sex.
        _ if kind == SuvKind::Bsa => true,
        _ => {
            return Err(format!(
                "{} needs PatientSex (0010,0040) M or F, found {}",
                kind.name(),
                if sex.is_empty() { "none" } else { sex }
            ));
        }
    };
    let h_cm = h * 100.0;
    let (value, unit, formula) = match kind {
        SuvKind::LbmJames => {
            let (a, b) = if male { (1.10, 128.0) } else { (1.07, 148.0) };
            (a * w - b * (w / h_cm).powi(2), "kg", "James 1976: 1.10·W − 128·(W/H)² (M), 1.07·W − 148·(W/H)² (F)")
        }
        SuvKind::LbmJanmahasatian => {
            let bmi = w / (h * h);
            let (a, b) = if male { (6680.0, 216.0) } else { (8780.0, 244.0) };
            (
                9270.0 * w / (a + b * bmi),
                "kg",
                "Janmahasatian 2005: 9270·W/(6680 + 216·BMI) (M), 9270·W/(8780 + 244·BMI) (F)",
            )
        }
        SuvKind::Ibw => {
            let base = if male { 50.0 } else { 45.5 };
            (base + 2.3 * (h_cm / 2.54 - 60.0), "kg", "Devine 1974: 50 (M) or 45.5 (F) + 2.3 kg per inch over 60 in")
        }
        SuvKind::Bsa => {
            (0.007184 * w.powf(0.425) * h_cm.powf(0.725), "m2", "DuBois & DuBois 1916: 0.007184·W^0.425·H^0.725")
        }
        SuvKind::Bw => (w, "kg", "body weight"),
    };
    let range = if unit == "m2" { limits::BSA_M2 } else { limits::BODY_MASS_KG };
    if !within(value, range) {
        return Err(format!(
            "{} from weight {w} kg and height {h} m is {value:.3} {unit}, outside {}–{} {unit}",
            kind.name(),
            range.0,
            range.1
        ));
    }
    // SUVbw = SUVx · W / X; for BSA, W in g over BSA in cm².
    let to_suvbw = if kind == SuvKind::Bsa { w * 1000.0 / (value * 1e4) } else { w / value };
    Ok(BodySize { stored_kind: kind, value, unit, formula, to_suvbw })
}

/// Computes the SUV factor for one slice of a PET instance.
///
/// `earliest_acquisition` is the earliest AcquisitionDate/Time (or
/// AcquisitionDateTime) over the series, `acquisition` the slice's own, both
/// as DICOM DT text.
pub fn compute(p: &PetHeader, earliest_acquisition: Option<&str>, acquisition: Option<&str>) -> Result<Suv, String> {
    let units = p.units.as_deref().ok_or("Units (0054,1001) is missing")?;
    let mut warnings = Vec::new();
    if p.philips_without_creator {
        warnings.push(
            "Philips (7053,1000)/(7053,1009) read without their private creator \"Philips PET Private Group\""
                .to_string(),
        );
    }
    let mut s = match units {
        "GML" | "CM2ML" => {
            let kind = stored_kind(units, p.suv_type.as_deref())?;
            let method = if units == "GML" { SuvMethod::Gml } else { SuvMethod::Cm2ml };
            let mut s = Suv::new(1.0, kind, method);
            if kind != SuvKind::Bw {
                match body_size(p, kind, &mut warnings) {
                    Ok(b) => {
                        s.factor = b.to_suvbw;
                        s.kind = SuvKind::Bw;
                        s.weight_kg = weight_kg(p.weight_kg, &mut Vec::new()).ok();
                        s.converted_from = Some(b);
                    }
                    Err(why) => s.not_converted = Some(why),
                }
            }
            s
        }
        "CNTS" => {
            if let Some(f) = p.philips_suv_scale {
                if !within(f, limits::PHILIPS_SUV_SCALE) {
                    return Err(format!(
                        "Philips SUV scale factor (7053,1000) {f} is implausible ({:e} to {})",
                        limits::PHILIPS_SUV_SCALE.0,
                        limits::PHILIPS_SUV_SCALE.1
                    ));
                }
                let mut s = Suv::new(f, SuvKind::Bw, SuvMethod::CntsPhilipsSuvScale);
                s.to_bqml = p.philips_activity_scale.filter(|a| within(*a, limits::PHILIPS_ACTIVITY_SCALE));
                s
            } else {
                let a = p.philips_activity_scale.ok_or(
                    "Units CNTS without the Philips SUV scale factor (7053,1000) or activity concentration scale factor (7053,1009)",
                )?;
                if !within(a, limits::PHILIPS_ACTIVITY_SCALE) {
                    return Err(format!(
                        "Philips activity concentration scale factor (7053,1009) {a} is implausible ({:e} to {})",
                        limits::PHILIPS_ACTIVITY_SCALE.0,
                        limits::PHILIPS_ACTIVITY_SCALE.1
                    ));
                }
                let mut s = bqml(p, earliest_acquisition, acquisition, &mut warnings)?;
                s.factor *= a;
                s.to_bqml = Some(a);
                s.method = SuvMethod::CntsPhilipsActivityScale;
                s
            }
        }
        "BQML" => bqml(p, earliest_acquisition, acquisition, &mut warnings)?,
        _ => return Err(format!("Units {units} cannot be converted to SUV (BQML, CNTS, GML or CM2ML needed)")),
    };
    if !(s.factor.is_finite() && s.factor > 0.0) {
        return Err(format!("the SUV factor {} is not a positive number", s.factor));
    }
    s.warnings = warnings;
    Ok(s)
}

/// Seconds within a frame of duration `duration_s` at which the decaying
/// activity equals the frame's mean: (1/λ)·ln(λT / (1 − e^(−λT))).
fn mean_activity_offset(lambda: f64, duration_s: f64) -> f64 {
    let x = lambda * duration_s;
    (x / -(-x).exp_m1()).ln() / lambda
}

/// The BQML branch: decay the injected dose to the time the values refer to.
fn bqml(
    p: &PetHeader,
    earliest_acquisition: Option<&str>,
    acquisition: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Suv, String> {
    let has = |v: &str| p.corrected_image.iter().any(|c| c.eq_ignore_ascii_case(v));
    let decay_correction = p.decay_correction.as_deref().ok_or("DecayCorrection (0054,1102) is missing")?;
    let none = decay_correction == "NONE";
    let (attn, decy) = (has("ATTN"), has("DECY"));
    if !(none || attn && decy) {
        return Err(format!("CorrectedImage (0028,0051) must contain ATTN and DECY, found {:?}", p.corrected_image));
    }
    if none && (decy || !attn) {
        return Err(format!(
            "DecayCorrection NONE: CorrectedImage (0028,0051) must contain ATTN and not DECY, found {:?}",
            p.corrected_image
        ));
    }
    let weight = weight_kg(p.weight_kg, warnings)?;
    let dose = dose_bq(p.total_dose_bq, warnings)?;
    let mut s = Suv::new(weight * 1000.0 / dose, SuvKind::Bw, SuvMethod::BqmlAdmin);
    s.to_bqml = Some(1.0);
    s.injected_dose_bq = Some(dose);
    s.weight_kg = Some(weight);
    match decay_correction {
        "ADMIN" => {
            s.decay_seconds = Some(0.0);
            s.decayed_dose_bq = Some(dose);
            return Ok(s);
        }
        "START" | "NONE" => {}
        other => return Err(format!("DecayCorrection {other} is not START, ADMIN or NONE")),
    }
    let half_life = p.half_life_s.ok_or("RadionuclideHalfLife (0018,1075) is missing")?;
    if !within(half_life, limits::HALF_LIFE_S) {
        return Err(format!(
            "RadionuclideHalfLife (0018,1075) {half_life} s is implausible ({} to {:e} s)",
            limits::HALF_LIFE_S.0,
            limits::HALF_LIFE_S.1
        ));
    }
    let lambda = std::f64::consts::LN_2 / half_life;
    let series_date = p.series_date.as_deref().and_then(parse_da).ok_or("SeriesDate is missing or invalid")?;
    let series_time = p.series_time.as_deref().and_then(parse_tm).ok_or("SeriesTime is missing or invalid")?;
    let series_dt = NaiveDateTime::new(series_date, series_time);
    let earliest = earliest_acquisition.and_then(parse_dt);
    let own = acquisition.and_then(parse_dt).or(earliest);
    let duration_s = p.actual_frame_duration_ms.filter(|d| d.is_finite() && *d > 0.0).map(|d| d / 1000.0);
    let offset = |secs: f64| TimeDelta::microseconds((secs * 1e6).round() as i64);

    let explicit = p.decay_correction_date_time.as_deref().and_then(parse_dt);
    let (reference, method) = if none {
        // Not decay corrected: each slice holds its frame's mean activity, so it
        // is corrected from injection to the instant of that mean.
        match (own, duration_s, p.frame_reference_time_ms) {
            (Some(acq), Some(t), _) => (acq + offset(mean_activity_offset(lambda, t)), SuvMethod::BqmlNone),
            (_, _, Some(frt)) if earliest.is_none_or(|e| series_dt <= e) => {
                (series_dt + offset(frt / 1000.0), SuvMethod::BqmlNone)
            }
            _ => {
                return Err(
                    "DecayCorrection NONE needs the slice's AcquisitionTime and ActualFrameDuration (or FrameReferenceTime from SeriesTime)"
                        .into(),
                );
            }
        }
    } else {
        match (explicit, earliest) {
            (Some(t), _) => (t, SuvMethod::BqmlDecayCorrectionDateTime),
            (None, Some(first)) if series_dt > first => {
                if let Some(ge) = p.ge_scan_date_time.as_deref() {
                    let t = parse_dt(ge)
                        .ok_or_else(|| format!("GE private scan date-time (0009,100D) {ge:?} is invalid"))?;
                    (t, SuvMethod::BqmlGePrivateScanTime)
                } else {
                    let frt = p.frame_reference_time_ms.ok_or(
                        "SeriesTime is after AcquisitionTime and neither the GE private scan time nor FrameReferenceTime is present",
                    )?;
                    let t =
                        duration_s.ok_or("SeriesTime is after AcquisitionTime and ActualFrameDuration is missing")?;
                    // This slice's frame: its acquisition start plus the time of its mean
                    // activity is FrameReferenceTime after the scan start.
                    let acq = own.unwrap_or(first);
                    (acq + offset(mean_activity_offset(lambda, t) - frt / 1000.0), SuvMethod::BqmlFrameReferenceTime)
                }
            }
            (None, _) => (series_dt, SuvMethod::Bqml),
        }
    };

    let (injection, full_date_time) = match p.start_date_time.as_deref().and_then(parse_dt) {
        Some(t) => (t, true),
        None => {
            if half_life > limits::DECAY_S {
                return Err(format!(
                    "RadiopharmaceuticalStartDateTime is missing: with a half-life of {:.1} h the uptake may exceed 24 h, \
                     and RadiopharmaceuticalStartTime alone cannot tell the day",
                    half_life / 3600.0
                ));
            }
            let t = p
                .start_time
                .as_deref()
                .and_then(parse_tm)
                .ok_or("RadiopharmaceuticalStartTime/StartDateTime is missing or invalid")?;
            let same_day = NaiveDateTime::new(reference.date(), t);
            // Injected before midnight, scanned after: the injection was the day before.
            (if same_day > reference { same_day - TimeDelta::days(1) } else { same_day }, false)
        }
    };
    let decay = seconds(reference - injection);
    if decay < 0.0 {
        return Err(format!("injection time {} is after the scan start {}", iso(injection), iso(reference)));
    }
    let limit = if full_date_time { limits::DECAY_S.max(10.0 * half_life) } else { limits::DECAY_S };
    if decay > limit {
        return Err(format!(
            "{:.2} h between injection and scan is implausible (0 to {:.0} h{})",
            decay / 3600.0,
            limit / 3600.0,
            if full_date_time { "" } else { " without a RadiopharmaceuticalStartDateTime" }
        ));
    }
    let decayed = dose * (-decay * lambda).exp();
    s.factor = weight * 1000.0 / decayed;
    s.method = method;
    s.decay_seconds = Some(decay);
    s.decayed_dose_bq = Some(decayed);
    s.scan_date_time = Some(iso(reference));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn siemens() -> PetHeader {
        PetHeader {
            units: Some("BQML".into()),
            decay_correction: Some("START".into()),
            corrected_image: vec!["DECY".into(), "ATTN".into(), "SCAT".into()],
            series_date: Some("20261123".into()),
            series_time: Some("100000".into()),
            weight_kg: Some(80.0),
            total_dose_bq: Some(200e6),
            half_life_s: Some(45720.0),
            start_time: Some("090000.00".into()),
            ..Default::default()
        }
    }

    #[test]
    fn parses_dicom_times() {
        assert_eq!(parse_tm("0930"), NaiveTime::from_hms_opt(9, 30, 0));
        assert_eq!(parse_tm("09:30:15"), NaiveTime::from_hms_opt(9, 30, 15));
        assert_eq!(parse_tm("093015.5"), NaiveTime::from_hms_micro_opt(9, 30, 15, 500_000));
        assert_eq!(parse_tm("9"), None);
        assert_eq!(parse_da("2026.11.23"), NaiveDate::from_ymd_opt(2026, 11, 23));
        let dt = parse_dt("20261123093015.25+0100").expect("valid DT");
        assert_eq!(dt.to_string(), "2026-11-23 09:30:15.250");
    }

    #[test]
    fn bqml_decays_from_injection_to_series_time() {
        let s = compute(&siemens(), Some("20261123100000"), None).expect("suv");
        let decayed = 200e6 * 0.5f64.powf(3600.0 / 45720.0);
        assert!((s.factor - 80.0 * 1000.0 / decayed).abs() / s.factor < 1e-12);
        assert_eq!(s.method, SuvMethod::Bqml);
        assert_eq!(s.decay_seconds, Some(3600.0));
    }

    #[test]
    fn midnight_crossing_uses_the_previous_day() {
        let mut p = siemens();
        p.series_date = Some("20261124".into());
        p.series_time = Some("004500".into());
        p.start_time = Some("234000".into());
        let s = compute(&p, None, None).expect("suv");
        assert_eq!(s.decay_seconds, Some(65.0 * 60.0));
    }

    #[test]
    fn ge_private_time_when_series_is_after_acquisition() {
        let mut p = siemens();
        p.series_time = Some("103000".into());
        p.ge_scan_date_time = Some("20261123100000.00".into());
        let s = compute(&p, Some("20261123100000"), None).expect("suv");
        assert_eq!(s.method, SuvMethod::BqmlGePrivateScanTime);
        assert_eq!(s.decay_seconds, Some(3600.0));
    }

    #[test]
    fn frame_reference_time_back_computation() {
        let mut p = siemens();
        p.series_time = Some("103000".into());
        p.frame_reference_time_ms = Some(0.0);
        p.actual_frame_duration_ms = Some(0.001);
        // A vanishing frame with reference time 0 starts at its acquisition time.
        let s = compute(&p, Some("20261123100000"), None).expect("suv");
        assert_eq!(s.method, SuvMethod::BqmlFrameReferenceTime);
        assert!((s.decay_seconds.expect("decay") - 3600.0).abs() < 1e-3);
    }

    #[test]
    fn philips_cnts() {
        let p = PetHeader {
            units: Some("CNTS".into()),
            philips_suv_scale: Some(0.000_123),
            philips_activity_scale: Some(2.5),
            ..Default::default()
        };
        let s = compute(&p, None, None).expect("suv");
        assert_eq!(s.factor, 0.000_123);
        assert_eq!(s.to_bqml, Some(2.5));
        let mut q = p.clone();
        q.philips_suv_scale = None;
        assert!(compute(&q, None, None).is_err(), "activity scale alone needs the BQML inputs");
        q.corrected_image = vec!["ATTN".into(), "DECY".into()];
        q.decay_correction = Some("START".into());
        q.weight_kg = Some(70.0);
        q.total_dose_bq = Some(1e8);
        q.half_life_s = Some(4062.6);
        q.series_date = Some("20261123".into());
        q.series_time = Some("100000".into());
        q.start_time = Some("090000".into());
        let s = compute(&q, None, None).expect("suv");
        assert_eq!(s.method, SuvMethod::CntsPhilipsActivityScale);
    }

    #[test]
    fn dose_weight_and_height_units_and_limits() {
        let mut w = Vec::new();
        assert_eq!(dose_bq(Some(368.08), &mut w), Ok(368.08e6));
        assert!(w[0].contains("MBq"), "{w:?}");
        assert_eq!(dose_bq(Some(368.08e6), &mut Vec::new()), Ok(368.08e6));
        for bad in [Some(5e4), Some(3e10), Some(-1.0), Some(0.0), Some(f64::NAN), None] {
            assert!(dose_bq(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        let mut w = Vec::new();
        assert_eq!(weight_kg(Some(70_000.0), &mut w), Ok(70.0));
        assert!(w[0].contains("grams"));
        for bad in [Some(700.0), Some(0.1), Some(0.0), None] {
            assert!(weight_kg(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        assert_eq!(height_m(Some(175.0), &mut Vec::new()), Ok(1.75));
        assert_eq!(height_m(Some(1.75), &mut Vec::new()), Ok(1.75));
        for bad in [Some(0.0), Some(2.9), Some(400.0), None] {
            assert!(height_m(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
    }

    fn gml(suv_type: &str, sex: Option<&str>) -> PetHeader {
        PetHeader {
            units: Some("GML".into()),
            suv_type: Some(suv_type.into()),
            sex: sex.map(Into::into),
            weight_kg: Some(70.0),
            height_m: Some(1.75),
            ..Default::default()
        }
    }

    #[test]
    fn stored_suv_of_other_kinds_is_converted_to_suvbw() {
        let cases = [
            ("LBMJAMES128", "M", SuvKind::LbmJames, 1.10 * 70.0 - 128.0 * (70.0f64 / 175.0).powi(2)),
            ("LBM", "F", SuvKind::LbmJames, 1.07 * 70.0 - 148.0 * (70.0f64 / 175.0).powi(2)),
            ("LBMJANMA", "M", SuvKind::LbmJanmahasatian, 9270.0 * 70.0 / (6680.0 + 216.0 * 70.0 / 1.75f64.powi(2))),
            ("IBW", "F", SuvKind::Ibw, 45.5 + 2.3 * (175.0 / 2.54 - 60.0)),
        ];
        for (t, sex, kind, mass) in cases {
            let s = compute(&gml(t, Some(sex)), None, None).expect("suv");
            assert_eq!(s.kind, SuvKind::Bw, "{t} {sex}");
            let b = s.converted_from.expect("converted");
            assert_eq!(b.stored_kind, kind);
            assert!((b.value - mass).abs() < 1e-9, "{t}: {} vs {mass}", b.value);
            assert!((s.factor - 70.0 / mass).abs() < 1e-12);
        }
        let mut p = gml("BSA", None);
        p.units = Some("CM2ML".into());
        let s = compute(&p, None, None).expect("suv");
        let bsa = 0.007184 * 70.0f64.powf(0.425) * 175.0f64.powf(0.725);
        assert!((s.factor - 70_000.0 / (bsa * 1e4)).abs() < 1e-12, "DuBois, any sex");
        assert!(compute(&gml("BSA", None), None, None).unwrap_err().contains("CM2ML"));
    }

    #[test]
    fn stored_suv_that_cannot_be_converted_keeps_its_kind_and_says_why() {
        let s = compute(&gml("IBW", Some("O")), None, None).expect("suv");
        assert_eq!((s.kind, s.factor), (SuvKind::Ibw, 1.0));
        assert!(s.not_converted.expect("why").contains("PatientSex"));
        let mut p = gml("LBMJAMES128", Some("M"));
        p.height_m = None;
        let s = compute(&p, None, None).expect("suv");
        assert_eq!(s.kind, SuvKind::LbmJames);
        assert!(s.not_converted.expect("why").contains("PatientSize"));
        assert!(compute(&gml("XYZ", Some("M")), None, None).unwrap_err().contains("SUVType"));
    }

    #[test]
    fn each_slice_back_computes_from_its_own_acquisition_time() {
        // Two beds of 300 s; SeriesTime 30 min after the first. FrameReferenceTime
        // of each is the time from the scan start (10:00) to its mean activity.
        let mut p = siemens();
        p.series_time = Some("103000".into());
        p.actual_frame_duration_ms = Some(300_000.0);
        let lambda = std::f64::consts::LN_2 / 45720.0;
        let within = mean_activity_offset(lambda, 300.0);
        let mut decays = Vec::new();
        for (acq, start) in [("20261123100000", 0.0), ("20261123100500", 300.0)] {
            p.frame_reference_time_ms = Some((start + within) * 1000.0);
            let s = compute(&p, Some("20261123100000"), Some(acq)).expect("suv");
            assert_eq!(s.method, SuvMethod::BqmlFrameReferenceTime);
            decays.push(s.decay_seconds.expect("decay"));
        }
        assert!(decays.iter().all(|d| (d - 3600.0).abs() < 1e-3), "{decays:?}");
    }

    #[test]
    fn decay_correction_none_is_corrected_per_slice() {
        let mut p = siemens();
        p.decay_correction = Some("NONE".into());
        p.corrected_image = vec!["ATTN".into()];
        p.actual_frame_duration_ms = Some(300_000.0);
        let lambda = std::f64::consts::LN_2 / 45720.0;
        let a = compute(&p, Some("20261123100000"), Some("20261123100000")).expect("suv");
        let b = compute(&p, Some("20261123100000"), Some("20261123100500")).expect("suv");
        assert_eq!(a.method, SuvMethod::BqmlNone);
        let within = mean_activity_offset(lambda, 300.0);
        assert!((a.decay_seconds.expect("decay") - (3600.0 + within)).abs() < 1e-3);
        assert!((b.factor / a.factor - (300.0 * lambda).exp()).abs() < 1e-9, "later bed decayed 300 s more");
        p.corrected_image.push("DECY".into());
        assert!(compute(&p, None, None).unwrap_err().contains("not DECY"));
    }

    #[test]
    fn uptake_of_long_lived_nuclides_needs_a_start_date_time() {
        let mut p = siemens();
        p.half_life_s = Some(282_240.0); // Zr-89
        assert!(compute(&p, None, None).unwrap_err().contains("StartDateTime"));
        p.start_date_time = Some("20261120100000".into());
        let s = compute(&p, None, None).expect("72 h with a date-time");
        assert_eq!(s.decay_seconds, Some(72.0 * 3600.0));
        p.half_life_s = Some(6586.2);
        assert!(compute(&p, None, None).unwrap_err().contains("implausible"), "72 h for F-18");
    }

    #[test]
    fn reasons_when_unavailable() {
        let mut p = siemens();
        p.weight_kg = None;
        assert!(compute(&p, None, None).unwrap_err().contains("PatientWeight"));
        let mut p = siemens();
        p.decay_correction = Some("NONE".into());
        assert!(compute(&p, None, None).unwrap_err().contains("DecayCorrection NONE"));
        let mut p = siemens();
        p.units = Some("PROPCPS".into());
        assert!(compute(&p, None, None).unwrap_err().contains("PROPCPS"));
        let mut p = siemens();
        p.half_life_s = None;
        assert!(compute(&p, None, None).unwrap_err().contains("HalfLife"));
        let mut p = siemens();
        p.start_time = None;
        assert!(compute(&p, None, None).unwrap_err().contains("StartTime"));
    }
}
