//! STOW-RS (PS3.18 §10.5): one result per POST to `<url>/studies` as
//! `multipart/related; type="application/dicom"`, with `Authorization:
//! Bearer <token_file's first line>` when a token file is set. 200 is
//! success; anything else (and 202, partly stored) is a failed attempt.
//!
//! `http://` and `https://` through ureq; TLS by rustls with the ring
//! provider (no OpenSSL). The server's certificate is always verified:
//! against the system trust store (rustls-native-certs: `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set, else the distribution's bundle) plus the
//! destination's `ca_file`; `client_cert_file` + `client_key_file` give a
//! client certificate (mutual TLS). There is no way to turn verification off.
//! A refused certificate is told in words (unknown issuer, expired, name
//! mismatch ...) naming the destination; the outbox keeps that reason. No
//! redirect is followed (a redirected POST would lose its body, and could
//! carry the token elsewhere), no proxy from the environment is used, and the
//! TLS files are read at every attempt (a renewed CA file needs no restart).
//! See docs/dicom-network.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// A destination's TLS file that cannot be used: the file and why (the
/// configuration key by [`TlsFileError::key`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// `ca_file`, `client_cert_file` or `client_key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable item of the kind the key needs.
    #[error("{}: {what}", path.display())]
    Content {
        /// `ca_file`, `client_cert_file` or `client_key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
    },
}

impl TlsFileError {
    /// The configuration key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. } | Self::Content { key, .. } => key,
        }
    }
}

/// rustls's ring provider. ring rather than aws-lc-rs (which rustls 0.23.48
/// prefers, deprecating this for its lack of post-quantum key exchange): a
/// small pure-cargo build; a hospital PACS's TLS stack rarely offers
/// post-quantum groups yet.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { key, path: path.to_path_buf(), source })
}

fn pem_words(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "not a PEM file: a BEGIN line has no END line".into(),
        E::IllegalSectionStart { .. } => "not a PEM file: a malformed BEGIN line".into(),
        E::Base64Decode(_) => "not a PEM file: its base64 text is malformed".into(),
        E::Io(e) => e.to_string(),
        _ => "not a PEM file".into(),
    }
}

/// The certificates of a PEM file (at least one).
fn pem_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(key, path)?;
    let content = |what: String| TlsFileError::Content { key, path: path.to_path_buf(), what };
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| content(pem_words(&e)))?;
    if certs.is_empty() {
        return Err(content("no PEM certificate (BEGIN CERTIFICATE) in it".into()));
    }
    Ok(certs)
}

/// The certificates `ca_file` adds to the system trust store, each checked
/// to be usable as a trust anchor.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = pem_certificates("ca_file", path)?;
    for (i, c) in certs.iter().enumerate() {
        if rustls::RootCertStore::empty().add(c.clone()).is_err() {
            return Err(TlsFileError::Content {
                key: "ca_file",
                path: path.to_path_buf(),
                what: format!("certificate {} of {} cannot be read as an X.509 certificate", i + 1, certs.len()),
            });
        }
    }
    Ok(certs)
}

/// The client certificate chain and its key's PEM text, checked to go together.
fn client_identity(cert: &Path, key: &Path) -> Result<Identity, TlsFileError> {
    let chain = pem_certificates("client_cert_file", cert)?;
    let bytes = read("client_key_file", key)?;
    let content = |what: String| TlsFileError::Content { key: "client_key_file", path: key.to_path_buf(), what };
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            content("no unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM) in it".into())
        }
        e => content(pem_words(&e)),
    })?;
    let checked = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()))
        .and_then(|b| b.with_client_auth_cert(chain.clone(), der.clone_key()));
    match checked {
        Ok(_) => Ok((chain, bytes)),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(content(format!("the key does not belong to the certificate of client_cert_file {}", cert.display())))
        }
        Err(_) => Err(content("the key type is not supported (RSA, ECDSA P-256/P-384 and Ed25519 are)".into())),
    }
}

/// Reads and checks a destination's TLS files (`ca_file`, the client
/// certificate and key); `edgeseg check-config` and every attempt call it.
pub fn check_tls_files(d: &Destination) -> Result<(), TlsFileError> {
    tls_files(d).map(|_| ())
}

