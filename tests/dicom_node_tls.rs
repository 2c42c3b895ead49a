//! STOW-RS over HTTPS, all on loopback: Debian's Orthanc (with its DICOMweb
//! plugin) stores, behind socat's OpenSSL listener (Debian's Orthanc 1.10
//! crashes on its own HTTPS connections: civetweb calls an OpenSSL 1.1
//! function that OpenSSL 3 lacks). The certificates are made here by the
//! `openssl` command (a throwaway CA; server certificates for
//! 127.0.0.1/localhost, for another host name, expired; a client
//! certificate), never by the code under test; Orthanc is also queried over
//! https with curl and the CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgeseg::queue::StudyState;

use crate::daemon_util::{Deployment, export_study, signal, study, wait_exit, wait_for};
use crate::dicom_node::{Orthanc, assert_results_in};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A throwaway PKI under `dir`: `ca.pem` (+ `ca.key`), and `issue` for leaf certificates.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3",
                "-subj",
                "/CN=edgeseg test hospital CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("serial"), "1000\n").expect("serial");
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\nserial = {0}/serial\nnew_certs_dir = {0}\n\
                 default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
                dir.display()
            ),
        )
        .expect("ca.cnf");
        Self { dir: dir.to_path_buf() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `<name>.pem` (certificate), `<name>.key`, and `<name>.both.pem` (key
    /// then certificate, as Orthanc's SslCertificate wants), signed by the CA
    /// with these extensions, valid from `start` to `end` (openssl ca dates).
    fn issue(&self, name: &str, cn: &str, ext: &str, start: &str, end: &str) {
        let d = &self.dir;
        let (key, csr, pem, extf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(d.join(&extf), ext).expect("ext");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                &csr,
                "-out",
                &pem,
                "-extfile",
                &extf,
                "-startdate",
                start,
                "-enddate",
                end,
            ],
        );
        let both =
            std::fs::read_to_string(d.join(&key)).expect("key") + &std::fs::read_to_string(d.join(&pem)).expect("pem");
        std::fs::write(d.join(format!("{name}.both.pem")), both).expect("both");
    }
}

const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";

/// Dates around now in openssl's YYYYMMDDHHMMSSZ form.
fn date(offset_days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(offset_days)).format("%Y%m%d%H%M%SZ").to_string()
}

/// socat's OpenSSL listener on a free loopback port, serving `<name>.both.pem`
/// and forwarding to Orthanc's HTTP port; clients must show a certificate of
/// the CA when `verify_clients`.
struct TlsFront {
    child: Child,
    port: u16,
}

impl TlsFront {
    fn start(pki: &Pki, name: &str, to: u16, verify_clients: bool) -> Self {
        let port = free_port();
        let verify = if verify_clients {
            format!("verify=1,cafile={}", pki.path("ca.pem").display())
        } else {
            "verify=0".into()
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},{verify}",
            pki.path(&format!("{name}.both.pem")).display()
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{to}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat starts (apt-get install socat)");
        let up = wait_for(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        assert!(up.is_some(), "socat listens on {port}");
        Self { child, port }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over https with curl, trusting the CA (and showing the client certificate).
fn curl_json(pki: &Pki, port: u16, path: &str, client: bool) -> Option<serde_json::Value> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--max-time", "20", "--cacert"]).arg(pki.path("ca.pem"));
    if client {
        c.arg("--cert").arg(pki.path("client.pem")).arg("--key").arg(pki.path("client.key"));
    }
    let o = c.arg(format!("https://127.0.0.1:{port}{path}")).output().ok()?;
    o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
}

fn dest(name: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[destination]]\nname = \"{name}\"\nkind = \"dicomweb\"\nurl = \"https://127.0.0.1:{port}/dicom-web\"\n\
         send = [\"seg\", \"rtstruct\"]\nmax_attempts = 2\nretry_seconds = 1\n{extra}"
    )
}

/// (destination, object, state, last_error) of a study's outbox rows.
fn outbox(d: &Deployment, uid: &str) -> Vec<(String, String, String, String)> {
    let Ok(c) = rusqlite::Connection::open(d.state.join("journal.sqlite")) else { return Vec::new() };
    let Ok(mut st) =
        c.prepare("SELECT destination, object, state, last_error FROM outbox WHERE study = ?1 ORDER BY id")
    else {
        return Vec::new();
    };
    st.query_map([uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Option<String>>(3)?.unwrap_or_default())))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

