//! `edgeseg daemon`: the scanner-side service started from its
//! configuration file (wiring only; the service lives in the library).

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Run as the scanner-side daemon: watch the export folders, queue and
/// process complete studies (see systemd/edgeseg.service).
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (TOML; systemd/edgeseg.toml lists every key).
    #[arg(long)]
    config: PathBuf,
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::observe::{self, BuildAndModelInfo, BusKind, Observer};
    use edgeseg::service;
    let config = a.config.as_path();
    let control = service::Control::default();
    control.install_signal_handlers().context("cannot install signal handlers")?;
    // What the observer needs before the service loads anything: the listen
    // address, the bus, and the model's identity (its manifest, not the
    // networks). A bad file fails here with every error placed, as
    // check-config does.
    let text = std::fs::read_to_string(config).with_context(|| format!("{}: cannot read", config.display()))?;
    let (cfg, diags) = edgeseg::config::check(config, &text);
    let Some(cfg) = cfg.filter(|_| diags.is_empty()) else {
        for d in &diags {
            eprintln!("{d}");
        }
        anyhow::bail!("{}: {} configuration error(s)", config.display(), diags.len());
    };
    // Read and checked once: the service builds the engines from this copy.
    let pkg = edgeseg::infer::model::ModelPackage::load(&cfg.model.path).context("cannot load the model package")?;
    // The provider is unknown ("") until the engines are built: the service
    // then reports what each fold got, never the configured request.
    let info = BuildAndModelInfo::this_build(&pkg.meta.name, &pkg.meta.version, &pkg.sha256, "");
    let obs = Observer::new(info);
    obs.set_provider_requested(cfg.model.provider.as_str());
    let listen = cfg
        .metrics
        .listen
        .resolve()
        .with_context(|| format!("[metrics] listen = {:?}", cfg.metrics.listen.to_string()))?;
    let http = observe::serve_http(listen, obs.clone())?;
    tracing::info!("metrics on http://{}/metrics", http.local_addr());
    let (commands_tx, commands) = std::sync::mpsc::channel::<service::Command>();
    let bus = match cfg.dbus.bus {
        edgeseg::config::Bus::System => BusKind::System,
        edgeseg::config::Bus::Session => BusKind::Session,
        edgeseg::config::Bus::Off => BusKind::Off,
    };
    let _dbus = observe::start_dbus(bus, obs.clone(), commands_tx.clone())?;
    service::run_with_package(config, Some(pkg), &obs, &control, &commands)?;
    drop(http);
    Ok(true)
}
