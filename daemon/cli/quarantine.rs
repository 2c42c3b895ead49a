//! `edgeseg quarantine list|show|retry|clear`: the daemon's quarantine
//! records, over D-Bus.

use anyhow::Result;
use clap::Subcommand;

/// List, show, retry or clear the daemon's quarantine records, over
/// D-Bus (root or a member of edgeseg-admin).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// Print JSON for scripts (list, show).
    #[arg(long, global = true)]
    json: bool,
    /// Ask the session bus instead of the system bus.
    #[arg(long, global = true, conflicts_with = "address")]
    session: bool,
    /// Ask the bus at this D-Bus address (unix:path=...).
    #[arg(long, global = true)]
    address: Option<String>,
}

/// What `edgeseg quarantine` does.
#[derive(Subcommand)]
enum Action {
    /// Every record: name, kind, time, reason.
    List,
    /// One record, with its study UID and input files.
    Show {
        /// The record's name (study hash, or file-<hash>), as `list` shows it.
        name: String,
    },
    /// Run the study again (its record goes once it is done), or read the file again.
    Retry {
        /// The record's name.
        name: String,
    },
    /// Remove the record; a study counts as failed from then on (the input stays).
    Clear {
        /// The record's name.
        name: String,
    },
}

pub fn run(a: Args) -> Result<bool> {
    use edgeseg::observe::status;
    let json = a.json;
    let bus = super::bus(a.session, a.address);
    match a.action {
        Action::List => {
            let all = status::quarantine_list(&bus)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                outln!("quarantine is empty");
            } else {
                for r in &all {
                    outln!("{}  {:5}  {}  {}", r.name, r.kind, r.since, r.reason);
                }
            }
        }
        Action::Show { name } => {
            let r = status::quarantine_show(&bus, &name)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                std::io::Write::write_all(&mut std::io::stdout().lock(), r.to_text().as_bytes())?;
            }
        }
        Action::Retry { name } => {
            status::quarantine_retry(&bus, &name)?;
            outln!("{name}: retry requested");
        }
        Action::Clear { name } => {
            status::quarantine_clear(&bus, &name)?;
            outln!("{name}: clear requested");
        }
    }
    Ok(true)
}
