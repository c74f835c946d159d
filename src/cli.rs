//! The `liandong` command line: argument parsing and the commands that need no server.
//!
//! Exit status: 0 success; 2 bad input (a document, canonical JSON, a profile, an unknown
//! endpoint), with one line on stderr naming the field; 1 anything else (a file that cannot
//! be read). Nothing is printed on stdout when a command fails.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod certs;
mod datasets;

use crate::formats::{Endpoint, FormatError, Registry};
use crate::model::{json, StatusUpdate, Transfer, TransferRequest};

/// Liandong (联动): the gateway through which 110 police desks and 12345 hotlines hand cases
/// to each other.
#[derive(Debug, Parser)]
#[command(name = "liandong", version, about)]
pub struct Cli {
    /// A directory of extra format profiles and endpoint files (*.toml), added to the built-in
    /// ones; see docs/PROFILES.md.
    #[arg(long, global = true, env = "LIANDONG_PROFILES", value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate a document: native → canonical JSON (--from), canonical JSON → native (--to),
    /// or native → native (--from and --to).
    Convert(ConvertArgs),
    /// List the endpoint registry.
    Endpoints {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with format profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Run the gateway (`--config FILE`), or check a configuration and exit (`--check-config FILE`).
    Serve(ServeArgs),
    /// Write a working site to try the gateway with: config, development CA and certificates.
    Init(InitArgs),
    /// Drive native submissions at the gateway over mutual TLS and report throughput and latency.
    Bench(BenchArgs),
    /// List and replay deliveries (dead letters).
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// The audit trail: check its hash chains, or print one transfer's evidence.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Shared datasets: import and export files, follow a gateway's change feed.
    Datasets {
        #[command(subcommand)]
        command: datasets::DatasetsCommand,
    },
    /// The whole linkage in one command: a gateway, simulated 110 and 12345 platforms of five
    /// provinces, a partner agency, and the report's scenarios; ends with a table.
    Demo {
        /// How long the volume scenario runs.
        #[arg(long, default_value = "30s", value_parser = crate::config::duration::parse)]
        duration: std::time::Duration,
        /// Jiangxi's car-moving transfers per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Write the site here and keep the gateway running until Ctrl-C.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Run one simulated platform against a gateway: it receives deliveries in its own format,
    /// answers them (accepted, resolved), closes its own transfers after a call-back, and
    /// submits transfers at --rate.
    Simulate(SimulateArgs),
    /// Certificates for security teams: a CA, issuing, renewing, revoking, CRLs, expiry checks.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Show where a transfer of a category in a region would go, and the directory records behind it.
    Route(datasets::RouteArgs),
    /// Compare an endpoint's view of its transfers (a file) with the gateway's records.
    Reconcile(datasets::ReconcileArgs),
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The endpoint to be (REGION/PLATFORM).
    pub endpoint: String,
    /// The gateway's mutual-TLS address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub gateway: std::net::SocketAddr,
    /// The CA bundle both sides' certificates chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// This endpoint's client certificate (chain) and key.
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// Where to receive deliveries (give this address's URL as the endpoint's `url`).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: std::net::SocketAddr,
    /// The receiving server's certificate and key.
    #[arg(long)]
    pub server_cert: PathBuf,
    #[arg(long)]
    pub server_key: PathBuf,
    /// Transfers to submit per second (0: only answer).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// The canonical category of submitted transfers.
    #[arg(long, default_value = "NP07")]
    pub category: String,
    /// How long to run; until Ctrl-C when absent.
    #[arg(long, value_parser = crate::config::duration::parse)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "check_config",
        conflicts_with = "check_config"
    )]
    pub config: Option<PathBuf>,
    /// Check this configuration (keys, files, certificates, profiles) and exit.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to write the site into.
    pub dir: PathBuf,
    /// The HTTPS (mutual TLS) address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// The admin (plain HTTP) address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: std::net::SocketAddr,
    /// Print a JSON manifest of what was written.
    #[arg(long)]
    pub json: bool,
    /// Replace the site already in DIR: a new CA, new certificates, a new configuration.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A site's configuration (`liandong init`): the address, the CA and the identities come from it.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// An endpoint to submit as, in its own format; its certificate is
    /// `identities/REGION-PLATFORM.pem` beside the config. Several (repeated or comma-separated)
    /// share the connections in turn.
    #[arg(long = "endpoint", default_value = "330200/110", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Submit as the site's first N endpoints instead (each with its own certificate, format and
    /// rate-limit budget).
    #[arg(long, value_name = "N", conflicts_with = "endpoints")]
    pub identities: Option<usize>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::config::duration::parse)]
    pub duration: std::time::Duration,
    /// Requests per second in all; flat out when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send to this base URL instead of the configured listener (e.g. a proxy to compare with);
    /// several, comma-separated, spread the connections over them (replicas, native HTTPS).
    #[arg(long)]
    pub url: Option<String>,
    /// Submit over gRPC (liandong.v1.TransferService/SubmitTransfer) instead of native HTTPS.
    #[arg(long)]
    pub grpc: bool,
    /// No gateway: submit in this process straight to the site's store through the engine
    /// (routing, deadlines, durable commit), the baseline for the front door's cost. Stop the
    /// site's gateway first on SQLite (one writer per file).
    #[arg(long, conflicts_with_all = ["grpc", "url"])]
    pub store_only: bool,
    /// Also be the destination: answer, as each endpoint would, at every local delivery `url`
    /// of the configuration, and report what arrived — delivered/s, the backlog each second,
    /// submit → destination latency, and the drain after the last submission.
    #[arg(long, conflicts_with_all = ["grpc", "store_only"])]
    pub deliver: bool,
    /// With --deliver: the destinations are down for this long first (nothing listens), then
    /// come back: the backlog the outage made, and how fast it drains while submissions go on.
    #[arg(long, requires = "deliver", value_parser = crate::config::duration::parse)]
    pub outage: Option<std::time::Duration>,
    /// With --outage: the destinations go down this long after the start instead (a long run's
    /// outage in its middle), and the connections the gateway had are cut.
    #[arg(long, requires = "outage", value_parser = crate::config::duration::parse)]
    pub outage_from: Option<std::time::Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk every replica's chain; exit 1 naming the first changed, removed or reordered entry.
    Verify {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One transfer's whole evidence trail: who sent what, when, and what was answered.
    Export {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        transfer: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List dead letters (deliveries given up), oldest first.
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue: these ids, or every one to a destination, or all.
    Replay {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Outbox item ids, as `list` shows them.
        #[arg(required_unless_present_any = ["destination", "all"], conflicts_with_all = ["destination", "all"])]
        ids: Vec<i64>,
        /// Every dead letter to this destination (`REGION/PLATFORM`), e.g. after its outage.
        #[arg(long, value_name = "ENDPOINT", conflicts_with = "all")]
        destination: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The endpoint that sent the native document (REGION/PLATFORM, e.g. 330200/110).
    #[arg(long, value_name = "ENDPOINT")]
    pub from: Option<String>,
    /// The endpoint to render the document for.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: Option<String>,
    /// Which document: a transfer or a status update.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The input file; standard input when absent.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Transfer,
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Check every profile and endpoint file in DIR; each mistake is reported with its file
    /// and key.
    Check { dir: PathBuf },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit status 2.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: exit status 1.
    #[error("{0}")]
    Failed(String),
}

impl From<FormatError> for CliError {
    fn from(e: FormatError) -> Self {
        CliError::Invalid(e.to_string())
    }
}

/// Runs a parsed command line, printing to the given streams.
pub fn run(cli: Cli, stdout: &mut dyn Write) -> Result<(), CliError> {
    let registry = || match &cli.profiles {
        None => Ok(Registry::builtin()),
        Some(dir) => Registry::with_dir(dir).map_err(|errors| {
            CliError::Invalid(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }),
    };
    let write = |out: &mut dyn Write, bytes: &[u8]| {
        out.write_all(bytes).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
    };
    match &cli.command {
        Command::Convert(args) => {
            let registry = registry()?;
            let input = read_input(args.file.as_ref())?;
            let output = convert(&registry, args, &input)?;
            write(stdout, &output)
        }
        Command::Endpoints { json } => {
            let registry = registry()?;
            write(stdout, endpoints(&registry, *json).as_bytes())
        }
        Command::Serve(args) => serve(args),
        Command::Init(args) => {
            let registry = registry()?;
            if let (Some(found), false) = (crate::site::existing(&args.dir), args.force) {
                return Err(CliError::Invalid(format!(
                    "{}: a site is already here ({}); run it with `liandong serve --config {}`, or give --force to replace its CA, certificates and configuration",
                    args.dir.display(),
                    found.display(),
                    args.dir.join("liandong.toml").display()
                )));
            }
            let site = crate::site::init(&args.dir, args.listen, args.admin, &registry)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let text = if args.json {
                serde_json::to_string_pretty(&site.manifest()).unwrap_or_default() + "\n"
            } else {
                let names: Vec<&str> =
                    site.identities.iter().map(|(id, _, _)| id.as_str()).collect();
                format!(
                    "wrote a site in {}\n  config:     {}\n  run it:     liandong serve --config {}\n  identities: {} client certificates in {}: {}\n",
                    site.dir.display(),
                    site.config.display(),
                    site.config.display(),
                    site.identities.len(),
                    site.dir.join("identities").display(),
                    names.join(", ")
                )
            };
            write(stdout, text.as_bytes())
        }
        Command::Deliveries { command } => deliveries(command, stdout),
        Command::Audit { command } => audit(command, stdout),
        Command::Datasets { command } => datasets::datasets(command, stdout),
        Command::Route(args) => datasets::route(args, stdout),
        Command::Demo { duration, rate, keep } => {
            let plan =
                crate::demo::DemoPlan { duration: *duration, rate: *rate, keep: keep.clone() };
            let runtime = runtime()?;
            let report = runtime.block_on(crate::demo::run(plan));
            // What is still running (simulated platforms' connections, the store's pool) is
            // left, not waited for: the demo has stopped when it says so.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            let report = report.map_err(CliError::Failed)?;
            write(stdout, report.as_bytes())
        }
        Command::Simulate(args) => simulate(args, stdout),
        Command::Certs { command } => certs::certs(command, &registry()?, stdout),
        Command::Reconcile(args) => datasets::reconcile(args, stdout),
        Command::Bench(args) => {
            let config = load_config(&args.config)?;
            let dir = args.config.parent().unwrap_or(std::path::Path::new("."));
            let endpoints: Vec<String> = match args.identities {
                Some(n) => {
                    config.endpoints.iter().take(n.max(1)).map(|e| e.id.to_string()).collect()
                }
                None => args.endpoints.clone(),
            };
            let submitters = endpoints
                .into_iter()
                .map(|endpoint| {
                    let name = endpoint.replace('/', "-");
                    crate::loadgen::Submitter {
                        cert: dir.join("identities").join(format!("{name}.pem")),
                        key: dir.join("identities").join(format!("{name}-key.pem")),
                        endpoint,
                    }
                })
                .collect();
            let plan = crate::loadgen::Plan {
                url: args
                    .url
                    .clone()
                    .unwrap_or_else(|| format!("https://localhost:{}", config.listen.https.port())),
                ca: config.tls.ca.clone(),
                submitters,
                concurrency: args.concurrency.max(1),
                duration: args.duration,
                rate: args.rate,
                grpc: args.grpc,
                store_only: args.store_only.then(|| Box::new(config.clone())),
                deliver: args.deliver.then(|| Box::new(config.clone())),
                outage: args.outage.map(|lasting| crate::loadgen::Outage {
                    from: args.outage_from.unwrap_or_default(),
                    lasting,
                }),
            };
            let report =
                runtime()?.block_on(crate::loadgen::run(plan)).map_err(CliError::Failed)?;
            let text = if args.json {
                serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
            } else {
                let delivery = report.delivery.as_ref().map(|d| {
                    let backlog: Vec<String> = d.backlog.iter().map(|[t, n]| format!("{t:.0}s:{n:.0}")).collect();
                    let outage = d.after_outage.as_ref().map_or(String::new(), |o| {
                        format!(
                            "after the outage: a backlog of {} cleared in {:.1} s at {:.0} delivered/s\n",
                            o.backlog, o.cleared_seconds, o.delivered_per_second
                        )
                    });
                    outage + &format!(
                        "delivered {} ({} repeated, {} undelivered): {:.0}/s while submitting, then drained in {:.1} s at {:.0}/s; submit → destination p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\nbacklog {}\n",
                        d.delivered,
                        d.repeated,
                        d.undelivered,
                        d.while_submitting_per_second,
                        d.drain_seconds,
                        d.drain_per_second,
                        d.p50_ms,
                        d.p90_ms,
                        d.p99_ms,
                        d.max_ms,
                        backlog.join(" ")
                    )
                });
                format!(
                    "{} ok, {} errors ({} over the rate limit) in {:.1} s: {:.0} submissions/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} {}{}{})\n",
                    report.ok,
                    report.errors,
                    report.limited,
                    report.seconds,
                    report.per_second,
                    report.p50_ms,
                    report.p90_ms,
                    report.p99_ms,
                    report.max_ms,
                    report.concurrency,
                    if args.store_only { "submitters, store only" } else { "connections" },
                    if report.identities > 1 { format!(", {} identities", report.identities) } else { String::new() },
                    report.rate.map(|r| format!(", {r} per second offered")).unwrap_or_default()
                ) + &delivery.unwrap_or_default()
            };
            write(stdout, text.as_bytes())
        }
        Command::Profiles { command: ProfilesCommand::Check { dir } } => {
            let mut registry = Registry::builtin();
            let errors = registry.load_dir(dir);
            if !errors.is_empty() {
                return Err(CliError::Invalid(
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
                ));
            }
            let formats: Vec<&str> = registry.formats().map(|f| f.name.as_str()).collect();
            let summary = format!(
                "{}: ok; the registry now has {} formats ({}) and {} endpoints\n",
                dir.display(),
                formats.len(),
                formats.join(", "),
                registry.endpoints().count()
            );
            write(stdout, summary.as_bytes())
        }
    }
}

/// `simulate`: one simulated platform until the duration ends or Ctrl-C.
fn simulate(args: &SimulateArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    use crate::simulate::{Behaviour, SimulatedPlatform};
    let registry = Registry::builtin();
    let behaviour =
        Behaviour { think: std::time::Duration::from_millis(500), ..Behaviour::default() };
    let report = runtime()?.block_on(async {
        let platform =
            SimulatedPlatform::new(&registry, &args.endpoint, args.gateway, &args.ca, &args.cert, &args.key, behaviour)
                .map_err(CliError::Invalid)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::Failed(format!("--listen {}: {e}", args.listen)))?;
        platform.serve(listener, &args.ca, &args.server_cert, &args.server_key).map_err(CliError::Invalid)?;
        eprintln!("{} simulated: receiving on https://{}/receive, submitting to {}", args.endpoint, args.listen, args.gateway);
        let end = args.duration.map(|d| std::time::Instant::now() + d);
        let tick = (args.rate > 0.0).then(|| std::time::Duration::from_secs_f64(1.0 / args.rate));
        loop {
            if end.is_some_and(|end| std::time::Instant::now() >= end) {
                break;
            }
            match tick {
                Some(tick) => {
                    let request = platform.request(&args.category, crate::model::Urgency::Normal).map_err(CliError::Invalid)?;
                    if let Err(e) = platform.submit(&request).await {
                        eprintln!("submit: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(tick) => {}
                        _ = tokio::signal::ctrl_c() => break,
                    }
                }
                None => tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                },
            }
        }
        let t = &platform.tally;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Ok::<_, CliError>(format!(
            "{}: submitted {}, received {}, statuses sent {}, closed after call-back {}, errors {}\n",
            args.endpoint,
            load(&t.submitted),
            load(&t.received),
            load(&t.statuses_sent),
            load(&t.closed),
            load(&t.errors)
        ))
    })?;
    stdout.write_all(report.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))
}

fn load_config(file: &std::path::Path) -> Result<crate::config::Config, CliError> {
    crate::config::Config::load(file).map_err(|e| CliError::Invalid(e.to_string()))
}

/// `serve`: check the configuration, or run the gateway until SIGINT or SIGTERM.
fn serve(args: &ServeArgs) -> Result<(), CliError> {
    if let Some(file) = &args.check_config {
        let config = load_config(file)?;
        crate::server::registry(&config)
            .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
        crate::security::tls::server_config(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            config.tls.crl.as_deref(),
        )
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
        let destination_ca = config.tls.destination_ca.as_ref().unwrap_or(&config.tls.ca);
        crate::security::tls::client_config(
            destination_ca,
            &config.tls.client_cert,
            &config.tls.client_key,
        )
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    let file = args
        .config
        .as_ref()
        .ok_or_else(|| CliError::Invalid("serve needs --config FILE".into()))?;
    let config = load_config(file)?;
    init_logging(args.log_format);
    runtime()?.block_on(async move {
        let https = tokio::net::TcpListener::bind(config.listen.https)
            .await
            .map_err(|e| CliError::Failed(format!("listen.https {}: {e}", config.listen.https)))?;
        let admin = tokio::net::TcpListener::bind(config.listen.admin)
            .await
            .map_err(|e| CliError::Failed(format!("listen.admin {}: {e}", config.listen.admin)))?;
        crate::server::run(config, crate::server::Listeners { https, admin }, shutdown_signal())
            .await
            .map_err(|e| CliError::Failed(e.to_string()))
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a gateway that has said "ready" must never die of the default
/// action of a SIGTERM sent in the moment before its accept loop starts.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (interrupt, terminate) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The store of a site that has run: an operator's tool reading a database that is not there
/// (a wrong `--config`, a wrong `store.path`) is refused, instead of creating an empty one and
/// reporting on it.
async fn existing_store(config: &crate::config::Config) -> Result<crate::store::Store, CliError> {
    if let crate::config::Store::Sqlite { path, .. } = &config.store {
        if !path.is_file() && std::env::var("LIANDONG_STORE_URL").is_err() {
            return Err(CliError::Failed(format!(
                "store.path: no database at {} (the gateway makes it when it first starts): is this the site's configuration?",
                path.display()
            )));
        }
    }
    crate::server::open_store(config).await.map_err(|e| CliError::Failed(e.to_string()))
}

fn deliveries(command: &DeliveriesCommand, stdout: &mut dyn Write) -> Result<(), CliError> {
    let (DeliveriesCommand::List { config, .. } | DeliveriesCommand::Replay { config, .. }) =
        command;
    let config = load_config(config)?;
    let failed = |e: crate::store::StoreError| CliError::Failed(e.to_string());
    let text = runtime()?.block_on(async {
        let store = existing_store(&config).await?;
        let answer: Result<String, CliError> = async {
        match command {
            DeliveriesCommand::List { json, .. } => {
                let dead = store.dead_letters(1000).await.map_err(failed)?;
                if *json {
                    let list: Vec<serde_json::Value> = dead
                        .iter()
                        .map(|d| serde_json::json!({"id": d.id, "destination": d.destination.to_string(), "transfer_id": d.transfer_id,
                            "kind": d.kind.as_str(), "created_at": d.created_at, "attempts": d.attempts, "last_error": d.last_error}))
                        .collect();
                    return Ok(serde_json::to_string_pretty(&list).unwrap_or_default() + "\n");
                }
                let mut out = format!(
                    "{:<8} {:<14} {:<28} {:<9} {:<20} {:>8}  {}\n",
                    "ID", "DESTINATION", "TRANSFER", "KIND", "QUEUED (UTC+8)", "ATTEMPTS", "LAST ERROR"
                );
                for d in &dead {
                    let queued = crate::model::Timestamp::from_unix_seconds(d.created_at)
                        .map_or_else(String::new, |t| t.format_beijing("yyyy-MM-dd HH:mm:ss"));
                    out.push_str(&format!(
                        "{:<8} {:<14} {:<28} {:<9} {:<20} {:>8}  {}\n",
                        d.id,
                        d.destination.to_string(),
                        d.transfer_id,
                        d.kind.as_str(),
                        queued,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("")
                    ));
                }
                Ok(out)
            }
            DeliveriesCommand::Replay { ids, destination, all, .. } => {
                let bulk = destination.is_some() || *all;
                let ids = if bulk {
                    let (mut chosen, mut after) = (Vec::new(), 0);
                    loop {
                        let page = store.dead_letters_after(after, 1000).await.map_err(failed)?;
                        let Some(last) = page.last() else { break chosen };
                        after = last.id;
                        chosen.extend(
                            page.iter()
                                .filter(|d| destination.as_ref().is_none_or(|e| d.destination.to_string() == *e))
                                .map(|d| d.id),
                        );
                    }
                } else {
                    ids.clone()
                };
                let (mut out, mut refused) = (String::new(), 0);
                let now = crate::model::Timestamp::now().unix_seconds();
                let by = local_operator();
                for id in &ids {
                    let replay = crate::store::Write::Replay { item_id: *id, at: now, by: by.clone(), request_id: String::new() };
                    let done = matches!(
                        store.write(replay).await.map_err(failed)?,
                        crate::store::WriteResult::Done(true)
                    );
                    if done {
                        out.push_str(&format!("{id}: queued again\n"));
                    } else {
                        refused += 1;
                        out.push_str(&format!("{id}: {}\n", crate::store::outbox::NOT_REPLAYABLE));
                    }
                }
                if bulk {
                    let which = destination.as_deref().map_or("all destinations".to_string(), |e| format!("to {e}"));
                    out.push_str(&format!(
                        "{} of {} dead letters ({which}) queued again; {refused} not replayed\n",
                        ids.len() - refused,
                        ids.len()
                    ));
                    return Ok(out);
                }
                // Any id given that was not replayed makes the exit status 1, the whole account on stderr.
                match refused {
                    0 => Ok(out),
                    _ => Err(CliError::Failed(format!("{out}{refused} of {} not replayed", ids.len()))),
                }
            }
        }
        }
        .await;
        answer
    })?;
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

fn audit(command: &AuditCommand, stdout: &mut dyn Write) -> Result<(), CliError> {
    let (AuditCommand::Verify { config, .. } | AuditCommand::Export { config, .. }) = command;
    let config = load_config(config)?;
    let failed = |e: crate::store::StoreError| CliError::Failed(e.to_string());
    let text = runtime()?.block_on(async {
        let store = existing_store(&config).await?;
        match command {
            AuditCommand::Verify { json, .. } => {
                let verification = store.verify_audit().await.map_err(failed)?;
                if let Some((seq, problem)) = &verification.first_problem {
                    return Err(CliError::Failed(format!("audit entry {seq}: {problem}")));
                }
                if *json {
                    return Ok(
                        serde_json::to_string_pretty(&verification).unwrap_or_default() + "\n"
                    );
                }
                let mut out = String::from("the audit trail is intact\n");
                for (replica, entries, last) in &verification.chains {
                    out.push_str(&format!("  {replica}: {entries} entries, last hash {last}\n"));
                }
                Ok(out)
            }
            AuditCommand::Export { transfer, .. } => {
                let entries = store.audit_of(transfer).await.map_err(failed)?;
                if entries.is_empty() {
                    return Err(CliError::Invalid(format!(
                        "--transfer: no audit entries for {transfer:?}"
                    )));
                }
                Ok(entries
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
                    .collect())
            }
        }
    })?;
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut input = Vec::new();
    match file {
        Some(path) => {
            input = std::fs::read(path)
                .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?;
        }
    }
    Ok(input)
}

/// The `convert` command: the translated document's bytes.
pub fn convert(registry: &Registry, args: &ConvertArgs, input: &[u8]) -> Result<Vec<u8>, CliError> {
    let endpoint = |name: &String| registry.endpoint_named(name).map_err(CliError::from);
    let invalid = |e: crate::model::ModelError| CliError::Invalid(e.to_string());
    match (&args.from, &args.to, args.kind) {
        (None, None, _) => {
            Err(CliError::Invalid("convert needs --from ENDPOINT, --to ENDPOINT, or both".into()))
        }
        (Some(from), None, Kind::Transfer) => pretty(&endpoint(from)?.read_transfer(input)?),
        (Some(from), None, Kind::Status) => pretty(&endpoint(from)?.read_status(input)?),
        (None, Some(to), Kind::Transfer) => {
            let request = canonical_transfer(input).map_err(invalid)?;
            native(endpoint(to)?, endpoint(to)?.write_transfer(&request)?)
        }
        (None, Some(to), Kind::Status) => {
            let mut update: StatusUpdate =
                json::parse(input, &["state", "at", "by"]).map_err(invalid)?;
            update.validate().map_err(invalid)?;
            native(endpoint(to)?, endpoint(to)?.write_status(&update)?)
        }
        (Some(from), Some(to), Kind::Transfer) => {
            let request = endpoint(from)?.read_transfer(input)?;
            native(endpoint(to)?, endpoint(to)?.write_transfer(&request)?)
        }
        (Some(from), Some(to), Kind::Status) => {
            let update = endpoint(from)?.read_status(input)?;
            native(endpoint(to)?, endpoint(to)?.write_status(&update)?)
        }
    }
}

/// Canonical JSON of a transfer request, or of a whole transfer (rendered as the gateway sends
/// it to the destination, with `transfer_id` as the reference).
fn canonical_transfer(input: &[u8]) -> Result<TransferRequest, crate::model::ModelError> {
    let is_transfer = serde_json::from_slice::<serde_json::Value>(input)
        .is_ok_and(|v| v.get("transfer_id").is_some());
    let mut request = if is_transfer {
        json::parse::<Transfer>(input, Transfer::REQUIRED)?.for_destination()
    } else {
        json::parse::<TransferRequest>(input, TransferRequest::REQUIRED)?
    };
    request.validate()?;
    Ok(request)
}

fn pretty<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CliError> {
    let mut out = serde_json::to_vec_pretty(value).map_err(|e| CliError::Failed(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Native bytes as written; a JSON document is pretty-printed for people.
fn native(endpoint: &Endpoint, bytes: Vec<u8>) -> Result<Vec<u8>, CliError> {
    match endpoint.format.syntax {
        crate::formats::profile::Syntax::Json => {
            let value: crate::formats::tree::Node =
                serde_json::from_slice(&bytes).map_err(|e| CliError::Failed(e.to_string()))?;
            pretty(&value)
        }
        crate::formats::profile::Syntax::Xml => Ok(bytes),
    }
}

fn endpoints(registry: &Registry, as_json: bool) -> String {
    if as_json {
        let list: Vec<serde_json::Value> = registry
            .endpoints()
            .map(|e| {
                let extra: Vec<&str> = e.codes.rows[e.format.codes.rows.len()..].iter().map(|r| r.code.as_str()).collect();
                serde_json::json!({"id": e.id.to_string(), "format": e.format.name, "place": e.place, "extra_codes": extra})
            })
            .collect();
        return serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
    }
    let mut out = format!("{:<14} {:<15} {}\n", "ENDPOINT", "FORMAT", "PLACE");
    for e in registry.endpoints() {
        let extra: Vec<&str> =
            e.codes.rows[e.format.codes.rows.len()..].iter().map(|r| r.code.as_str()).collect();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("  (extra codes: {})", extra.join(", "))
        };
        out.push_str(&format!(
            "{:<14} {:<15} {}{}\n",
            e.id.to_string(),
            e.format.name,
            e.place,
            extra
        ));
    }
    out
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(cli, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e {
                CliError::Invalid(_) => 2,
                CliError::Failed(_) => 1,
            };
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(code)
        }
    }
}

/// Who runs this command, for the audit trail: `cli:USER@HOST` (the login and the machine; the
/// CLI has no certificate, its authority is access to the store).
fn local_operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}@{host}")
}
