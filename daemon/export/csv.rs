//! `lesions.csv`: the lesion table of report.json as a spreadsheet opens it.
//!
//! RFC 4180: a header row, then one row per lesion in the report's order,
//! then (when there is at least one lesion) the patient-level summary row,
//! `number` = [`TOTAL`],
//! fields separated by commas, records ended by CRLF, a field quoted (with
//! inner quotes doubled) when it holds a comma, a quote, CR or LF. UTF-8
//! without a byte-order mark; '.' as the decimal separator whatever the
//! locale. Fixed precision per column ([`COLUMNS`]); a value that is not a
//! finite number is written as an empty field. The schema is documented in
//! docs/report.md.

use std::io::Write;

use crate::post::pet::Lesion;

/// How a column's value is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An integer.
    Integer,
    /// A decimal with this many digits after the point.
    Fixed(usize),
}

/// The columns of `lesions.csv`, in order, with their format.
pub const COLUMNS: [(&str, Format); 17] = [
    ("number", Format::Integer),
    ("volume_ml", Format::Fixed(3)),
    ("suv_max", Format::Fixed(3)),
    ("suv_mean", Format::Fixed(3)),
    ("suv_peak", Format::Fixed(3)),
    ("suv_sd", Format::Fixed(3)),
    ("tlg", Format::Fixed(3)),
    ("centroid_lps_x_mm", Format::Fixed(2)),
    ("centroid_lps_y_mm", Format::Fixed(2)),
    ("centroid_lps_z_mm", Format::Fixed(2)),
    ("voxels", Format::Integer),
    ("bbox_min_i", Format::Integer),
    ("bbox_min_j", Format::Integer),
    ("bbox_min_k", Format::Integer),
    ("bbox_max_i", Format::Integer),
    ("bbox_max_j", Format::Integer),
    ("bbox_max_k", Format::Integer),
];

/// The `number` field of the patient-level summary row: Σ volume, Σ TLG
/// (`total_tlg_g` of report.json), Σ voxels, the highest SUVmax and
/// SUVpeak, the SUVmean of all lesion voxels; SUV SD, centroid and box are
/// empty (docs/report.md).
pub const TOTAL: &str = "total";