fn spawn(d: &Deployment, ssl_cert_file: Option<&Path>) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.log()).expect("log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeseg"));
    c.args(["daemon", "--config", d.config.to_str().expect("utf-8 path")])
        .env("EDGESEG_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(f) = ssl_cert_file {
        // The system trust store, as OpenSSL and rustls-native-certs read it from the environment.
        c.env("SSL_CERT_FILE", f).env_remove("SSL_CERT_DIR");
    }
    c.spawn().expect("edgeseg daemon starts")
}

#[test]
fn dicom_node_stow_over_https_verifies_the_certificate_and_says_why_it_refuses_one() {
    let base = crate::util::root().join("target/test-daemon");
    std::fs::create_dir_all(&base).expect("base");
    let tmp = tempfile::tempdir_in(&base).expect("tempdir");
    let pki = Pki::new(&tmp.path().join("pki"));
    let here = "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    pki.issue("server", "127.0.0.1", &format!("{SERVER_EXT}{here}"), &date(-1), &date(2));
    pki.issue(
        "other",
        "pacs.example.org",
        &format!("{SERVER_EXT}subjectAltName=DNS:pacs.example.org\n"),
        &date(-1),
        &date(2),
    );
    pki.issue("old", "127.0.0.1", &format!("{SERVER_EXT}{here}"), "20200101000000Z", "20200201000000Z");
    pki.issue(
        "client",
        "edgeseg",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        &date(-1),
        &date(2),
    );
    let orthanc = Orthanc::start();
    let good = TlsFront::start(&pki, "server", orthanc.http, false);
    let wrong_name = TlsFront::start(&pki, "other", orthanc.http, false);
    let expired = TlsFront::start(&pki, "old", orthanc.http, false);
    let mutual = TlsFront::start(&pki, "server", orthanc.http, true);
    let ca = format!("ca_file = \"{}\"\n", pki.path("ca.pem").display());
    let client = format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let config = [
        dest("with-ca", good.port, &ca),
        dest("without-ca", good.port, ""),
        dest("wrong-name", wrong_name.port, &ca),
        dest("expired", expired.port, &ca),
        dest("mutual", mutual.port, &format!("{ca}{client}")),
        dest("mutual-no-client-cert", mutual.port, &ca),
    ]
    .concat();
    let d = Deployment::simulated(&config);

    // check-config: https accepted, ca_file and the client pair read; a
    // non-PEM ca_file and a key of another certificate refused, with the key named.
    let check = crate::util::edgeseg(&["check-config", d.config.to_str().expect("path")]);
    assert_eq!(check.status.code(), Some(0), "{:?}", crate::util::text(&check));
    let bad_cfg = d.root.path().join("bad.toml");
    let bad = std::fs::read_to_string(&d.config)
        .expect("config")
        .replacen(&pki.path("ca.pem").display().to_string(), &pki.path("index.txt").display().to_string(), 1)
        .replacen(&pki.path("client.key").display().to_string(), &pki.path("server.key").display().to_string(), 1);
    std::fs::write(&bad_cfg, bad).expect("bad config");
    let (out, err) = crate::util::text(&crate::util::edgeseg(&["check-config", bad_cfg.to_str().expect("path")]));
    assert!(err.contains("ca_file") && err.contains("no PEM certificate"), "{out}{err}");
    assert!(err.contains("client_key_file") && err.contains("does not belong to the certificate"), "{out}{err}");

    let mut child = spawn(&d, None);
    d.wait_watching();
    assert!(d.log_text().contains("STOW-RS over https to 127.0.0.1"), "{}", d.log_text());
    let (src, uid) = study(91);
    export_study(&src, &d.export, "s91", Duration::ZERO);
    let done = wait_for(Duration::from_secs(300), || d.entry(&uid).filter(|e| e.state == StudyState::Done));
    assert!(done.is_some(), "the study is processed: {}", d.log_text());

    // (a) with ca_file, and with a client certificate: stored.
    assert_results_in(&orthanc, &uid, &src, &d);
    // (b), (c) and the others: failed after max_attempts, each reason in words, in the outbox and the log.
    let expect = [
        ("without-ca", "unknown issuer"),
        ("wrong-name", "name mismatch"),
        ("expired", "expired"),
        ("mutual-no-client-cert", "client certificate"),
    ];
    let rows = wait_for(Duration::from_secs(120), || {
        let rows = outbox(&d, &uid);
        let settled = expect
            .iter()
            .all(|(name, _)| rows.iter().filter(|r| r.0 == *name && r.2 == "failed").count() == 2)
            && ["with-ca", "mutual"].iter().all(|n| rows.iter().filter(|r| r.0 == *n && r.2 == "sent").count() == 2);
        settled.then_some(rows)
    })
    .unwrap_or_else(|| panic!("the refused destinations give up: {:#?}\n{}", outbox(&d, &uid), d.log_text()));
    for (name, words) in expect {
        if let Some(r) = rows.iter().find(|r| r.0 == name) {
            eprintln!("{name}: {}", r.3);
        }
        for r in rows.iter().filter(|r| r.0 == name) {
            let e = &r.3;
            assert!(e.contains(words) && e.contains(&format!("{name:?}")), "{name}: {e}");
            assert!(
                !["InvalidCertificate", "UnknownIssuer", "DnsName", "Custom {", "kind:", "Some(", "::"]
                    .iter()
                    .any(|t| e.contains(t)),
                "{name}: debug text in {e}"
            );
        }
    }
    let e = &rows.iter().find(|r| r.0 == "without-ca").expect("row").3;
    assert!(e.contains("not signed by a certificate authority in the system trust store"), "{e}");
    let e = &rows.iter().find(|r| r.0 == "wrong-name").expect("row").3;
    assert!(e.contains("not valid for 127.0.0.1") && e.contains("pacs.example.org"), "{e}");
    let e = &rows.iter().find(|r| r.0 == "expired").expect("row").3;
    assert!(e.contains("valid until 2020-02-01"), "{e}");
    let log = d.log_text();
    assert!(
        log.contains("not delivered to without-ca after 2 attempts, given up") && log.contains("unknown issuer"),
        "{log}"
    );
    // Orthanc tells the same over https (curl --cacert, through both listeners).
    let ids = |v: Option<serde_json::Value>| {
        let mut ids: Vec<String> = v?.as_array()?.iter().filter_map(|i| i.as_str().map(String::from)).collect();
        ids.sort();
        Some(ids)
    };
    let plain = ids(orthanc.get("/instances")).expect("instances");
    assert!(!plain.is_empty());
    assert_eq!(ids(curl_json(&pki, good.port, "/instances", false)), Some(plain.clone()), "over https with the CA");
    assert_eq!(ids(curl_json(&pki, mutual.port, "/instances", true)), Some(plain), "with a client certificate");
    assert_eq!(
        curl_json(&pki, mutual.port, "/instances", false),
        None,
        "the mutual listener wants a client certificate"
    );
    assert!(child.try_wait().expect("try_wait").is_none(), "the daemon keeps running: {log}");
    assert!(!log.contains("panicked"), "{log}");
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some(), "stops");

    // The system trust store: the CA in SSL_CERT_FILE, a destination without ca_file delivers.
    let from = d.log_text().len();
    let mut child = spawn(&d, Some(&pki.path("ca.pem")));
    assert!(
        wait_for(Duration::from_secs(120), || d.log_text().get(from..)?.contains("watching").then_some(())).is_some(),
        "restarts: {}",
        d.log_text()
    );
    let (src2, uid2) = study(92);
    export_study(&src2, &d.export, "s92", Duration::ZERO);
    let sent = wait_for(Duration::from_secs(300), || {
        let rows = outbox(&d, &uid2);
        (rows.iter().filter(|r| r.0 == "without-ca" && r.2 == "sent").count() == 2).then_some(rows)
    });
    assert!(
        sent.is_some(),
        "without ca_file, with the CA in the system store: {:#?}\n{}",
        outbox(&d, &uid2),
        d.log_text()
    );
    assert_results_in(&orthanc, &uid2, &src2, &d);
    signal(&child, 15);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).is_some(), "stops");
    drop((good, wrong_name, expired, mutual, orthanc));
}
