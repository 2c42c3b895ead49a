//! Where logs go: the journal (tracing-journald, with priorities and fields)
//! when systemd connected stderr to it, stderr otherwise. systemd says so with
//! `JOURNAL_STREAM=<dev>:<inode>` of the stream it set up; a child whose stderr
//! was redirected elsewhere keeps the variable but not the stream, so the
//! device and inode are compared with stderr's own (as sd_journal_stream_fd's
//! documentation asks).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether a `JOURNAL_STREAM` value names the stream with this device and inode.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Whether stderr is the journal stream systemd set up for this service.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => journal_stream_matches(&value.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Whether a filter (`EDGESEG_LOG` syntax) says anything of ONNX Runtime's
/// own log (the `ort` target).
pub fn mentions_ort(filter: &str) -> bool {
    filter.split(',').any(|d| {
        let target = d.trim().split(['=', '[']).next().unwrap_or("");
        target == "ort" || target.starts_with("ort::")
    })
}

/// The filter the daemon logs with: `EDGESEG_LOG` (else `default_filter`),
/// with ONNX Runtime's own lines at warnings and errors unless the filter
/// names the `ort` target (its INFO lines were most of the journal).
pub fn filter_directives(env: Option<&str>, default_filter: &str) -> String {
    let base = env.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(default_filter);
    if mentions_ort(base) { base.to_string() } else { format!("{base},ort=warn") }
}

/// Installs the global tracing subscriber: filter from `EDGESEG_LOG` (else
/// `default_filter`; ONNX Runtime's lines at `warn`, see [`filter_directives`]), to the journal under systemd (syslog identifier
/// `edgeseg`), to stderr otherwise (or when the journal socket cannot be
/// reached). Call once, first thing in `main`.
pub fn init(default_filter: &str) {
    let env = std::env::var("EDGESEG_LOG").ok();
    let directives = filter_directives(env.as_deref(), default_filter);
    let filter =
        || EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(filter_directives(None, default_filter)));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier("edgeseg".to_string());
                if tracing_subscriber::registry().with(filter()).with(layer).try_init().is_ok() {
                    return;
                }
            }
            Err(e) => eprintln!("edgeseg: journal socket unreachable ({e}): logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// An error and its causes as one line, `outer: cause: cause`, each cause
/// once: a cause whose text the line already holds (an error whose message
/// embeds its source, as `#[error("{path}: {source}")]` does) is left out.
pub fn error_chain<'a>(chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut line = String::new();
    for e in chain {
        let text = e.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(Embeds { path: "/m/model.toml".into(), source: io }).context("model");
        let line = error_chain(e.chain());
        assert_eq!(line, "model: /m/model.toml: No such file or directory (os error 2)");
        assert_eq!(format!("{e:#}").matches("No such file").count(), 2, "anyhow's own chain repeats it");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(plain.chain()), "outer: inner");
    }

    #[test]
    fn onnx_runtime_logs_warnings_only_unless_asked() {
        assert_eq!(filter_directives(None, "info"), "info,ort=warn");
        assert_eq!(filter_directives(Some("debug"), "info"), "debug,ort=warn");
        assert_eq!(filter_directives(Some(" "), "warn"), "warn,ort=warn");
        assert_eq!(filter_directives(Some("info,ort=info"), "info"), "info,ort=info");
        assert_eq!(filter_directives(Some("ort::logging=trace"), "info"), "ort::logging=trace");
        // "report" or "sort" is not ONNX Runtime.
        assert_eq!(filter_directives(Some("edgeseg::report=debug"), "info"), "edgeseg::report=debug,ort=warn");
        assert!(EnvFilter::try_new(filter_directives(None, "info")).is_ok());
    }
}
