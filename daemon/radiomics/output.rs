//! Output layouts of the `pyradiomics` command line: one JSON object per case,
//! `name: value` text lines, and the batch CSV (the input CSV's columns, then
//! one column per output name, in the first case's order, names only later
//! cases have appended sorted), plus reading a batch CSV of Image,Mask pairs.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::Output;

/// A batch CSV that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// A required column is missing.
    #[error("{path}: no {column} column (the batch CSV needs Image and Mask)")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// A Label cell is not a positive integer.
    #[error("{path} line {line}: Label {value} is not a positive integer")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// The cell.
        value: String,
    },
}

/// One case of a batch: its input columns (Image and Mask resolved against
/// the CSV's folder) and the label to extract.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Input columns in file order.
    pub columns: Vec<(String, String)>,
    /// The image file.
    pub image: PathBuf,
    /// The mask file.
    pub mask: PathBuf,
    /// The Label column, when present.
    pub label: Option<i64>,
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Reads a batch CSV (header row with Image and Mask, optional Label).
pub fn read_batch(path: &Path) -> Result<Vec<Case>, BatchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BatchError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(BatchError::MissingColumn { path: path.to_path_buf(), column: "Image" });
    };
    let header: Vec<String> = split_csv_line(header.trim_end_matches('\r'));
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(BatchError::MissingColumn { path: path.to_path_buf(), column: name })
    };
    let (ci, cm) = (col("Image")?, col("Mask")?);
    let cl = header.iter().position(|h| h == "Label");
    let mut cases = Vec::new();
    for (n, line) in lines {
        let cells = split_csv_line(line.trim_end_matches('\r'));
        let get = |i: usize| cells.get(i).cloned().unwrap_or_default();
        let resolve = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { base.join(p) }
        };
        let image = resolve(get(ci));
        let mask = resolve(get(cm));
        let label = match cl.map(get) {
            Some(v) if !v.is_empty() => {
                Some(v.trim().parse::<i64>().ok().filter(|l| *l > 0).ok_or(BatchError::BadLabel {
                    path: path.to_path_buf(),
                    line: n + 1,
                    value: v.clone(),
                })?)
            }
            _ => None,
        };
        let mut columns: Vec<(String, String)> = header.iter().enumerate().map(|(i, h)| (h.clone(), get(i))).collect();
        columns[ci].1 = image.display().to_string();
        columns[cm].1 = mask.display().to_string();
        cases.push(Case { columns, image, mask, label });
    }
    Ok(cases)
}

/// A value as Python's `str()` would print it in PyRadiomics' CSV and text
/// output (floats with a decimal point, lists as tuples).
pub fn python_str(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Json::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < 1e16 { format!("{f:.1}") } else { format!("{f}") }
            } else {
                n.to_string()
            }
        }
        Json::String(s) => s.clone(),
        Json::Array(items) => format!("({})", items.iter().map(python_str).collect::<Vec<_>>().join(", ")),
        Json::Object(m) => format!(
            "{{{}}}",
            m.iter().map(|(k, v)| format!("'{k}': {}", python_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn python_repr(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{s}'"),
        Json::Array(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        other => python_str(other),
    }
}

/// One JSON object mapping each output name to its value.
pub fn to_json(out: &Output) -> String {
    let m: serde_json::Map<String, Json> = out.iter().cloned().collect();
    serde_json::to_string_pretty(&Json::Object(m)).unwrap_or_default()
}

/// `name: value` lines.
pub fn to_text(out: &Output) -> String {
    out.iter().map(|(k, v)| format!("{k}: {}\n", python_str(v))).collect()
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The batch CSV: header, then one row per case (cells a case lacks are empty).
pub fn to_csv(rows: &[(Vec<(String, String)>, Output)]) -> String {
    let Some((first_cols, first_out)) = rows.first() else {
        return String::new();
    };
    let mut headers: Vec<String> = first_cols.iter().map(|(k, _)| k.clone()).collect();
    headers.extend(first_out.iter().map(|(k, _)| k.clone()));
    let known: std::collections::HashSet<String> = headers.iter().cloned().collect();
    let mut extra = std::collections::BTreeSet::new();
    for (cols, out) in &rows[1..] {
        for k in cols.iter().map(|(k, _)| k).chain(out.iter().map(|(k, _)| k)) {
            if !known.contains(k) {
                extra.insert(k.clone());
            }
        }
    }
    headers.extend(extra);
    let mut text = headers.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(",");
    text.push('\n');
    for (cols, out) in rows {
        let cells: Vec<String> = headers
            .iter()
            .map(|h| {
                cols.iter()
                    .find(|(k, _)| k == h)
                    .map(|(_, v)| v.clone())
                    .or_else(|| out.iter().find(|(k, _)| k == h).map(|(_, v)| python_str(v)))
                    .unwrap_or_default()
            })
            .map(|c| csv_cell(&c))
            .collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_python_does() {
        assert_eq!(python_str(&serde_json::json!(216.0)), "216.0");
        assert_eq!(python_str(&serde_json::json!(0.5)), "0.5");
        assert_eq!(python_str(&serde_json::json!([1.0, 2.5, 3.0])), "(1.0, 2.5, 3.0)");
    }

    #[test]
    fn csv_has_input_columns_then_features() {
        let rows = vec![(
            vec![("Image".to_string(), "a.nii".to_string()), ("Mask".to_string(), "b,c.nii".to_string())],
            vec![("original_firstorder_Mean".to_string(), serde_json::json!(1.5))],
        )];
        assert_eq!(to_csv(&rows), "Image,Mask,original_firstorder_Mean\na.nii,\"b,c.nii\",1.5\n");
    }
}