/// A client certificate chain and the PEM text of its key.
type Identity = (Vec<CertificateDer<'static>>, Vec<u8>);

fn tls_files(d: &Destination) -> Result<(Vec<CertificateDer<'static>>, Option<Identity>), TlsFileError> {
    let extra = match &d.ca_file {
        Some(p) => ca_certificates(p)?,
        None => Vec::new(),
    };
    let identity = match (&d.client_cert_file, &d.client_key_file) {
        (Some(c), Some(k)) => Some(client_identity(c, k)?),
        _ => None,
    };
    Ok((extra, identity))
}

/// The TLS settings of one attempt: system roots + ca_file, client identity.
fn tls_config(d: &Destination) -> Result<ureq::tls::TlsConfig, TlsFileError> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let (extra, identity) = tls_files(d)?;
    let system = rustls_native_certs::load_native_certs();
    let roots: Vec<Certificate<'static>> =
        system.certs.iter().chain(extra.iter()).map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
    let client = match identity {
        Some((chain, key_pem)) => {
            let chain: Vec<Certificate<'static>> =
                chain.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
            // The same first PEM key client_identity checked.
            let key = PrivateKey::from_pem(&key_pem).map_err(|_| TlsFileError::Content {
                key: "client_key_file",
                path: d.client_key_file.clone().unwrap_or_default(),
                what: "no private key in it".into(),
            })?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        None => None,
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client)
        .unversioned_rustls_crypto_provider(provider())
        .build())
}

/// The host of an http(s) URL (None when it has none).
pub fn url_host(url: &str) -> Option<String> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// Whether a host name or address is this machine (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// When the destination's bearer token would travel in clear text (a token
/// file, an `http://` url to another machine): the warning, naming the
/// destination and host. The token is still sent (hospital networks often
/// run DICOMweb on plain http); `check-config` and the daemon's start say so.
pub fn clear_text_token_warning(d: &Destination) -> Option<String> {
    let url = d.url.as_deref()?;
    d.token_file.as_ref()?;
    if !url.starts_with("http://") {
        return None;
    }
    let host = url_host(url)?;
    (!is_loopback(&host)).then(|| {
        format!(
            "destination {:?}: the bearer token of token_file is sent in clear text over http:// to {host}; \
             anyone on the network path can read it: use an https:// url",
            d.name
        )
    })
}

/// At the daemon's start, for a DICOMweb destination: how its server is
/// verified, a TLS file that cannot be used (every attempt fails until it
/// is fixed), a token that would travel in clear text.
pub fn log_at_start(d: &Destination) {
    if d.kind != crate::config::DestinationKind::Dicomweb {
        return;
    }
    if let Some(w) = clear_text_token_warning(d) {
        tracing::warn!("{w}");
    }
    let url = d.url.as_deref().unwrap_or_default();
    if !url.starts_with("https://") {
        return;
    }
    match check_tls_files(d) {
        Err(e) => {
            tracing::error!("destination {:?}: {} {e}: every delivery to it fails until this is fixed", d.name, e.key())
        }
        Ok(()) => {
            let system = rustls_native_certs::load_native_certs().certs.len();
            let extra = d.ca_file.as_ref().map(|p| format!(" and ca_file {}", p.display())).unwrap_or_default();
            let client = if d.client_cert_file.is_some() { ", with a client certificate" } else { "" };
            tracing::info!(
                "destination {:?}: STOW-RS over https to {}, its certificate verified against the system trust store \
                 ({system} certificates){extra}{client}",
                d.name,
                url_host(url).unwrap_or_default()
            );
        }
    }
}

fn when(t: rustls::pki_types::UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "an unknown date".into())
}

/// A name of the certificate as rustls-webpki reports it (its Debug text:
/// `DnsName("pacs.example.org")`, `IpAddress(10.0.0.1)`), plain; None for
/// the kinds that name no host.
fn presented_name(p: &str) -> Option<String> {
    ["DnsName(", "IpAddress(", "UniformResourceIdentifier("].iter().find_map(|k| {
        let inner = p.strip_prefix(k)?.strip_suffix(')')?;
        Some(inner.trim_matches('"').to_string())
    })
}

