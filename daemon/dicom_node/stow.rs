//! STOW-RS (PS3.18 §10.5): one result per POST to `<url>/studies` as
//! `multipart/related; type="application/dicom"`, with `Authorization:
//! Bearer <token_file's first line>` when a token file is set. 200 is
//! success; anything else (and 202, partly stored) is a failed attempt.
//! minreq is built without TLS: the configuration check refuses `https://`
//! URLs (see docs/dicom-network.md).

use super::outbox::Item;
use crate::config::Destination;

const BOUNDARY: &str = "edgeseg-stow-boundary-7d3f1c";

/// The request body: one part holding the Part-10 file.
pub fn body(file: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(file.len() + 200);
    b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// Sends one result; Err carries the reason in words.
pub fn store(d: &Destination, item: &Item) -> Result<(), String> {
    let base = d.url.clone().unwrap_or_default();
    if base.starts_with("https://") {
        return Err("https:// is not supported by this build's HTTP client".into());
    }
    let url = format!("{}/studies", base.trim_end_matches('/'));
    let file = std::fs::read(&item.file).map_err(|e| format!("the outbox copy cannot be read: {e}"))?;
    let mut req = minreq::post(&url)
        .with_header("Content-Type", format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"))
        .with_header("Accept", "application/dicom+json")
        .with_timeout(120)
        .with_body(body(&file));
    if let Some(t) = &d.token_file {
        let token = std::fs::read_to_string(t).map_err(|e| format!("{}: {e}", t.display()))?;
        let token = token.lines().next().unwrap_or("").trim().to_string();
        req = req.with_header("Authorization", format!("Bearer {token}"));
    }
    let rsp = req.send().map_err(|e| format!("POST {url}: {e}"))?;
    match rsp.status_code {
        200 => Ok(()),
        202 => Err(format!("POST {url}: 202, the instance was not stored (warnings or failures)")),
        c => Err(format!("POST {url}: HTTP {c} {}", rsp.reason_phrase)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_holds_the_file_between_boundaries() {
        let b = super::body(b"DICM");
        let t = String::from_utf8_lossy(&b);
        assert!(t.starts_with("--edgeseg-stow-boundary-7d3f1c\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n"));
        assert!(t.ends_with("--edgeseg-stow-boundary-7d3f1c--\r\n"));
    }
}
