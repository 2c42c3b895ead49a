//! Body-weight SUV after the QIBA vendor-neutral pseudo-code.
//!
//! The factor returned multiplies the *rescaled* stored value (stored × slope +
//! intercept) and gives SUVbw in g/ml. When the headers do not allow an SUV, the
//! reason is returned instead and the series loads in its own units.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde::Serialize;

use super::header::PetHeader;

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
    /// from the earliest acquisition, FrameReferenceTime and ActualFrameDuration.
    #[serde(rename = "BQML-frame-reference-time")]
    BqmlFrameReferenceTime,
    /// Enhanced PET: decay from injection to DecayCorrectionDateTime (0018,9701).
    #[serde(rename = "BQML-decay-correction-date-time")]
    BqmlDecayCorrectionDateTime,
    /// Units BQML with DecayCorrection ADMIN: already decay-corrected to injection.
    #[serde(rename = "BQML-ADMIN")]
    BqmlAdmin,
    /// Units CNTS with the Philips private SUV scale factor (7053,1000).
    #[serde(rename = "CNTS-philips-suv-scale")]
    CntsPhilipsSuvScale,
    /// Units CNTS: Philips (7053,1009) to Bq/ml, then as BQML.
    #[serde(rename = "CNTS-philips-activity-scale")]
    CntsPhilipsActivityScale,
    /// Units GML: the values are SUV already.
    #[serde(rename = "GML")]
    Gml,
}

/// A computed SUV conversion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suv {
    /// Multiply a rescaled stored value by this to get SUVbw.
    pub factor: f64,
    /// How it was found.
    pub method: SuvMethod,
    /// Multiply a rescaled stored value by this to get Bq/ml, where known.
    pub to_bqml: Option<f64>,
    /// Seconds of decay from injection to the scan start, where used.
    pub decay_seconds: Option<f64>,
    /// The injected dose decayed to the scan start, in Bq, where used.
    pub decayed_dose_bq: Option<f64>,
    /// The scan start the decay was computed to (ISO 8601), where used.
    pub scan_date_time: Option<String>,
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

/// Computes the SUVbw factor for one PET instance.
///
/// `earliest_acquisition` is the earliest AcquisitionDate/Time (or
/// AcquisitionDateTime) over the series, as DICOM DT text.
pub fn compute(p: &PetHeader, earliest_acquisition: Option<&str>) -> Result<Suv, String> {
    let units = p.units.as_deref().ok_or("Units (0054,1001) is missing")?;
    if units == "GML" {
        return Ok(Suv {
            factor: 1.0,
            method: SuvMethod::Gml,
            to_bqml: None,
            decay_seconds: None,
            decayed_dose_bq: None,
            scan_date_time: None,
        });
    }
    if units == "CNTS" {
        if let Some(f) = p.philips_suv_scale.filter(|f| *f > 0.0) {
            return Ok(Suv {
                factor: f,
                method: SuvMethod::CntsPhilipsSuvScale,
                to_bqml: p.philips_activity_scale.filter(|f| *f > 0.0),
                decay_seconds: None,
                decayed_dose_bq: None,
                scan_date_time: None,
            });
        }
        let a = p
            .philips_activity_scale
            .filter(|f| *f > 0.0)
            .ok_or("Units CNTS without the Philips SUV scale factor (7053,1000) or activity concentration scale factor (7053,1009)")?;
        let mut s = bqml(p, earliest_acquisition)?;
        s.factor *= a;
        s.to_bqml = Some(a);
        s.method = SuvMethod::CntsPhilipsActivityScale;
        return Ok(s);
    }
    if units != "BQML" {
        return Err(format!("Units {units} cannot be converted to SUV (BQML, CNTS or GML needed)"));
    }
    bqml(p, earliest_acquisition)
}

