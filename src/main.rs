//! The `keyward` binary: the CLI edge. Library errors become `anyhow` reports here.

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cli::config::{Effective, Given, Source};
use keyward::cms::Rate;
use keyward::cms::{self, AdminToken, CmsConfig};
use keyward::gitops::{self, GitopsError, Mode};
use keyward::model::Tier;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Prints to stdout; a closed pipe is an error (ending the command quietly), not a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod cli;

#[derive(Parser)]
#[command(name = "keyward", version, about = "Headless-CMS API keys as code")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded reference CMS key service.
    Cms {
        #[command(subcommand)]
        command: CmsCommand,
    },
    /// Show what apply would change: exit 0 = no changes, 2 = changes pending, 1 = error.
    Plan(GitopsArgs),
    /// Make the CMS match the manifests and write each generated key into a Secret manifest;
    /// or apply a plan saved with `plan --out FILE`, only if nothing moved since.
    Apply(ApplyArgs),
    /// Give keys a new value now (a suspected leak, someone leaving), whatever their schedule:
    /// the old value keeps working for each key's rotationOverlap (with --now, not at all), the
    /// new one goes to the Secret as apply writes it, and nothing else of the manifests is
    /// applied. Exit 0 done, 1 error.
    Rotate(RotateArgs),
    /// What keys may do: each API x operation with where the right comes from (default,
    /// per-API permissions, scope, management permission), environments, and the CORS origins
    /// and public endpoints of their policy; with --live, how the CMS's key differs. Reads
    /// only. Exit 0 (with --live: in sync), 2 (--live: the CMS differs), 1 error.
    Explain(ExplainArgs),
    /// Print the CustomResourceDefinitions (what crds/ holds).
    Crd,
    /// Print the effective configuration (keyward.toml, environment, defaults) and where each
    /// value comes from; never a credential.
    Config(ConfigArgs),
    /// Run the Kubernetes controller over ApiKeyPolicy resources.
    Operator(OperatorArgs),
    /// Print a shell completion script (`keyward completions bash > /etc/bash_completion.d/keyward`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, roff (`keyward man > keyward.1; man ./keyward.1`), or a
    /// subcommand's (`keyward man plan > keyward-plan.1`).
    Man {
        /// The subcommand (plan, apply, cms, ...); without it, keyward's own page.
        subcommand: Option<String>,
    },
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "KEYWARD_NAMESPACE")]
    namespace: Option<String>,
    /// Only reconcile policies matching this label selector (for sharding).
    #[arg(long)]
    selector: Option<String>,
    /// Connection for policies without connectionRef: CmsConnection/NAMESPACE/NAME or
    /// ClusterCmsConnection/NAME.
    #[arg(long)]
    default_connection: Option<keyward::operator::DefaultConnection>,
    /// How often an unchanged policy re-reads the CMS to repair drift (e.g. 5m).
    #[arg(long, default_value = "5m")]
    drift_interval: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Run several replicas: only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "keyward-system")]
    lease_namespace: String,
    #[arg(long, default_value = "keyward-operator")]
    lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "HOSTNAME", default_value = "keyward")]
    identity: String,
    /// On SIGTERM or Ctrl-C, how long to wait for running reconciles before abandoning them
    /// and releasing the Lease; keep it below the pod's terminationGracePeriodSeconds. A second
    /// signal stops at once.
    #[arg(long, default_value = "20s", value_parser = wait_duration)]
    shutdown_grace: std::time::Duration,
    /// How long one reconcile's CMS calls may wait for retries in all (also `Retry-After`);
    /// then it fails and the policy's own backoff (1 s doubling to 5 min) takes over, so a CMS
    /// that is down does not hold workers that other connections' policies need.
    #[arg(long, default_value = "5s", value_parser = wait_duration)]
    retry_budget: std::time::Duration,
    /// How long the keys of a policy whose namespace its ClusterCmsConnection no longer admits
    /// keep working before they are revoked (with a KeysRevoked event).
    #[arg(long, default_value = "1h", value_parser = wait_duration)]
    offboarding_grace: std::time::Duration,
    /// How long one reconcile's CMS calls may take in all: each call gets what is left (at
    /// most 30 s), so an endpoint that accepts and never answers holds a worker no longer.
    #[arg(long, default_value = "60s", value_parser = wait_duration)]
    reconcile_timeout: std::time::Duration,
    /// How often a connection that did not change is checked again (one cheap CMS call; its
    /// status.conditions Ready). A change to it, its Secrets or its users checks it at once.
    #[arg(long, default_value = "5m", value_parser = std_duration)]
    connection_check_interval: std::time::Duration,
    /// Reconciles at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Where connections may point, comma-separated: host patterns (`*.cms.example.com`) and
    /// CIDRs (`10.0.0.0/8`); a connection elsewhere is refused (EndpointNotAllowed). Without
    /// it, anywhere but link-local and cloud metadata addresses (never called).
    #[arg(long, value_delimiter = ',')]
    allowed_endpoints: Vec<String>,
    /// Reconciles at once on one connection (the rest of its policies look again a second
    /// later); one whose reconciles end well and quickly may run up to every worker but this
    /// share: one connection cannot hold every worker.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    workers_per_connection: u16,
}