/// A field quoted as RFC 4180 requires (only when needed).
pub fn quote(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// One record: the fields quoted, joined by commas, ended by CRLF.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields.iter().map(|f| quote(f.as_ref())).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// A number in a column's format ('.' decimal point, no thousands
/// separator); empty when not finite.
fn number(v: f64, format: Format) -> String {
    if !v.is_finite() {
        return String::new();
    }
    match format {
        Format::Integer => format!("{v:.0}"),
        Format::Fixed(d) => {
            let s = format!("{v:.d$}");
            // "-0.000" reads as a negative zero in some spreadsheets.
            if s.starts_with('-') && s[1..].bytes().all(|b| b == b'0' || b == b'.') { s[1..].to_string() } else { s }
        }
    }
}

/// The values of one lesion in column order.
fn values(l: &Lesion) -> [f64; 17] {
    [
        f64::from(l.number),
        l.volume_ml,
        l.suv_max,
        l.suv_mean,
        l.suv_peak,
        l.suv_sd,
        l.tlg,
        l.centroid_lps_mm[0],
        l.centroid_lps_mm[1],
        l.centroid_lps_mm[2],
        l.voxels as f64,
        f64::from(l.bbox_min[0]),
        f64::from(l.bbox_min[1]),
        f64::from(l.bbox_min[2]),
        f64::from(l.bbox_max[0]),
        f64::from(l.bbox_max[1]),
        f64::from(l.bbox_max[2]),
    ]
}

/// The whole file as bytes.
pub fn lesion_table(lesions: &[Lesion]) -> Vec<u8> {
    let mut out = record(&COLUMNS.map(|(name, _)| name));
    for l in lesions {
        let fields: Vec<String> = values(l).iter().zip(COLUMNS).map(|(&v, (_, f))| number(v, f)).collect();
        out.push_str(&record(&fields));
    }
    if !lesions.is_empty() {
        out.push_str(&record(&total_row(lesions)));
    }
    out.into_bytes()
}

/// The patient-level summary row ([`TOTAL`]).
fn total_row(lesions: &[Lesion]) -> Vec<String> {
    let voxels: u64 = lesions.iter().map(|l| l.voxels).sum();
    let max = |f: fn(&Lesion) -> f64| lesions.iter().map(f).fold(f64::NAN, f64::max);
    let mean = lesions.iter().map(|l| l.suv_mean * l.voxels as f64).sum::<f64>() / voxels as f64;
    let mut v = [f64::NAN; 17];
    v[1] = lesions.iter().map(|l| l.volume_ml).sum();
    v[2] = max(|l| l.suv_max);
    v[3] = mean;
    v[4] = max(|l| l.suv_peak);
    v[6] = lesions.iter().map(|l| l.tlg).sum();
    v[10] = voxels as f64;
    let mut fields: Vec<String> = v.iter().zip(COLUMNS).map(|(&x, (_, f))| number(x, f)).collect();
    fields[0] = TOTAL.to_string();
    fields
}

/// Writes `lesions.csv` to `path` (temporary file, fsync, rename).
pub fn write(path: &std::path::Path, lesions: &[Lesion]) -> std::io::Result<()> {
    let bytes = lesion_table(lesions);
    super::write_atomic(path, |f| f.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesion(number: u32) -> Lesion {
        Lesion {
            number,
            voxels: 42,
            volume_ml: 2.0 / 3.0,
            suv_max: 12.3456,
            suv_mean: 4.0005,
            suv_sd: f64::NAN,
            suv_peak: 7.0,
            tlg: 1234567.891,
            centroid_lps_mm: [-0.001, 10.126, -300.0],
            max_lps_mm: [0.0, 0.0, -299.5],
            bbox_min: [1, 2, 3],
            bbox_max: [4, 5, 6],
        }
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(quote("cr\r"), "\"cr\r\"");
        assert_eq!(quote(""), "");
        assert_eq!(record(&["a", "b,c", "d\"e"]), "a,\"b,c\",\"d\"\"e\"\r\n");
    }

    #[test]
    fn table_has_header_fixed_precision_and_crlf() {
        let text = String::from_utf8(lesion_table(&[lesion(1), lesion(2)])).expect("utf-8");
        assert!(!text.starts_with('\u{feff}'), "no byte-order mark");
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 5, "header, two rows, the total, empty after the last CRLF");
        assert_eq!(lines[4], "");
        assert!(lines[0].starts_with("number,volume_ml,suv_max,suv_mean,suv_peak,suv_sd,tlg,centroid_lps_x_mm"));
        assert_eq!(lines[0].split(',').count(), COLUMNS.len());
        assert_eq!(
            lines[1], "1,0.667,12.346,4.000,7.000,,1234567.891,0.00,10.13,-300.00,42,1,2,3,4,5,6",
            "3 decimals for ml and SUV, 2 for mm, empty for NaN, no negative zero, no thousands separator"
        );
        assert!(lines[2].starts_with("2,"));
        assert!(!text.contains('\n') || text.matches('\n').count() == text.matches("\r\n").count());
    }

    /// Issue 13 item 18: a patient-level row after the lesions.
    #[test]
    fn total_row_sums_volume_tlg_and_voxels() {
        let mut b = lesion(2);
        b.volume_ml = 1.0;
        b.suv_max = 20.0;
        b.suv_mean = 1.0;
        b.voxels = 126;
        b.tlg = 1.0;
        let text = String::from_utf8(lesion_table(&[lesion(1), b])).expect("utf-8");
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 5, "header, two lesions, the total, empty after the last CRLF");
        // Volume 2/3 + 1, SUVmax 20, SUVmean (4.0005·42 + 1·126)/168, peak 7, TLG summed, 168 voxels.
        assert_eq!(lines[3], "total,1.667,20.000,1.750,7.000,,1234568.891,,,,168,,,,,,");
        assert_eq!(lines[3].split(',').count(), COLUMNS.len());
    }

    #[test]
    fn empty_table_is_the_header_alone() {
        let text = String::from_utf8(lesion_table(&[])).expect("utf-8");
        assert_eq!(text.matches("\r\n").count(), 1);
    }
}