/// The BQML branch: decay the injected dose to the scan start.
fn bqml(p: &PetHeader, earliest_acquisition: Option<&str>) -> Result<Suv, String> {
    let has = |v: &str| p.corrected_image.iter().any(|c| c.eq_ignore_ascii_case(v));
    if !(has("ATTN") && has("DECY")) {
        return Err(format!("CorrectedImage (0028,0051) must contain ATTN and DECY, found {:?}", p.corrected_image));
    }
    let decay_correction = p.decay_correction.as_deref().ok_or("DecayCorrection (0054,1102) is missing")?;
    let weight = p.weight_kg.filter(|w| *w > 0.0).ok_or("PatientWeight (0010,1030) is missing or zero")?;
    let dose = p.total_dose_bq.filter(|d| *d > 0.0).ok_or("RadionuclideTotalDose (0018,1074) is missing or zero")?;
    match decay_correction {
        "ADMIN" => {
            return Ok(Suv {
                factor: weight * 1000.0 / dose,
                method: SuvMethod::BqmlAdmin,
                to_bqml: Some(1.0),
                decay_seconds: Some(0.0),
                decayed_dose_bq: Some(dose),
                scan_date_time: None,
            });
        }
        "START" => {}
        other => return Err(format!("DecayCorrection {other} is not START or ADMIN")),
    }
    let half_life = p.half_life_s.filter(|h| *h > 0.0).ok_or("RadionuclideHalfLife (0018,1075) is missing or zero")?;
    let series_date = p.series_date.as_deref().and_then(parse_da).ok_or("SeriesDate is missing or invalid")?;
    let series_time = p.series_time.as_deref().and_then(parse_tm).ok_or("SeriesTime is missing or invalid")?;
    let series_dt = NaiveDateTime::new(series_date, series_time);
    let acquisition = earliest_acquisition.and_then(parse_dt);

    let explicit = p.decay_correction_date_time.as_deref().and_then(parse_dt);
    let (scan, method) = match (explicit, acquisition) {
        (Some(t), _) => (t, SuvMethod::BqmlDecayCorrectionDateTime),
        (None, Some(acq)) if series_dt > acq => {
            if let Some(ge) = p.ge_scan_date_time.as_deref() {
                let t =
                    parse_dt(ge).ok_or_else(|| format!("GE private scan date-time (0009,100D) {ge:?} is invalid"))?;
                (t, SuvMethod::BqmlGePrivateScanTime)
            } else {
                let frt = p.frame_reference_time_ms.ok_or(
                    "SeriesTime is after AcquisitionTime and neither the GE private scan time nor FrameReferenceTime is present",
                )?;
                let dur = p
                    .actual_frame_duration_ms
                    .filter(|d| *d > 0.0)
                    .ok_or("SeriesTime is after AcquisitionTime and ActualFrameDuration is missing")?;
                // Time within the frame at which the activity equals the frame's mean:
                // (1/λ)·ln(λT / (1 − e^(−λT))); the scan started FrameReferenceTime
                // before that instant.
                let lambda = std::f64::consts::LN_2 / half_life;
                let t = dur / 1000.0;
                let within = (lambda * t / -(-lambda * t).exp_m1()).ln() / lambda;
                let offset = within - frt / 1000.0;
                let start = acq + TimeDelta::microseconds((offset * 1e6).round() as i64);
                (start, SuvMethod::BqmlFrameReferenceTime)
            }
        }
        (None, _) => (series_dt, SuvMethod::Bqml),
    };

    let injection = match p.start_date_time.as_deref().and_then(parse_dt) {
        Some(t) => t,
        None => {
            let t = p
                .start_time
                .as_deref()
                .and_then(parse_tm)
                .ok_or("RadiopharmaceuticalStartTime/StartDateTime is missing or invalid")?;
            let same_day = NaiveDateTime::new(scan.date(), t);
            // Injected before midnight, scanned after: the injection was the day before.
            if same_day > scan { same_day - TimeDelta::days(1) } else { same_day }
        }
    };
    let decay = seconds(scan - injection);
    if decay < 0.0 {
        return Err(format!("injection time {} is after the scan start {}", iso(injection), iso(scan)));
    }
    if decay > 10.0 * half_life.max(86_400.0) {
        return Err(format!("{decay:.0} s between injection and scan is implausible"));
    }
    let decayed = dose * (-decay / half_life * std::f64::consts::LN_2).exp();
    Ok(Suv {
        factor: weight * 1000.0 / decayed,
        method,
        to_bqml: Some(1.0),
        decay_seconds: Some(decay),
        decayed_dose_bq: Some(decayed),
        scan_date_time: Some(iso(scan)),
    })
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
        let s = compute(&siemens(), Some("20261123100000")).expect("suv");
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
        let s = compute(&p, None).expect("suv");
        assert_eq!(s.decay_seconds, Some(65.0 * 60.0));
    }

    #[test]
    fn ge_private_time_when_series_is_after_acquisition() {
        let mut p = siemens();
        p.series_time = Some("103000".into());
        p.ge_scan_date_time = Some("20261123100000.00".into());
        let s = compute(&p, Some("20261123100000")).expect("suv");
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
        let s = compute(&p, Some("20261123100000")).expect("suv");
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
        let s = compute(&p, None).expect("suv");
        assert_eq!(s.factor, 0.000_123);
        assert_eq!(s.to_bqml, Some(2.5));
        let mut q = p.clone();
        q.philips_suv_scale = None;
        assert!(compute(&q, None).is_err(), "activity scale alone needs the BQML inputs");
        q.corrected_image = vec!["ATTN".into(), "DECY".into()];
        q.decay_correction = Some("START".into());
        q.weight_kg = Some(70.0);
        q.total_dose_bq = Some(1e8);
        q.half_life_s = Some(4062.6);
        q.series_date = Some("20261123".into());
        q.series_time = Some("100000".into());
        q.start_time = Some("090000".into());
        let s = compute(&q, None).expect("suv");
        assert_eq!(s.method, SuvMethod::CntsPhilipsActivityScale);
    }

    #[test]
    fn reasons_when_unavailable() {
        let mut p = siemens();
        p.weight_kg = None;
        assert!(compute(&p, None).unwrap_err().contains("PatientWeight"));
        let mut p = siemens();
        p.decay_correction = Some("NONE".into());
        assert!(compute(&p, None).unwrap_err().contains("DecayCorrection NONE"));
        let mut p = siemens();
        p.units = Some("PROPCPS".into());
        assert!(compute(&p, None).unwrap_err().contains("PROPCPS"));
        let mut p = siemens();
        p.half_life_s = None;
        assert!(compute(&p, None).unwrap_err().contains("HalfLife"));
        let mut p = siemens();
        p.start_time = None;
        assert!(compute(&p, None).unwrap_err().contains("StartTime"));
    }
}