/// Which configuration file and profile (plan, apply, config).
#[derive(clap::Args)]
struct ConfigArgs {
    /// The configuration file (default: keyward.toml in the current directory, if there).
    #[arg(long = "config", env = "KEYWARD_CONFIG")]
    file: Option<PathBuf>,
    /// A `[profiles.NAME]` of the file, over its top-level settings.
    #[arg(long, env = "KEYWARD_PROFILE")]
    profile: Option<String>,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// A plan saved with `keyward plan --out FILE`: the manifests it names are read again, the
    /// plan is made again, and applied only if it is the same (else exit 1, saying what moved).
    saved_plan: Option<PathBuf>,
    #[command(flatten)]
    gitops: GitopsArgs,
}

#[derive(clap::Args)]
struct RotateArgs {
    /// NAMESPACE/POLICY (each of its keys) or NAMESPACE/POLICY/KEY, as many as needed.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<keyward::plan::KeyTarget>,
    /// No overlap: the old value stops working at once (a leaked key). Workloads that have
    /// not read the new value get 401 until they do.
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    gitops: GitopsArgs,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// NAMESPACE/POLICY (each of its keys) or NAMESPACE/POLICY/KEY, as many as needed.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<keyward::plan::KeyTarget>,
    /// Also read the CMS: the key it holds and every difference from what is declared.
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    gitops: GitopsArgs,
}