/// A rustls error in words, naming the destination (its host and ca_file
/// where they explain it). Never rustls's own Display: that is Debug text.
pub fn tls_words(e: &rustls::Error, d: &Destination, host: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let name = &d.name;
    let not_trusted = |why: &str| format!("the certificate of destination {name:?} ({host}) is not accepted: {why}");
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => not_trusted(&format!(
                "unknown issuer: it is not signed by a certificate authority in the system trust store{}",
                match &d.ca_file {
                    Some(p) => format!(" or in ca_file {}", p.display()),
                    None => " (set ca_file to the PEM file of the hospital's certificate authority)".into(),
                }
            )),
            C::ExpiredContext { not_after, .. } => {
                not_trusted(&format!("expired: it was valid until {}", when(*not_after)))
            }
            C::Expired => not_trusted("expired"),
            C::NotValidYetContext { not_before, .. } => not_trusted(&format!(
                "not valid yet: it is valid from {} (check this machine's clock)",
                when(*not_before)
            )),
            C::NotValidYet => not_trusted("not valid yet (check this machine's clock)"),
            C::NotValidForNameContext { presented, .. } if presented.iter().any(|p| presented_name(p).is_some()) => {
                not_trusted(&format!(
                    "name mismatch: it is not valid for {host}, it names {}",
                    presented.iter().filter_map(|p| presented_name(p)).collect::<Vec<_>>().join(", ")
                ))
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                not_trusted(&format!("name mismatch: it is not valid for {host}"))
            }
            C::Revoked => not_trusted("revoked"),
            C::BadSignature => not_trusted("bad signature: its chain does not verify"),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                not_trusted("wrong purpose: it is not a certificate for a TLS server")
            }
            C::BadEncoding => not_trusted("it cannot be read as an X.509 certificate"),
            C::UnhandledCriticalExtension => not_trusted("it has a critical extension this client does not know"),
            C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                not_trusted("it is signed with an algorithm this client does not support")
            }
            _ => not_trusted("it does not verify"),
        },
        E::AlertReceived(a) => {
            let (alert, why) = match a {
                A::CertificateRequired => {
                    ("certificate required", ": it asks for a client certificate (client_cert_file, client_key_file)")
                }
                A::BadCertificate => ("bad certificate", ": it did not accept this node's client certificate"),
                A::UnknownCA => ("unknown CA", ": it does not trust the issuer of this node's client certificate"),
                A::CertificateExpired => ("certificate expired", ": this node's client certificate has expired"),
                A::CertificateRevoked => ("certificate revoked", ": this node's client certificate is revoked"),
                A::CertificateUnknown => ("certificate unknown", ": it did not accept this node's client certificate"),
                A::AccessDenied => ("access denied", ""),
                A::HandshakeFailure => (
                    "handshake failure",
                    ": no TLS version or cipher suite in common, or a client certificate is needed",
                ),
                A::ProtocolVersion => ("protocol version", ": no TLS version in common"),
                A::InsufficientSecurity => ("insufficient security", ": no cipher suite in common"),
                A::UnrecognisedName => ("unrecognised name", ": it does not serve the url's host name"),
                _ => ("", ""),
            };
            let alert = if alert.is_empty() { format!("alert {}", u8::from(*a)) } else { format!("alert: {alert}") };
            format!("destination {name:?} ({host}) refused the TLS handshake ({alert}){why}")
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            format!("destination {name:?} ({host}) does not answer in TLS (is the url's port an http:// one?)")
        }
        E::PeerIncompatible(_) => {
            format!("no TLS version or cipher suite in common with destination {name:?} ({host})")
        }
        E::NoCertificatesPresented => format!("destination {name:?} ({host}) presented no certificate"),
        _ => format!("the TLS handshake with destination {name:?} ({host}) failed"),
    }
}

/// The rustls error inside a ureq error, if any.
fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// A ureq error in words.
pub fn error_words(e: &ureq::Error, d: &Destination, host: &str) -> String {
    if let Some(r) = rustls_error(e) {
        return tls_words(r, d, host);
    }
    let https = d.url.as_deref().is_some_and(|u| u.starts_with("https://"));
    match e {
        // TLS 1.3: the handshake ends before the server checks the client's
        // certificate, so its refusal (an alert, then the socket closed) meets
        // the request being written.
        ureq::Error::Io(io)
            if https
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
        {
            let check = if d.client_cert_file.is_some() {
                "check that it trusts the issuer of client_cert_file"
            } else {
                "set client_cert_file and client_key_file"
            };
            format!(
                "{io}: destination {:?} ({host}) closed the TLS connection during the request, as a service that requires \
                 a client certificate does when it gets none it accepts ({check})",
                d.name
            )
        }
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => format!("host {host} not found"),
        e => e.to_string(),
    }
}

