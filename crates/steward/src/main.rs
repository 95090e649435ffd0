//! The `steward` command line. Each command parses, calls one function, renders.

mod commands;
mod databases;
mod describe;
mod describe_database;
mod events;
mod import;
mod output;
mod schedules;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Reconciles Docker Swarm services with desired state kept in git"
)]
pub struct Cli {
    /// Embedded state file (status, events).
    #[arg(long, global = true, env = "STEWARD_STATE", default_value = ".steward/state.db")]
    pub state: PathBuf,
    /// Shared store instead of the state file: `postgres://user@host:port/db`. Several
    /// controllers on one store elect one leader; the others serve the read API and stand by.
    #[arg(long, global = true, env = "STEWARD_STORE")]
    pub store: Option<String>,
    /// Docker Engine address: unix:///path or tcp://host:port.
    #[arg(long, global = true, env = "DOCKER_HOST", default_value = steward_backends::swarm::DEFAULT_DOCKER_HOST)]
    pub docker_host: String,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Directory `valueFrom.file` references are read below (relative paths only; `..` and
    /// symlinks leading out of it are refused). Without it, file references are refused.
    #[arg(long, global = true, env = "STEWARD_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check manifests. Exit 0 when valid, 1 when not.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also check that every `valueFrom` reference (environment variable, file) resolves.
        #[arg(long)]
        resolve: bool,
    },
    /// Show what apply would change. Exit 0 in sync, 2 changes pending, 1 error.
    Plan {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Reconcile once and wait until converged. Exit 0 converged, 1 otherwise.
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Give up after this long, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Reconcile continuously until SIGINT/SIGTERM.
    Run {
        /// Manifest files or directories (not needed with --git).
        #[arg(required_unless_present = "git")]
        paths: Vec<PathBuf>,
        /// Full re-read interval even without triggers.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        resync: std::time::Duration,
        /// Take the desired state from this git remote (file://, ssh or https), cloned under the
        /// state file's directory; each new commit is reconciled.
        #[arg(long)]
        git: Option<String>,
        #[arg(long, default_value = "main", requires = "git")]
        branch: String,
        /// Directory of the manifests inside the repository.
        #[arg(long = "path", default_value = ".", requires = "git")]
        git_path: String,
        /// How often to fetch the remote (a push webhook fetches at once).
        #[arg(long, default_value = "1m", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Post Warning events as JSON to this URL (repeatable).
        #[arg(long = "notify")]
        notify: Vec<String>,
        /// Post Warning events to this Slack-compatible incoming webhook (repeatable).
        #[arg(long = "notify-slack")]
        notify_slack: Vec<String>,
        /// Notify about every event, not only Warnings.
        #[arg(long)]
        notify_all: bool,
        /// Serve the HTTP API, /metrics and the dashboard on this address, or `off`.
        /// `POST /api/v1/sync` needs STEWARD_API_TOKEN, git webhooks STEWARD_WEBHOOK_SECRET.
        #[arg(long, default_value = steward_api::DEFAULT_LISTEN, value_parser = parse_listen)]
        listen: Listen,
    },
    /// Conditions and replicas of every resource.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Read from a running controller's API (e.g. http://127.0.0.1:9469) instead of the state file.
        #[arg(long)]
        server: Option<String>,
    },
    /// Reconcile events, oldest first.
    Events {
        /// Only events seen within this long, e.g. 10m.
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Keep printing new and updated events.
        #[arg(long)]
        follow: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Read from a running controller's API (e.g. http://127.0.0.1:9469) instead of the state file.
        #[arg(long)]
        server: Option<String>,
    },
    /// Revision history of a service, newest first.
    History {
        service: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Roll a service back by hand and pin it there until the desired state changes.
    Rollback {
        service: String,
        /// Revision number (see `steward history`); default: the newest known-good one before the current.
        #[arg(long)]
        to: Option<u64>,
        /// Manifests; default: those of the last reconcile recorded in the state file.
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Runs of schedules, newest first.
    Runs {
        /// Only this schedule's runs.
        schedule: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Run a schedule's job now (a Manual run), honouring its concurrency policy, and wait for
    /// it. Exit 0 when it succeeded, 1 otherwise. Works with or without a running controller:
    /// the store arbitrates.
    Trigger {
        schedule: String,
        /// Manifests; default: those the controller last loaded (recorded in the store).
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        /// Stop waiting after this long (the run goes on; the controller records its end).
        #[arg(long, default_value = "2h", value_parser = parse_duration)]
        wait: std::time::Duration,
    },
    /// Backups steward made, newest first: time, file, size, sha256, verified, kept as
    /// daily/weekly/monthly.
    Backups {
        /// Only this Database's backups.
        database: Option<String>,
        /// Manifests, for the retention column; default: those the controller last loaded.
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Back a Database up now (pg_dump -Fc into its backup directory, then retention). Exit 0
    /// when the backup was written and recorded, 1 otherwise.
    Backup {
        database: String,
        /// Manifests; default: those the controller last loaded (recorded in the store).
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
    },
    /// Restore a Database's newest backup into a scratch database (a throwaway local server
    /// unless `restoreTest.target` names one), run its checks, drop it. Exit 0 when it passed.
    RestoreTest {
        database: String,
        /// Manifests; default: those the controller last loaded (recorded in the store).
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
    },
    /// One object of any kind in full: spec summary, observed state, conditions, recent events.
    Describe {
        /// KIND/NAME, e.g. Schedule/db-backup or Service/taxcollector-web.
        object: String,
        /// Manifests; default: those the controller last loaded (recorded in the store).
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the JSON Schema of manifest documents.
    Schema,
    /// Turn a Compose / stack file (version 3.x) into manifests: one file per service, plus
    /// networks.yaml, volumes.yaml and stack.yaml. Prints the secrets to provide and everything
    /// steward cannot express. Exit 0 written, 1 on an unreadable or invalid file.
    Import {
        file: PathBuf,
        /// The stack name it was deployed with (`docker stack deploy -c FILE NAME`): the
        /// manifests then describe exactly what runs, to adopt it without any change.
        #[arg(long)]
        stack: Option<String>,
        /// Directory to write to. Default: the current directory.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum Listen {
    Off,
    On(std::net::SocketAddr),
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::On)
        .map_err(|e| format!("expected ADDR:PORT or off: {e}"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    steward_spec::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    steward_spec::set_secrets_dir(cli.secrets_dir.clone());
    init_logging(cli.log_format);
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
