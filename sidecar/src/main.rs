//! enkf-sidecar: rotates the database credentials kept in AWS Secrets Manager and runs the
//! twins' scheduled assimilations. See docs/sidecar.md.

mod config;
mod daemon;
mod db;
mod http;
mod metrics;
mod rotation;
mod scheduler;
mod scram;
mod secret;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::Config;

const DEFAULT_CONFIG: &str = "/etc/enkf-sidecar/enkf-sidecar.toml";

#[derive(Parser)]
#[command(
    name = "enkf-sidecar",
    version,
    about = "Credential rotation (AWS Secrets Manager, alternating users) and the assimilation scheduler of pg_enkf",
    long_about = "Credential rotation (AWS Secrets Manager, alternating users) and the assimilation scheduler of pg_enkf.\n\n\
Settings come from a TOML file (--config), then from environment variables ENKF_SIDECAR_<SECTION>_<KEY>, \
which override the file. Logs are JSON lines on standard error. See docs/sidecar.md.",
    after_long_help = config::settings_help(),
    after_help = "Run `enkf-sidecar --help` for the list of settings."
)]
struct Cli {
    /// Configuration file (TOML). Without --config, a missing default file means defaults
    /// plus environment variables.
    #[arg(long, short, env = "ENKF_SIDECAR_CONFIG", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: rotation when due (and resumption of an interrupted one), scheduled runs,
    /// /healthz and /metrics; stops cleanly on SIGTERM or SIGINT.
    Run,
    /// Rotates the credentials now, or finishes an interrupted rotation; prints the outcome as
    /// JSON. Fails if another rotation of the secret is in progress.
    Rotate,
    /// One scheduling pass without the daemon (`schedule --once`); prints a summary as JSON.
    Schedule {
        /// One pass over every scheduled twin, then exit (required: the loop is `run`).
        #[arg(long)]
        once: bool,
    },
    /// Validates the configuration, the CA file, the credentials (application and master) and
    /// the TLS connection to the database; exits non-zero with the reason on failure.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let cfg = match Config::load(&path, required, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("enkf-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    daemon::init_logging(&cfg.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("enkf-sidecar: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run => daemon::run(cfg).await,
            Command::Rotate => daemon::rotate_now(cfg).await,
            Command::Schedule { once } => {
                if !once {
                    eprintln!("enkf-sidecar: `schedule` needs --once (the scheduling loop is `enkf-sidecar run`)");
                    return 2;
                }
                daemon::schedule_once(cfg).await
            }
            Command::Check => daemon::check(cfg).await,
        }
    });
    ExitCode::from(code)
}