/// Sends one result; Err carries the reason in words.
pub fn store(d: &Destination, item: &Item) -> Result<(), String> {
    let base = d.url.clone().unwrap_or_default();
    let url = format!("{}/studies", base.trim_end_matches('/'));
    let host = url_host(&url).unwrap_or_default();
    let https = base.starts_with("https://");
    let file = std::fs::read(&item.file).map_err(|e| format!("the outbox copy cannot be read: {e}"))?;
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(120)))
        .user_agent(concat!("edgeseg/", env!("CARGO_PKG_VERSION")));
    if https {
        config = config.tls_config(tls_config(d).map_err(|e| format!("POST {url}: {}: {e}", e.key()))?);
    }
    let agent: ureq::Agent = config.build().into();
    let mut req = agent
        .post(&url)
        .header("Content-Type", format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"))
        .header("Accept", "application/dicom+json");
    if let Some(t) = &d.token_file {
        let token = std::fs::read_to_string(t).map_err(|e| format!("{}: {e}", t.display()))?;
        let token = token.lines().next().unwrap_or("").trim().to_string();
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let rsp = req.send(&body(&file)[..]).map_err(|e| format!("POST {url}: {}", error_words(&e, d, &host)))?;
    let status = rsp.status();
    let reason = status.canonical_reason().unwrap_or("");
    match status.as_u16() {
        200 => Ok(()),
        202 => Err(format!("POST {url}: 202, the instance was not stored (warnings or failures)")),
        c @ 300..=399 => {
            let to = rsp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("elsewhere");
            Err(format!(
                "POST {url}: HTTP {c} {reason}, redirected to {to} (not followed: set url to the service's own address)"
            ))
        }
        c => Err(format!("POST {url}: HTTP {c} {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_the_file_between_boundaries() {
        let b = super::body(b"DICM");
        let t = String::from_utf8_lossy(&b);
        assert!(t.starts_with("--edgeseg-stow-boundary-7d3f1c\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n"));
        assert!(t.ends_with("--edgeseg-stow-boundary-7d3f1c--\r\n"));
    }

    fn dest(url: &str, token: bool) -> Destination {
        let text = format!(
            "name = \"web\"\nkind = \"dicomweb\"\nurl = \"{url}\"\n{}",
            if token { "token_file = \"/etc/edgeseg/token\"\n" } else { "" }
        );
        toml::from_str(&text).expect("a destination")
    }

    #[test]
    fn a_token_in_clear_text_is_warned_about_only_towards_another_machine() {
        for url in ["http://10.0.0.21:8042/dicom-web", "http://pacs.hospital/dicom-web", "http://[fe80::1]:80/x"] {
            let w = clear_text_token_warning(&dest(url, true));
            assert!(w.as_deref().is_some_and(|w| w.contains("clear text") && w.contains("\"web\"")), "{url}: {w:?}");
        }
        for url in
            ["http://127.0.0.1:8042/dicom-web", "http://localhost/x", "http://[::1]:8042/x", "https://10.0.0.21/x"]
        {
            assert_eq!(clear_text_token_warning(&dest(url, true)), None, "{url}");
        }
        assert_eq!(clear_text_token_warning(&dest("http://10.0.0.21/x", false)), None, "no token, nothing to warn");
    }

    #[test]
    fn certificate_failures_are_told_in_words_without_debug_text() {
        use rustls::pki_types::{ServerName, UnixTime};
        use rustls::{AlertDescription, CertificateError as C, Error as E};
        let mut d = dest("https://127.0.0.1:8443/dicom-web", false);
        let t = |e: E, d: &Destination| tls_words(&e, d, "127.0.0.1");
        let s = t(E::InvalidCertificate(C::UnknownIssuer), &d);
        assert!(s.contains("unknown issuer") && s.contains("\"web\"") && s.contains("set ca_file"), "{s}");
        d.ca_file = Some(PathBuf::from("/etc/edgeseg/ca.pem"));
        let s = t(E::InvalidCertificate(C::UnknownIssuer), &d);
        assert!(s.contains("or in ca_file /etc/edgeseg/ca.pem"), "{s}");
        let s = t(
            E::InvalidCertificate(C::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000)),
            }),
            &d,
        );
        assert!(s.contains("expired: it was valid until 2020-09-13 12:26 UTC"), "{s}");
        let s = t(
            E::InvalidCertificate(C::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").expect("name").to_owned(),
                presented: vec!["DnsName(\"pacs.example.org\")".into(), "DirectoryName".into()],
            }),
            &d,
        );
        assert!(s.contains("name mismatch: it is not valid for 127.0.0.1, it names pacs.example.org"), "{s}");
        assert!(!s.contains("DnsName"), "{s}");
        let s = t(E::AlertReceived(AlertDescription::CertificateRequired), &d);
        assert!(s.contains("certificate required") && s.contains("client_cert_file"), "{s}");
        let s = t(E::InvalidMessage(rustls::InvalidMessage::InvalidContentType), &d);
        assert!(s.contains("does not answer in TLS"), "{s}");
        for e in [
            E::InvalidCertificate(C::Revoked),
            E::AlertReceived(AlertDescription::DecodeError),
            E::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
            E::General("x".into()),
        ] {
            let s = t(e, &d);
            assert!(!s.contains("::") && !s.contains('{') && !s.contains("General"), "{s}");
            assert!(s.contains("\"web\""), "{s}");
        }
    }
}
