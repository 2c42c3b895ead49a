//! What the daemon may say about input files without naming the patient.
//!
//! Scanners and DICOM receivers name folders after the patient
//! (`Doe^John_19600101/...`), so a path is patient data. The daemon's logs,
//! metrics, D-Bus and `reason.txt` name a file by `file <hash>`: the first 12
//! hex digits of SHA-256 of its path relative to the watch folder (the same
//! hash as [`crate::queue::uid_hash`], which names studies). The full paths go
//! only to `files.txt` in the quarantine record (mode 0600, root's).
//!
//! The ingest errors embed paths in their text; [`Redactor::redact`] replaces
//! every path it knows (the files and their folders below the watch folders)
//! and, as a last resort, any other text that starts with a watch folder.

use std::path::{Path, PathBuf};

use crate::queue::uid_hash;

/// The name of a file in logs: `file <hash of its path relative to the
/// watch folder holding it>` (of the whole path when none holds it).
pub fn file_label(path: &Path, roots: &[PathBuf]) -> String {
    format!("file {}", path_hash(path, roots))
}

/// The hash of a path relative to the watch folder holding it.
pub fn path_hash(path: &Path, roots: &[PathBuf]) -> String {
    let rel = roots.iter().find_map(|r| path.strip_prefix(r).ok()).unwrap_or(path);
    uid_hash(&rel.to_string_lossy())
}

/// Replaces known paths in texts (error messages) with their labels.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    roots: Vec<PathBuf>,
    /// (full path text, label), longest first.
    known: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for paths under `roots` (the watch folders).
    pub fn new(roots: &[PathBuf]) -> Self {
        Self { roots: roots.to_vec(), known: Vec::new() }
    }

    /// Knows these files and their folders below the watch folders.
    pub fn with_files<'a>(mut self, files: impl IntoIterator<Item = &'a Path>) -> Self {
        for f in files {
            self.known.push((f.display().to_string(), file_label(f, &self.roots)));
            let mut dir = f.parent();
            while let Some(d) = dir {
                let below_a_root = self.roots.iter().any(|r| d != r && d.starts_with(r));
                if d.as_os_str().is_empty() || !below_a_root {
                    break;
                }
                self.known.push((d.display().to_string(), format!("folder {}", path_hash(d, &self.roots))));
                dir = d.parent();
            }
        }
        self.known.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        self.known.dedup();
        self
    }

    /// The text with every known path replaced by its label, and any other
    /// run of text starting with a watch folder and `/` (up to the next
    /// `": "`, newline, `"; "` or closing parenthesis) by `path <hash>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (full, label) in &self.known {
            if out.contains(full.as_str()) {
                out = out.replace(full.as_str(), label);
            }
        }
        for root in &self.roots {
            let prefix = format!("{}/", root.display().to_string().trim_end_matches('/'));
            let mut from = 0;
            while let Some(i) = out.get(from..).and_then(|s| s.find(&prefix)).map(|i| i + from) {
                let rest = out.get(i..).unwrap_or("");
                let end = [": ", "\n", "; ", ")", "\""].iter().filter_map(|t| rest.find(t)).min().unwrap_or(rest.len());
                let found = rest.get(..end).unwrap_or(rest).to_string();
                let label = format!("path {}", path_hash(Path::new(&found), &self.roots));
                out.replace_range(i..i + found.len(), &label);
                from = i + label.len();
            }
        }
        out
    }
}

/// The text with every DICOM UID in it (digits and dots, at least four
/// dots, 10 to 64 characters) replaced by its hash: series and SOP Instance
/// UIDs in error messages are named as studies are.
pub fn hash_uids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let dots = run.matches('.').count();
        let core = run.trim_end_matches('.');
        if dots >= 4 && (10..=64).contains(&core.len()) && !core.starts_with('.') {
            out.push_str(&uid_hash(core));
            out.push_str(&run[core.len()..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || c == '.' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_watch_folders_become_hashes() {
        let roots = vec![PathBuf::from("/srv/export")];
        let f = PathBuf::from("/srv/export/Doe^John_19600101/PET/IM1.dcm");
        let r = Redactor::new(&roots).with_files([f.as_path()]);
        let t = r.redact(&format!("{}: truncated; series in /srv/export/Doe^John_19600101/PET: gap", f.display()));
        assert!(!t.contains("Doe") && !t.contains("19600101"), "{t}");
        assert!(t.starts_with(&file_label(&f, &roots)), "{t}");
        assert_eq!(file_label(&f, &roots), format!("file {}", uid_hash("Doe^John_19600101/PET/IM1.dcm")));
        assert!(t.contains("folder "), "{t}");
        // With two watch folders, the folders below the second are known too.
        let two = vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")];
        let g = PathBuf::from("/srv/b/Roe^Richard/CT/1.dcm");
        let t = Redactor::new(&two).with_files([g.as_path()]).redact("/srv/b/Roe^Richard/CT has a gap");
        assert_eq!(t, format!("folder {} has a gap", uid_hash("Roe^Richard/CT")));
        // Unknown paths under a watch folder too.
        let t = Redactor::new(&roots).redact("cannot open /srv/export/Smith^Ann/x.dcm: gone");
        assert!(!t.contains("Smith") && t.ends_with(": gone"), "{t}");
        // UIDs by their hash; numbers stay.
        let uid = "1.2.826.0.1.3680043.8.498.67206410875951547090408750035464214859";
        let t = hash_uids(&format!("series {uid}: gap of 10.0000 mm at 1.5.2 (v1.2.3.4)."));
        assert_eq!(t, format!("series {}: gap of 10.0000 mm at 1.5.2 (v1.2.3.4).", uid_hash(uid)));
        // Other paths stay.
        assert_eq!(Redactor::new(&roots).redact("/var/lib/edgeseg: full"), "/var/lib/edgeseg: full");
    }
}