#[derive(clap::Args)]
struct GitopsArgs {
    /// Manifest files or directories (multi-document YAML; directories are read recursively),
    /// or `-` for standard input (`kustomize build overlays/prod | keyward plan -f -`).
    #[arg(short = 'f', long = "filename")]
    paths: Vec<PathBuf>,
    /// plan: also save the plan to this file, for `keyward apply FILE` (it holds no key value).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where Secret manifests are written (one YAML per Secret) and read back from
    /// [default: .keyward/secrets, or keyward.toml's secrets_dir].
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Where the generated Secrets go: files in the secrets directory (dir), or straight to a
    /// cluster (kubernetes: server-side apply as field manager keyward-cli, one apply per
    /// namespace at a time through the Lease keyward-cli, nothing written to disk).
    #[arg(long, value_enum, default_value_t = SecretsToArg::Dir)]
    secrets_to: SecretsToArg,
    /// --secrets-to kubernetes: the kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or
    /// the pod's service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// --secrets-to kubernetes: the kubeconfig context [default: its current context].
    #[arg(long)]
    context: Option<String>,
    /// Data directory of the embedded reference CMS (used when no connection is configured)
    /// [default: .keyward/cms, or keyward.toml's data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
    /// What to print: the plan for people (text), or the outcome for tools (json, yaml; with
    /// a formatVersion).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Apply even when the secrets directory is missing, empty or unreadable and keys the CMS
    /// already holds would get new values because of it (without it, apply refuses and
    /// changes nothing).
    #[arg(long)]
    regenerate_missing: bool,
    /// How long to wait for another keyward that holds the secrets directory (apply) or the
    /// embedded CMS's data directory; 0s: fail at once, naming its pid.
    #[arg(long, default_value = "60s", value_parser = wait_duration)]
    lock_timeout: std::time::Duration,
    /// Also revoke the keys of policies that are no longer in the files (keys the CLI created
    /// on the connections these files use; an operator's keys are never pruned).
    #[arg(long)]
    prune: bool,
    /// apply, rotate: append one JSON line per write made (to the CMS: keys, CORS origins,
    /// public endpoints; to a Secret) to this file: when, the command and user, the
    /// connection, what, on which key or Secret, the result. Never a key value.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// CA certificates (PEM) to trust besides the system's when reaching the CMS over HTTPS,
    /// for connections that name no CA Secret of their own.
    #[arg(long, env = "KEYWARD_CMS_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SecretsToArg {
    Dir,
    Kubernetes,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum CmsCommand {
    /// Serve the reference CMS (SQLite under --data).
    Serve(Box<ServeArgs>),
    /// Start a throwaway reference CMS in-process and walk through a key's life: create, use,
    /// get refused, regenerate, revoke.
    Demo {
        /// Data directory of the demo instance (kept); without it, a temporary directory that
        /// is removed at the end.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory for the database and the generated admin token.
    #[arg(long, default_value = ".keyward/cms")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8780")]
    listen: SocketAddr,
    /// Key quota of a plan (hobby 1, team 3, business 10, enterprise 20); unlimited if absent.
    #[arg(long, value_enum)]
    plan: Option<PlanArg>,
    /// Requests per second per client address on public endpoints (burst: twice this).
    #[arg(long, default_value_t = 20)]
    public_rate: u32,
    /// Requests per second per API key (burst: twice this).
    #[arg(long, default_value_t = 1000)]
    key_rate: u32,
    /// Values needing an Argon2id check (a wrong secret or a value's first use) per second per
    /// client address and key (burst: twice this); over it: 429 before any hashing.
    #[arg(long, default_value_t = cms::DEFAULT_VERIFY_RATE)]
    verify_rate: u32,
    /// Largest request body in bytes; larger bodies answer 413 (and no entry grows past it).
    #[arg(long, default_value_t = cms::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Bytes of request bodies read or held at once, over every connection (each connection
    /// holds at most four bodies); a body waits for room before it is read, then 503.
    #[arg(long, default_value_t = cms::server::DEFAULT_BODIES_IN_FLIGHT)]
    max_bodies_in_flight: usize,
    /// Most entries one API holds, over every environment; a create beyond answers 507.
    #[arg(long, default_value_t = cms::service::DEFAULT_CONTENT_LIMITS.max_entries)]
    max_entries: usize,
    /// Most bytes one API's entries hold, over every environment; a write beyond answers 507.
    #[arg(long, default_value_t = cms::service::DEFAULT_CONTENT_LIMITS.max_api_bytes)]
    max_api_bytes: u64,
    /// Most bytes of entries in one listing: a page ends early rather than grow past it.
    #[arg(long, default_value_t = cms::service::DEFAULT_CONTENT_LIMITS.max_answer_bytes)]
    max_answer_bytes: usize,
    /// Time a client has to send a request's head once it started (e.g. 10s); then the
    /// connection is closed.
    #[arg(long, default_value = "10s", value_parser = std_duration)]
    header_timeout: std::time::Duration,
    /// Keep-alive connections with no request close after this long (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = std_duration)]
    idle_timeout: std::time::Duration,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key. SIGHUP reloads both.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most connections served at once; more wait in the listen queue.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// On SIGTERM or Ctrl-C, how long the requests in flight get to finish (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = std_duration)]
    shutdown_grace: std::time::Duration,
    /// How long to wait for another keyward that holds the data directory; 0s: fail at once,
    /// naming its pid.
    #[arg(long, default_value = "60s", value_parser = wait_duration)]
    lock_timeout: std::time::Duration,
    /// Append one JSON line per write request to the management API (keys, APIs, CORS,
    /// public endpoints, members, roles, service operations) to this file: when, who (admin,
    /// a key's id, unauthenticated), from where, what, the status. Never a key value.
    #[arg(long)]
    audit_log: Option<PathBuf>,
}

/// The plans `--plan` takes (the model stays free of the CLI's parser).
#[derive(Clone, Copy, ValueEnum)]
enum PlanArg {
    Hobby,
    Team,
    Business,
    Enterprise,
}

impl From<PlanArg> for Tier {
    fn from(p: PlanArg) -> Tier {
        match p {
            PlanArg::Hobby => Tier::Hobby,
            PlanArg::Team => Tier::Team,
            PlanArg::Business => Tier::Business,
            PlanArg::Enterprise => Tier::Enterprise,
        }
    }
}

/// A duration flag (`10s`, `2m`, ...), at least one second.
fn std_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = keyward::policy::duration::parse(s)?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{s}' must be at least 1s"))
}

/// A duration flag that may be zero (`0s`: do not wait).
fn wait_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = keyward::policy::duration::parse(s)?;
    std::time::Duration::try_from(d).map_err(|_| format!("'{s}' cannot be negative"))
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // Servers log what they do; one-shot commands print their result and log only trouble.
    let level = match cli.command {
        Command::Cms {
            command: CmsCommand::Serve(_),
        }
        | Command::Operator(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, level);
    match run(cli.command).await {
        Ok(code) => code,
        // `keyward cms demo | head -3`: the reader has gone; nothing more to say.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Help and version exit 0; every usage error (an unknown flag or subcommand, a missing or bad
/// value) exits 1. clap's own code for those is 2, which `plan` means as "changes pending": a
/// typo in a pipeline must never read as that.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    // Printing can only fail when the reader has gone; the exit code still says what happened.
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// A progress line on stderr while apply works (`applying: 3 of 10 changes done`), only for a
/// person: text output and stderr a terminal; never in JSON or YAML, or when piped.
fn progress_on_terminal(output: Output) -> Option<keyward::engine::Progress> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    (output == Output::Text && terminal).then(|| {
        std::sync::Arc::new(|done: usize, total: usize| {
            // `\r` rewrites the line; it is cleared when the run ends.
            eprint!("\rapplying: {done} of {total} changes done");
        }) as keyward::engine::Progress
    })
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(command: Command) -> Result<ExitCode> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Cms {
            command: CmsCommand::Serve(args),
        } => ok(serve(*args).await),
        Command::Cms {
            command: CmsCommand::Demo { data },
        } => ok(cli::demo::demo(data).await),
        Command::Plan(args) => gitops(args, None, Mode::Plan, None).await,
        Command::Apply(ApplyArgs {
            saved_plan,
            gitops: args,
        }) => gitops(args, saved_plan, Mode::Apply, None).await,
        Command::Rotate(RotateArgs {
            targets,
            now,
            gitops: args,
        }) => {
            let ask = keyward::plan::RotateNow {
                targets,
                at_once: now,
            };
            gitops(args, None, Mode::Apply, Some(ask)).await
        }
        Command::Explain(args) => explain(args).await,
        Command::Operator(args) => operator(args).await.map(|()| ExitCode::SUCCESS),
        Command::Crd => {
            print!("{}", keyward::policy::crds_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        // Both from the same definitions as the parser, so they cannot drift from it.
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut out);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { subcommand } => {
            let cli = Cli::command();
            let page = match subcommand {
                None => cli,
                Some(name) => {
                    let known: Vec<String> = cli
                        .get_subcommands()
                        .map(|c| c.get_name().to_owned())
                        .collect();
                    cli.find_subcommand(&name)
                        .with_context(|| {
                            format!("no subcommand '{name}' (subcommands: {})", known.join(", "))
                        })?
                        .clone()
                        .name(format!("keyward-{name}"))
                        .version(env!("CARGO_PKG_VERSION"))
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(args) => {
            let (effective, _) = effective_config(&args, Given::default()).await?;
            let token_set = std::env::var_os(&effective.token_env.value).is_some();
            print!("{}", effective.describe(token_set));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rate(name: &str, v: u32) -> Result<Rate> {
    Rate::new(v).with_context(|| format!("--{name} must be at least 1"))
}

async fn serve(args: ServeArgs) -> Result<()> {
    // Unset and empty mean the same; anything else is checked by `cms::start`.
    let admin_token = std::env::var("KEYWARD_CMS_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let cfg = CmsConfig {
        public_rate: rate("public-rate", args.public_rate)?,
        key_rate: rate("key-rate", args.key_rate)?,
        verify_rate: rate("verify-rate", args.verify_rate)?,
        listen: args.listen,
        plan: args.plan.map(Tier::from),
        admin_token: admin_token.map(AdminToken::new),
        max_body: args.max_body,
        conn: cms::server::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
            max_body: args.max_body,
            bodies_in_flight: args.max_bodies_in_flight,
        },
        lock_wait: args.lock_timeout,
        content: cms::service::ContentLimits {
            max_entries: args.max_entries,
            max_api_bytes: args.max_api_bytes,
            max_entry_bytes: args.max_body,
            max_answer_bytes: args.max_answer_bytes,
        },
        audit_log: args.audit_log,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(cms::server::TlsFiles { cert, key }),
            _ => None,
        },
        ..CmsConfig::new(args.data)
    };
    let running = cms::start(cfg).await?;
    match &running.admin_token_path {
        Some(p) => println!("admin token: {}", p.display()),
        None => println!("admin token: from KEYWARD_CMS_ADMIN_TOKEN"),
    }
    println!("listening on {}", running.url());
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let tls = running.tls();
    let reloads = async move {
        while hangups.recv().await.is_some() {
            let Some(tls) = tls.clone() else {
                tracing::info!("SIGHUP: no TLS to reload");
                continue;
            };
            // File reads, off the async workers.
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(())) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: reload failed; the old certificate stays")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: the reload stopped"),
            }
        }
    };
    tokio::spawn(reloads);
    // SIGTERM (what Kubernetes and the image's PID 1 get) or Ctrl-C: a graceful stop; a second
    // signal stops at once.
    let mut signals = StopSignals::new()?;
    let stop = async move {
        let name = signals.next().await;
        tracing::info!(signal = name, "stopping");
        tokio::spawn(async move {
            let name = signals.next().await;
            tracing::warn!(signal = name, "second signal: stopping at once");
            std::process::exit(1);
        });
    };
    running
        .serve_until(stop, args.shutdown_grace)
        .await
        .context("server failed")
}

/// A non-empty environment variable.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The configuration a run uses: `given` (flags and their environment variables) over the
/// environment, the profile and the file; returns the file too.
async fn effective_config(
    args: &ConfigArgs,
    mut given: Given,
) -> Result<(Effective, Option<cli::config::Loaded>)> {
    let named = args.file.clone();
    let loaded = tokio::task::spawn_blocking(move || cli::config::load(named.as_deref()))
        .await
        .context("reading the configuration stopped")??;
    given.profile = args.profile.clone();
    let effective = Effective::resolve(given, loaded.as_ref(), &env_value)?;
    Ok((effective, loaded))
}

/// The manifests a run reads and whether it prunes: `-f` and `--prune`, or what a saved plan
/// names (with the plan, to apply only if nothing moved).
fn manifests_to_read(
    args: &GitopsArgs,
    saved_plan: Option<&std::path::Path>,
    mode: Mode,
) -> Result<(Vec<PathBuf>, bool, Option<gitops::saved::SavedPlan>)> {
    match saved_plan {
        Some(_) if !args.paths.is_empty() => {
            anyhow::bail!("give either a saved plan or -f, not both: the plan names its manifests")
        }
        Some(file) => {
            let text = keyward::files::read_small_text(file, gitops::saved::MAX_SAVED_PLAN)
                .with_context(|| {
                    format!(
                        "cannot read the saved plan {} (manifests are given with -f)",
                        file.display()
                    )
                })?;
            let saved = gitops::saved::SavedPlan::parse(&file.display().to_string(), &text)?;
            Ok((saved.paths.clone(), saved.prune, Some(saved)))
        }
        None if args.paths.is_empty() => anyhow::bail!(
            "which manifests? -f FILE_OR_DIR (or - for standard input){}",
            if mode == Mode::Apply {
                ", or a saved plan"
            } else {
                ""
            }
        ),
        None => Ok((args.paths.clone(), args.prune, None)),
    }
}

/// `plan` and `apply`: exit 0 = nothing to do / applied, 2 = plan has changes, 1 = error.
async fn gitops(
    args: GitopsArgs,
    saved_plan: Option<PathBuf>,
    mode: Mode,
    rotate: Option<keyward::plan::RotateNow>,
) -> Result<ExitCode> {
    let (paths, prune, expect) = manifests_to_read(&args, saved_plan.as_deref(), mode)?;
    if args.out.is_some() && mode == Mode::Apply {
        anyhow::bail!("--out saves a plan: it goes with keyward plan");
    }
    if rotate.is_some() && args.prune {
        anyhow::bail!("--prune goes with keyward apply: a rotation changes nothing else");
    }
    let audit_log = match &args.audit_log {
        Some(_) if mode == Mode::Plan => {
            anyhow::bail!("--audit-log records writes: it goes with apply and rotate")
        }
        Some(path) => Some(std::sync::Arc::new(
            keyward::cms::audit::AuditLog::open(path)
                .with_context(|| format!("cannot open the audit log {}", path.display()))?,
        )),
        None => None,
    };
    let opts = gitops::Options {
        paths,
        prune,
        expect,
        rotate,
        audit_log,
        ..options(&args, mode).await?
    };
    let result = gitops::run(&opts).await;
    if opts.progress.is_some() {
        // The progress line goes before the outcome is printed.
        eprint!("\r\x1b[2K");
    }
    finish(result, &args, &opts)
}

/// `keyward explain`: exit 0, or with --live 2 when the CMS differs from the manifests.
async fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let g = &args.gitops;
    if g.out.is_some()
        || g.prune
        || g.regenerate_missing
        || g.audit_log.is_some()
        || g.secrets_to != SecretsToArg::Dir
    {
        anyhow::bail!("explain reads only: --out, --prune, --regenerate-missing, --audit-log and --secrets-to go with plan and apply");
    }
    let (paths, _, _) = manifests_to_read(g, None, Mode::Plan)?;
    let opts = gitops::Options {
        paths,
        progress: None,
        ..options(g, Mode::Plan).await?
    };
    let explained = match gitops::explain(&opts, &args.targets, args.live).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let for_tools = serde_json::json!({"formatVersion": gitops::FORMAT_VERSION, "keys": explained});
    match g.output {
        Output::Text => {
            let texts: Vec<String> = explained.iter().map(|e| e.text()).collect();
            say!("{}", texts.join("\n").trim_end());
        }
        Output::Json => say!("{}", serde_json::to_string_pretty(&for_tools)?),
        Output::Yaml => say!("{}", serde_yaml_ng::to_string(&for_tools)?.trim_end()),
    }
    let differs = explained
        .iter()
        .filter_map(|e| e.live.as_ref())
        .any(|h| h.id.is_none() || !h.differences.is_empty());
    Ok(ExitCode::from(if differs { 2 } else { 0 }))
}

/// The options every manifest command shares, from its flags and the configuration (no
/// manifests yet: the caller sets them).
async fn options(args: &GitopsArgs, mode: Mode) -> Result<gitops::Options> {
    let given = Given {
        secrets_dir: args.secrets_dir.clone().map(|p| (p, Source::Flag)),
        data_dir: args.data_dir.clone().map(|p| (p, Source::Flag)),
        ca_file: args.ca_file.clone().map(|p| {
            let from_env =
                std::env::var_os("KEYWARD_CMS_CA_FILE").is_some_and(|v| v == p.as_os_str());
            let source = if from_env {
                Source::Env("KEYWARD_CMS_CA_FILE".into())
            } else {
                Source::Flag
            };
            (p, source)
        }),
        profile: None,
    };
    let (c, _) = effective_config(&args.config, given).await?;
    let ca_pem = match &c.ca_file.value {
        Some(path) => Some(
            keyward::files::read_small(path, keyward::files::MAX_SMALL_FILE)
                .context("cannot read the CA file")?,
        ),
        None => None,
    };
    let progress = progress_on_terminal(args.output);
    let secrets_to = match args.secrets_to {
        SecretsToArg::Dir if args.kubeconfig.is_some() || args.context.is_some() => {
            anyhow::bail!("--kubeconfig and --context go with --secrets-to kubernetes")
        }
        SecretsToArg::Dir => gitops::SecretsTo::Dir,
        SecretsToArg::Kubernetes if args.secrets_dir.is_some() => {
            anyhow::bail!("--secrets-dir goes with --secrets-to dir: with kubernetes, the Secrets are in the cluster")
        }
        SecretsToArg::Kubernetes => gitops::SecretsTo::Kubernetes(gitops::cluster::ClusterTarget {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        }),
    };
    Ok(gitops::Options {
        ca_pem,
        paths: Vec::new(),
        secrets_to,
        secrets_dir: c.secrets_dir.value,
        data_dir: c.data_dir.value,
        mode,
        env_url: c.url.value,
        env_token: env_value(&c.token_env.value).map(Into::into),
        prune: false,
        env_provider: c.provider.value,
        clock: keyward::engine::Clock::system(),
        regenerate_missing: args.regenerate_missing,
        lock_timeout: args.lock_timeout,
        progress,
        expect: None,
        rotate: None,
        audit_log: None,
    })
}

/// Prints a run's outcome (or what was done before it failed) and its exit code; saves the
/// plan with `--out`.
fn finish(
    result: Result<gitops::Outcome, GitopsError>,
    args: &GitopsArgs,
    opts: &gitops::Options,
) -> Result<ExitCode> {
    let print = |o: &gitops::Outcome| match args.output {
        Output::Text => print!("{}", o.text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&o.json()).unwrap_or_default()
        ),
        Output::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(&o.json()).unwrap_or_default()
        ),
    };
    match result {
        Ok(outcome) => {
            for w in &outcome.warnings {
                eprintln!("{w}");
            }
            if let Some(file) = &args.out {
                let saved = gitops::saved::SavedPlan::of(&outcome, &opts.paths, opts.prune);
                let text = serde_json::to_string_pretty(&saved)?;
                std::fs::write(file, text + "\n")
                    .with_context(|| format!("cannot save the plan to {}", file.display()))?;
            }
            print(&outcome);
            // Apply leaves ObserveOnly changes for a person: they are still pending.
            let pending = match opts.mode {
                Mode::Plan => outcome.has_changes(),
                Mode::Apply => outcome.observe_only_changes() > 0,
            };
            Ok(ExitCode::from(if pending { 2 } else { 0 }))
        }
        Err(e) => {
            if let GitopsError::Problems { partial, .. }
            | GitopsError::Apply { partial, .. }
            | GitopsError::SecretsMissing { partial, .. }
            | GitopsError::StaleFile { partial, .. } = &e
            {
                print(partial);
            }
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn operator(args: OperatorArgs) -> Result<()> {
    let drift = keyward::policy::duration::parse(&args.drift_interval)
        .map_err(|e| anyhow::anyhow!("--drift-interval: {e}"))?;
    let drift =
        std::time::Duration::try_from(drift).context("--drift-interval must be positive")?;
    let config = keyward::operator::OperatorConfig {
        namespace: args.namespace,
        label_selector: args.selector,
        default_connection: args.default_connection,
        drift_interval: drift,
        field_manager: "keyward".into(),
        leader_election: args
            .leader_election
            .then_some(keyward::operator::LeaderElection {
                namespace: args.lease_namespace,
                lease_name: args.lease_name,
                identity: args.identity,
                lease_seconds: 15,
            }),
        clock: keyward::engine::Clock::system(),
        shutdown_grace: args.shutdown_grace,
        retry_budget: args.retry_budget,
        offboarding_grace: args.offboarding_grace,
        reconcile_timeout: args.reconcile_timeout,
        workers: usize::from(args.workers),
        workers_per_connection: usize::from(args.workers_per_connection),
        allowed_endpoints: args.allowed_endpoints,
        connection_check_interval: args.connection_check_interval,
    };
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API")?;
    let metrics = std::sync::Arc::new(keyward::operator::metrics::Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let app = keyward::operator::metrics::router(metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (stop, shutdown) = keyward::operator::Shutdown::new();
    let mut signals = StopSignals::new()?;
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!(signal = name, "stopping");
        let _ = stop.send(true);
        let name = signals.next().await;
        tracing::warn!(signal = name, "second signal: stopping at once");
        std::process::exit(1);
    });
    keyward::operator::run(client, config, metrics, shutdown).await
}

/// SIGTERM (what Kubernetes sends to stop a pod) and SIGINT (Ctrl-C).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
