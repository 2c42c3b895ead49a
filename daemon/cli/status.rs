//! `edgeseg status`: the running daemon's state, queue and model, read over
//! D-Bus.

use anyhow::Result;

/// Show the running daemon's state, queue and model, read over D-Bus
/// (the system bus unless told otherwise).
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Ask the session bus instead of the system bus.
    #[arg(long, conflicts_with = "address")]
    session: bool,
    /// Ask the bus at this D-Bus address (unix:path=...).
    #[arg(long)]
    address: Option<String>,
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::observe::status::read_status;
    let st = read_status(&super::bus(a.session, a.address))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        std::io::Write::write_all(&mut std::io::stdout().lock(), st.to_text().as_bytes())?;
    }
    Ok(true)
}
