//! The `varde` command line: parsing and output. `main.rs` only calls [`run`].

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::check::dns::DnsTransport;
use crate::check::target::Target;
use crate::check::{
    BasicAuth, CheckKind, CheckResult, CheckSpec, DnsOptions, HeaderMatch, HttpOptions,
    HttpVersion, IpPreference, NetOptions, Secret, TcpOptions, TlsOptions,
};

/// Exit code for a check that ran and failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "varde",
    version,
    about = "Synthetic monitoring probes and alerting"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// One value per process: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
// The doc comments are clap's help text, where `[:port]` means optional.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]
pub enum Command {
    /// Run one check now and print its phases, TLS facts and verdict.
    ///
    /// TARGET is one of:
    ///   http://host[:port]/path, https://host[:port]/path
    ///   dns://SERVER[:port]/NAME[?type=MX&transport=tcp]
    ///   tcp://host:port            (plain TCP)
    ///   tls://host:port            (TCP + TLS, e.g. to read a certificate)
    ///
    /// Exit status: 0 the check succeeded, 1 it failed, 2 bad usage.
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Run the probe daemon: checks on schedules, /metrics, /probe, pushes.
    ///
    /// With --config DIR alone it runs the checks of DIR/*.toml (Prometheus-only
    /// use); with --coordinator URL --token-file F it runs the coordinator's
    /// list for --region and pushes every result there.
    #[command(verbatim_doc_comment)]
    Probe(ProbeArgs),
    /// Run the coordinator: serves check lists to probes, ingests their
    /// results, judges checks across regions, and opens, deduplicates and
    /// resolves incidents (notifications are queued in its store).
    ///
    /// DIR holds probes/ (checks), alert-rules/ (rules, silences,
    /// maintenance windows) and coordinator.toml (probe and API tokens,
    /// settings). Files are reloaded on change and on SIGHUP; a bad edit
    /// keeps the running config.
    #[command(verbatim_doc_comment)]
    Coordinator(CoordinatorArgs),
    /// Load and validate configuration; print every error and exit 2 if any.
    ///
    /// DIR is a directory of probe definitions (*.toml), or a directory that
    /// holds probes/, alert-rules/ and coordinator.toml (all are validated).
    #[command(verbatim_doc_comment)]
    Validate(ValidateArgs),
    /// Show who is on call now (or at --at), with contacts; --week prints
    /// the coverage for 7 days in UTC, gaps included.
    ///
    /// Teams and shifts are read from DIR/alert-rules/*.toml ([[team]] and
    /// [oncall]). Exit status: 0 shown, 2 bad usage or configuration.
    #[command(verbatim_doc_comment)]
    Oncall(OncallArgs),
    /// Start a coordinator, one local probe (region `local`) and a small demo
    /// target in this process: the repository's probes/ and alert-rules/, a
    /// SQLite store under --data-dir, notifications on the console (stdout).
    ///
    /// The local probe's token is made once and kept in DATA_DIR/up/probe.token
    /// (mode 0600); no coordinator.toml is needed. Ctrl-C or SIGTERM stops
    /// everything cleanly; starting again resumes from DATA_DIR.
    #[command(verbatim_doc_comment)]
    Up(UpArgs),
    /// Exit 0 when URL answers 2xx within 3 seconds, else 1: the container
    /// image's HEALTHCHECK (it has no curl).
    #[command(verbatim_doc_comment)]
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory holding probes/ and alert-rules/.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub config: PathBuf,
    /// Where the store, the probe's spool and the local token live.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The coordinator's address (API, /metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9480")]
    pub listen: std::net::SocketAddr,
    /// The probe's address (/metrics, /probe, /healthz).
    #[arg(long, default_value = "127.0.0.1:9490")]
    pub probe_listen: std::net::SocketAddr,
    /// The demo target's address (`/` answers 200, `/status/NNN` answers NNN).
    #[arg(long, default_value = "127.0.0.1:9499", conflicts_with = "no_demo")]
    pub demo_listen: std::net::SocketAddr,
    /// Start no demo target.
    #[arg(long)]
    pub no_demo: bool,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// What to ask (http or https); default: $VARDE_HEALTHCHECK_URL, else
    /// the coordinator's http://127.0.0.1:9480/healthz (a probe's is on 9490).
    #[arg(long, value_name = "URL")]
    pub url: Option<url::Url>,
    /// How long to wait for the answer.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct OncallArgs {
    /// Directory holding alert-rules/.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub config: PathBuf,
    /// The instant to ask about (RFC 3339, e.g. 2026-03-23T10:00:00Z);
    /// default now.
    #[arg(long, value_name = "TIME", value_parser = crate::coordinator::silence::parse_instant)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Print the coverage for the 7 days from the start of TIME's UTC day.
    #[arg(long)]
    pub week: bool,
    /// Ask a running coordinator instead (its schedule with overrides).
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<url::Url>,
    #[command(subcommand)]
    pub action: Option<OncallAction>,
}

#[derive(Debug, Subcommand)]
pub enum OncallAction {
    /// Overrides on a running coordinator: a team or person takes another
    /// team's pages for a while (holiday swaps).
    #[command(subcommand)]
    Override(OverrideCmd),
}

/// Where the coordinator is and how to authenticate.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Coordinator base URL, e.g. https://varde.example.com/
    #[arg(long, value_name = "URL")]
    pub coordinator: url::Url,
    /// File holding an API token (`[[api_token]]` of coordinator.toml);
    /// default: the VARDE_API_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) for an https coordinator.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum OverrideCmd {
    /// Add an override; the token's name is recorded as its author.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        /// The team replaced.
        #[arg(long)]
        team: String,
        /// The team that takes its pages.
        #[arg(long, value_name = "TEAM")]
        by_team: Option<String>,
        /// A contact that takes its pages (CHANNEL or CHANNEL:ADDRESS);
        /// repeatable.
        #[arg(long = "contact", value_name = "CONTACT")]
        contacts: Vec<String>,
        /// Start (RFC 3339); default now.
        #[arg(long, value_name = "TIME", value_parser = crate::coordinator::silence::parse_instant)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = crate::coordinator::silence::parse_instant, conflicts_with = "for_")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Length, e.g. 8h or 3d (instead of --until).
        #[arg(long = "for", id = "for_", value_name = "DURATION")]
        for_: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List overrides not over yet.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End an override now.
    End {
        #[command(flatten)]
        api: ApiArgs,
        id: i64,
    },
}

#[derive(Debug, Args)]
#[allow(rustdoc::bare_urls)] // clap help text
pub struct ProbeArgs {
    /// Directory of check definitions and /probe modules (*.toml).
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Coordinator base URL, e.g. https://varde.example.com/
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<url::Url>,
    /// File holding this probe's bearer token for the coordinator.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) for an https coordinator.
    #[arg(long, value_name = "FILE")]
    pub coordinator_ca: Option<PathBuf>,
    /// This probe's region, a label on every metric and result.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// Address for /metrics, /probe, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9490")]
    pub listen: std::net::SocketAddr,
    /// Result spool and cached check list.
    #[arg(long, value_name = "DIR", default_value = "data/probe")]
    pub data_dir: PathBuf,
    /// Most checks running at once.
    #[arg(long, default_value_t = 256)]
    pub max_concurrency: usize,
    /// How often the coordinator's check list is re-polled (local files are
    /// checked for changes every 2s; SIGHUP reloads both at once).
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub poll_interval: Duration,
    /// How long shutdown waits for in-flight checks and the last push.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// Connect from this local address (one per region on a shared host),
    /// for every check that does not set `net.source_address` itself.
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Config directory with probes/, alert-rules/ and coordinator.toml.
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Where the SQLite store (varde.db) lives.
    #[arg(long, value_name = "DIR", default_value = "data/coordinator")]
    pub data_dir: PathBuf,
    /// Address for the API, /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9480")]
    pub listen: std::net::SocketAddr,
    /// How often time-driven state (staleness, for-durations, silences,
    /// probe_offline) is evaluated.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub tick: Duration,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory to validate.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check (see above).
    pub target: String,
    /// Print the full result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Total deadline for the check, e.g. "10s", "500ms".
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub tcp: TcpArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Network")]
pub struct NetArgs {
    /// Prefer IPv4 addresses (default: IPv6 first, falling back to IPv4).
    #[arg(short = '4', long = "ip4", conflicts_with = "ip6")]
    pub ip4: bool,
    /// Prefer IPv6 addresses (the default).
    #[arg(short = '6', long = "ip6")]
    pub ip6: bool,
    /// Use only the preferred address family.
    #[arg(long)]
    pub no_fallback: bool,
    /// Resolve names with this DNS server (IP or IP:port) instead of the system's.
    #[arg(long, value_name = "ADDR")]
    pub dns_server: Option<String>,
    /// Connect from this local address.
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// Request method.
    #[arg(short = 'X', long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub data: Option<String>,
    /// Valid status codes: "200", "2xx", "200-399"; repeatable or comma-separated (default 2xx).
    #[arg(long = "status", value_name = "CODES", value_delimiter = ',')]
    pub status: Vec<String>,
    /// The body must contain this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub body_contains: Vec<String>,
    /// The body must match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub body_regex: Vec<String>,
    /// The body must not match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub body_not_regex: Vec<String>,
    /// A response header must match: "Name: regex" (repeatable).
    #[arg(long, value_name = "HEADER_REGEX")]
    pub header_regex: Vec<String>,
    /// Do not follow redirects.
    #[arg(long)]
    pub no_follow: bool,
    /// Maximum redirects to follow.
    #[arg(long, value_name = "N")]
    pub max_redirects: Option<u32>,
    /// Maximum body bytes to read.
    #[arg(long, value_name = "BYTES")]
    pub body_limit: Option<u64>,
    /// Use HTTP/1.1 only.
    #[arg(long, conflicts_with = "http2")]
    pub http1: bool,
    /// Use HTTP/2 only.
    #[arg(long)]
    pub http2: bool,
    /// Basic auth "user:password".
    #[arg(short = 'u', long = "user", value_name = "USER:PASSWORD")]
    pub user: Option<String>,
    /// File holding a bearer token (kept off the command line).
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Trust these CA certificates (PEM) instead of the built-in roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Name for SNI and verification instead of the target host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Do not fail on an unverified certificate (still reported; credentials withheld).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Fail when a certificate expires within this time, e.g. "14d".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expiry_threshold: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "DNS")]
pub struct DnsArgs {
    /// Query type (A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, CAA, PTR).
    #[arg(long = "type", value_name = "TYPE")]
    pub query_type: Option<String>,
    /// Query over TCP instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Valid response codes (default NOERROR); repeatable or comma-separated.
    #[arg(long, value_name = "RCODE", value_delimiter = ',')]
    pub rcode: Vec<String>,
    /// Some answer must contain this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub answer_contains: Vec<String>,
    /// Some answer must match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub answer_regex: Vec<String>,
    /// Every answer must match this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub answers_all_match: Vec<String>,
    /// Minimum number of answers.
    #[arg(long, value_name = "N")]
    pub min_answers: Option<usize>,
    /// Clear the recursion-desired flag.
    #[arg(long)]
    pub no_recurse: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "TCP")]
pub struct TcpArgs {
    /// Send this once connected (escapes \r \n \t \\ \xNN allowed).
    #[arg(long, value_name = "DATA")]
    pub send: Option<String>,
    /// Regex the first bytes read must match.
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Maximum bytes read while looking for --expect.
    #[arg(long, value_name = "BYTES")]
    pub read_limit: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. \"10s\", \"500ms\", \"14d\")"))
}

/// A usage error: printed to stderr, exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => run_check(args),
        Command::Probe(args) => run_probe(args),
        Command::Coordinator(args) => run_coordinator(args),
        Command::Validate(args) => run_validate(args),
        Command::Oncall(args) => run_oncall(args),
        Command::Up(args) => run_up(args),
        Command::Healthcheck(args) => run_healthcheck(args),
    }
}

fn run_up(args: UpArgs) -> ExitCode {
    init_logging();
    let mut opts = crate::up::UpOptions::new(args.config, args.data_dir);
    opts.listen = args.listen;
    opts.probe_listen = args.probe_listen;
    opts.demo_listen = (!args.no_demo).then_some(args.demo_listen);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("varde up: cannot start runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(crate::up::run(opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varde up: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// What `varde healthcheck` asks by default: the coordinator on its default port.
const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:9480/healthz";

fn run_healthcheck(args: HealthcheckArgs) -> ExitCode {
    let fail = |why: String| {
        eprintln!("unhealthy: {why}");
        ExitCode::from(EXIT_FAILED)
    };
    let url = match args.url {
        Some(u) => u,
        None => {
            let raw = std::env::var("VARDE_HEALTHCHECK_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_HEALTHCHECK_URL.to_owned());
            match url::Url::parse(raw.trim()) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("VARDE_HEALTHCHECK_URL {raw:?}: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
    };
    let Ok(base) = url.join("/") else {
        return fail(format!("{url}: not a base URL"));
    };
    let client = match crate::client::ApiClient::new(base, None, None) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start a runtime: {e}")),
    };
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let asked = runtime.block_on(async {
        tokio::time::timeout(args.timeout, client.call("GET", &path, None)).await
    });
    match asked {
        Ok(Ok((status, _))) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(Ok((status, _))) => fail(format!("{url} answered {status}")),
        Ok(Err(e)) => fail(e),
        Err(_) => fail(format!(
            "{url} did not answer within {}",
            humantime::format_duration(args.timeout)
        )),
    }
}

fn run_oncall(args: OncallArgs) -> ExitCode {
    if let Some(OncallAction::Override(cmd)) = args.action {
        return run_override(cmd);
    }
    if let Some(url) = &args.coordinator {
        return run_oncall_remote(url, args.at);
    }
    let dir = args.config.join("alert-rules");
    let rules = match crate::coordinator::rules::load_dir(&dir) {
        Ok(rules) => rules,
        Err(e) => {
            let n = e.0.len();
            eprintln!("{e}");
            eprintln!("{n} error(s)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some(oncall) = rules.oncall else {
        eprintln!(
            "{}: no on-call teams ([[team]] and [oncall]) are defined",
            dir.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let at = args.at.unwrap_or_else(chrono::Utc::now);
    let mut out = String::new();
    if args.week {
        let from = week_start(at);
        out.push_str(&format!(
            "coverage {} – {} (UTC):\n",
            from.format("%a %Y-%m-%d"),
            (from + chrono::TimeDelta::days(7)).format("%a %Y-%m-%d")
        ));
        for seg in oncall.coverage(from, from + chrono::TimeDelta::days(7)) {
            out.push_str(&format_segment(&seg));
            out.push('\n');
        }
    } else {
        let duty = oncall.on_duty(at);
        out.push_str(&format!(
            "{}: {} on duty",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duty.team
        ));
        if let Some(team) = oncall.team(&duty.team) {
            let local = at.with_timezone(&team.tz);
            out.push_str(&format!(
                " ({} {})",
                team.tz.name(),
                local.format("%a %H:%M %Z")
            ));
        }
        out.push('\n');
        if duty.fallback {
            out.push_str("  no shift covers this instant: fallback team\n");
        }
        if duty.covering.len() > 1 {
            out.push_str(&format!("  overlap: {}\n", duty.covering[1..].join(", ")));
        }
        if let Some(team) = oncall.team(&duty.team) {
            if team.contacts.is_empty() {
                out.push_str("  contacts: (none)\n");
            }
            for c in &team.contacts {
                out.push_str(&format!("  contact: {c}\n"));
            }
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

/// Midnight UTC of `t`'s day.
fn week_start(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    t.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

/// `Mon 2026-03-23 06:00Z – 14:00Z  emea  (overlap: amer)`, or
/// `... GAP → fallback platform`. The end shows its date only when it falls
/// on a later day (midnight at the end of the start's day is `24:00Z`).
pub fn format_segment(seg: &crate::oncall::Segment) -> String {
    let start_day = seg.start.date_naive();
    let end = if seg.end.date_naive() == start_day {
        seg.end.format("%H:%MZ").to_string()
    } else if seg.end == week_start(seg.start) + chrono::TimeDelta::days(1) {
        "24:00Z".to_owned()
    } else {
        seg.end.format("%a %Y-%m-%d %H:%MZ").to_string()
    };
    let head = format!("{} – {end}", seg.start.format("%a %Y-%m-%d %H:%MZ"));
    if seg.gap {
        format!("{head}  GAP → fallback {}", seg.team)
    } else if seg.covering.len() > 1 {
        format!(
            "{head}  {}  (overlap: {})",
            seg.team,
            seg.covering[1..].join(", ")
        )
    } else {
        format!("{head}  {}", seg.team)
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run_validate(args: ValidateArgs) -> ExitCode {
    // DIR is a probes directory, or a directory holding probes/, alert-rules/
    // and coordinator.toml.
    let (probes, rules) =
        if args.dir.join("probes").is_dir() || args.dir.join("alert-rules").is_dir() {
            (
                Some(args.dir.join("probes")).filter(|d| d.is_dir()),
                Some(args.dir.join("alert-rules")).filter(|d| d.is_dir()),
            )
        } else {
            (Some(args.dir.clone()), None)
        };
    let mut errors = Vec::new();
    if let Some(dir) = &probes {
        match crate::probe::config::load_dir(dir) {
            Ok(cfg) => println!(
                "{}: {} checks, {} modules in {} files: OK",
                dir.display(),
                cfg.checks.len(),
                cfg.modules.len(),
                cfg.files.len()
            ),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut checks = Vec::new();
    if let Some(dir) = &probes
        && let Ok(cfg) = crate::probe::config::load_dir(dir)
    {
        checks = cfg.checks;
    }
    if let Some(dir) = &rules {
        match crate::coordinator::rules::load_dir(dir) {
            Ok(r) => {
                println!(
                    "{}: {} rules, {} silences, {} maintenance windows, {} on-call teams in {} files: OK",
                    dir.display(),
                    r.rules.len(),
                    r.silences.len(),
                    r.maintenance.len(),
                    r.oncall.as_ref().map_or(0, |o| o.teams.len()),
                    r.files.len()
                );
                if !r.channels.is_empty() || !r.routes.is_empty() {
                    println!(
                        "{}: {} channels, {} routes, {} escalation policies: OK",
                        dir.display(),
                        r.channels.len(),
                        r.routes.len(),
                        r.policies.len()
                    );
                }
                for w in unrouted(&r, &checks) {
                    println!("warning: {w}");
                }
                if let Some(oncall) = &r.oncall {
                    let now = chrono::Utc::now();
                    for gap in oncall.gaps(now, now + chrono::TimeDelta::days(7)) {
                        println!(
                            "warning: on-call gap {}: no shift covers it (fallback {})",
                            format_segment(&gap).split("  ").next().unwrap_or_default(),
                            gap.team
                        );
                    }
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if probes.as_deref() != Some(args.dir.as_path()) {
        match crate::coordinator::config::load_settings(&args.dir) {
            Ok(None) => {}
            Ok(Some((auth, _, _))) => println!(
                "{}: {} probe tokens, {} API tokens: OK",
                args.dir.join(crate::coordinator::config::FILE).display(),
                auth.probes.len(),
                auth.api.len()
            ),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    let n = errors.len();
    eprintln!("{}", crate::probe::config::ConfigErrors(errors));
    eprintln!("{n} error(s)");
    ExitCode::from(EXIT_USAGE)
}

fn run_probe(args: ProbeArgs) -> ExitCode {
    init_logging();
    let token = match &args.token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => {
                eprintln!("varde probe: token file {} is empty", path.display());
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                eprintln!(
                    "varde probe: cannot read token file {}: {e}",
                    path.display()
                );
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let opts = crate::probe::daemon::ProbeOptions {
        config_dir: args.config,
        coordinator: args.coordinator,
        token,
        region: args.region,
        listen: args.listen,
        data_dir: args.data_dir,
        max_concurrency: args.max_concurrency.max(1),
        poll_interval: args.poll_interval.max(Duration::from_millis(100)),
        shutdown_grace: args.shutdown_grace,
        coordinator_ca: args.coordinator_ca,
        source_address: args.source_address,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("varde probe: cannot start runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(crate::probe::daemon::run(opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varde probe: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run_coordinator(args: CoordinatorArgs) -> ExitCode {
    init_logging();
    let mut opts = crate::coordinator::daemon::CoordinatorOptions::new(
        args.config,
        args.data_dir,
        args.listen,
    );
    opts.tick = args.tick.max(Duration::from_millis(10));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("varde coordinator: cannot start runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(crate::coordinator::daemon::run(opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varde coordinator: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn run_check(args: CheckArgs) -> ExitCode {
    let spec = match spec_from_args(&args) {
        Ok(s) => s,
        Err(UsageError(m)) => {
            eprintln!("varde check: {m}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let check = match spec.build(args.timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("varde check: invalid {}: {}", e.field, e.message);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("varde check: cannot start runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = runtime.block_on(check.run());
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut out, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(render(&result).as_bytes())
    };
    if let Err(e) = printed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("varde check: {e}");
    }
    if result.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// Builds the check definition from the target URL and flags, rejecting
/// flags that do not apply to the target's kind.
pub fn spec_from_args(a: &CheckArgs) -> Result<CheckSpec, UsageError> {
    let target = Target::parse(&a.target).map_err(UsageError)?;
    let scheme = a
        .target
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let net = net_options(&a.net);
    let kind = match target.kind() {
        CheckKind::Http => "http",
        CheckKind::Dns => "dns",
        CheckKind::Tcp => "tcp",
    };
    reject_foreign_flags(a, kind, &scheme)?;
    match target {
        Target::Http { .. } => Ok(CheckSpec::Http(http_options(a, net)?)),
        Target::Dns {
            server,
            name,
            query_type,
            transport,
        } => Ok(CheckSpec::Dns(dns_options(
            a, net, server, name, query_type, transport,
        )?)),
        Target::Tcp { address, tls } => Ok(CheckSpec::Tcp(TcpOptions {
            address,
            tls: tls.then(|| tls_options(&a.tls)),
            send: a.tcp.send.as_deref().map(unescape).transpose()?,
            expect: a.tcp.expect.clone(),
            read_limit: a
                .tcp
                .read_limit
                .unwrap_or(crate::check::tcp::DEFAULT_READ_LIMIT),
            net,
        })),
    }
}

fn reject_foreign_flags(a: &CheckArgs, kind: &str, scheme: &str) -> Result<(), UsageError> {
    let h = &a.http;
    let http_used: &[(&str, bool)] = &[
        ("--method", h.method.is_some()),
        ("--header", !h.headers.is_empty()),
        ("--data", h.data.is_some()),
        ("--status", !h.status.is_empty()),
        ("--body-contains", !h.body_contains.is_empty()),
        ("--body-regex", !h.body_regex.is_empty()),
        ("--body-not-regex", !h.body_not_regex.is_empty()),
        ("--header-regex", !h.header_regex.is_empty()),
        ("--no-follow", h.no_follow),
        ("--max-redirects", h.max_redirects.is_some()),
        ("--body-limit", h.body_limit.is_some()),
        ("--http1", h.http1),
        ("--http2", h.http2),
        ("--user", h.user.is_some()),
        ("--bearer-token-file", h.bearer_token_file.is_some()),
    ];
    let d = &a.dns;
    let dns_used: &[(&str, bool)] = &[
        ("--type", d.query_type.is_some()),
        ("--tcp", d.tcp),
        ("--rcode", !d.rcode.is_empty()),
        ("--answer-contains", !d.answer_contains.is_empty()),
        ("--answer-regex", !d.answer_regex.is_empty()),
        ("--answers-all-match", !d.answers_all_match.is_empty()),
        ("--min-answers", d.min_answers.is_some()),
        ("--no-recurse", d.no_recurse),
    ];
    let t = &a.tcp;
    let tcp_used: &[(&str, bool)] = &[
        ("--send", t.send.is_some()),
        ("--expect", t.expect.is_some()),
        ("--read-limit", t.read_limit.is_some()),
    ];
    let s = &a.tls;
    let tls_used: &[(&str, bool)] = &[
        ("--cacert", s.cacert.is_some()),
        ("--cert", s.cert.is_some()),
        ("--key", s.key.is_some()),
        ("--server-name", s.server_name.is_some()),
        ("--insecure", s.insecure),
        ("--expiry-threshold", s.expiry_threshold.is_some()),
    ];
    let mut groups: Vec<(&[(&str, bool)], &str)> = Vec::new();
    if kind != "http" {
        groups.push((http_used, "http:// and https:// targets"));
    }
    if kind != "dns" {
        groups.push((dns_used, "dns:// targets"));
    }
    if kind != "tcp" {
        groups.push((tcp_used, "tcp:// and tls:// targets"));
    }
    if !(scheme == "https" || scheme == "tls" || scheme == "http") {
        groups.push((tls_used, "https:// and tls:// targets"));
    }
    for (flags, applies) in groups {
        if let Some((name, _)) = flags.iter().find(|(_, used)| *used) {
            return Err(UsageError(format!("{name} applies to {applies} only")));
        }
    }
    Ok(())
}

fn net_options(n: &NetArgs) -> NetOptions {
    NetOptions {
        ip_preference: if n.ip4 {
            IpPreference::Ip4
        } else {
            IpPreference::Ip6
        },
        ip_fallback: !n.no_fallback,
        dns_server: n.dns_server.clone(),
        source_address: n.source_address,
    }
}

fn tls_options(t: &TlsArgs) -> TlsOptions {
    TlsOptions {
        ca_file: t.cacert.clone(),
        cert_file: t.cert.clone(),
        key_file: t.key.clone(),
        server_name: t.server_name.clone(),
        insecure: t.insecure,
        expiry_threshold: t.expiry_threshold,
    }
}

fn http_options(a: &CheckArgs, net: NetOptions) -> Result<HttpOptions, UsageError> {
    let h = &a.http;
    let mut headers = std::collections::BTreeMap::new();
    for raw in &h.headers {
        let (k, v) = raw
            .split_once(':')
            .ok_or_else(|| UsageError(format!("--header expects \"Name: value\", got {raw:?}")))?;
        headers.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let header_match = h
        .header_regex
        .iter()
        .map(|raw| {
            raw.split_once(':')
                .map(|(k, v)| HeaderMatch {
                    name: k.trim().to_owned(),
                    regex: v.trim().to_owned(),
                    allow_missing: false,
                })
                .ok_or_else(|| {
                    UsageError(format!(
                        "--header-regex expects \"Name: regex\", got {raw:?}"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let basic_auth = h
        .user
        .as_ref()
        .map(|u| {
            u.split_once(':')
                .map(|(user, pass)| BasicAuth {
                    username: user.to_owned(),
                    password: Secret(pass.to_owned()),
                })
                .ok_or_else(|| UsageError("--user expects \"user:password\"".into()))
        })
        .transpose()?;
    let bearer_token = h
        .bearer_token_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|s| Secret(s.trim().to_owned()))
                .map_err(|e| UsageError(format!("--bearer-token-file {}: {e}", p.display())))
        })
        .transpose()?;
    let defaults = HttpOptions::default();
    Ok(HttpOptions {
        url: a.target.clone(),
        method: h.method.clone().unwrap_or(defaults.method),
        headers,
        body: h.data.clone(),
        valid_status: h.status.clone(),
        body_contains: h.body_contains.clone(),
        body_regex: h.body_regex.clone(),
        body_not_regex: h.body_not_regex.clone(),
        header_match,
        follow_redirects: !h.no_follow,
        max_redirects: h.max_redirects.unwrap_or(defaults.max_redirects),
        body_limit: h.body_limit.unwrap_or(defaults.body_limit),
        http_version: if h.http1 {
            HttpVersion::Http1
        } else if h.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Auto
        },
        basic_auth,
        bearer_token,
        net,
        tls: tls_options(&a.tls),
    })
}

fn dns_options(
    a: &CheckArgs,
    net: NetOptions,
    server: String,
    name: String,
    url_type: Option<String>,
    url_transport: Option<DnsTransport>,
) -> Result<DnsOptions, UsageError> {
    let d = &a.dns;
    let defaults = DnsOptions::default();
    if url_type.is_some() && d.query_type.is_some() {
        return Err(UsageError(
            "query type given both in the URL and --type".into(),
        ));
    }
    let query_type = url_type.or_else(|| d.query_type.clone());
    let transport = if d.tcp {
        DnsTransport::Tcp
    } else {
        url_transport.unwrap_or(DnsTransport::Udp)
    };
    Ok(DnsOptions {
        server,
        name,
        query_type: query_type.unwrap_or(defaults.query_type),
        transport,
        recursion_desired: !d.no_recurse,
        valid_rcodes: if d.rcode.is_empty() {
            defaults.valid_rcodes
        } else {
            d.rcode.clone()
        },
        answer_contains: d.answer_contains.clone(),
        answer_regex: d.answer_regex.clone(),
        answers_all_match: d.answers_all_match.clone(),
        min_answers: d.min_answers.unwrap_or(defaults.min_answers),
        net,
    })
}

/// Interprets \r \n \t \0 \\ and \xNN in command-line data.
fn unescape(s: &str) -> Result<String, UsageError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| UsageError("\\x needs two hex digits".into()))?;
                out.push(v);
            }
            other => {
                return Err(UsageError(format!(
                    "unknown escape \\{} in --send",
                    other.map(|b| (b as char).to_string()).unwrap_or_default()
                )));
            }
        }
    }
    String::from_utf8(out).map_err(|_| UsageError("--send data must be valid UTF-8".into()))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The human report: phases like `curl -w`, TLS facts, kind facts, verdict.
pub fn render(r: &CheckResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{} check of {}", r.kind.as_str(), r.target);
    let _ = writeln!(s);
    for phase in crate::check::Phase::ALL {
        let _ = writeln!(
            s,
            "  {:<11} {:>12}",
            phase.as_str(),
            ms(r.phases.get(phase))
        );
    }
    let _ = writeln!(s, "  {:<11} {:>12}", "total", ms(r.duration));
    if let Some(t) = &r.tls {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "TLS   {} {} alpn={} {}",
            t.version.as_deref().unwrap_or("(no handshake)"),
            t.cipher.as_deref().unwrap_or("-"),
            t.alpn.as_deref().unwrap_or("-"),
            if t.verified {
                "verified"
            } else {
                "NOT verified"
            }
        );
        if let Some(e) = &t.verify_error {
            let _ = writeln!(s, "  verify error   {e}");
        }
        if let Some(leaf) = t.leaf() {
            let _ = writeln!(s, "  subject        {}", leaf.subject);
            let _ = writeln!(s, "  issuer         {}", leaf.issuer);
            let _ = writeln!(s, "  SANs           {}", leaf.sans.join(", "));
            let _ = writeln!(s, "  sha256         {}", leaf.fingerprint_sha256);
        }
        let _ = writeln!(
            s,
            "  chain          {} certificate(s) presented",
            t.chain.len()
        );
        if let Some(e) = t.earliest_expiry {
            let days = (e - r.started_at).num_days();
            let _ = writeln!(s, "  earliest expiry {} ({days} days)", e.to_rfc3339());
        }
        if let Some(e) = t.verified_chain_expiry {
            let _ = writeln!(s, "  verified chain expiry {}", e.to_rfc3339());
        }
    }
    if let Some(h) = &r.http {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "HTTP  {} {} from {}, {} body bytes, {} redirect(s)",
            h.version.as_deref().unwrap_or("-"),
            h.status
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            h.remote_addr.as_deref().unwrap_or("-"),
            h.body_bytes,
            h.redirects
        );
        if h.redirects > 0 {
            let _ = writeln!(s, "  final url      {}", h.final_url);
        }
        if h.credentials_withheld {
            let _ = writeln!(
                s,
                "  credentials withheld (peer not verified or other origin)"
            );
        }
    }
    if let Some(d) = &r.dns {
        let _ = writeln!(s);
        let _ = writeln!(s, "{}", render_dns(d));
    }
    if let Some(t) = &r.tcp {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "TCP   {} , {} bytes read",
            t.remote_addr.as_deref().unwrap_or("-"),
            t.bytes_read
        );
        if let Some(b) = &t.banner {
            let _ = writeln!(s, "  banner         {b}");
        }
    }
    let _ = writeln!(s);
    match r.reason {
        None => {
            let _ = writeln!(s, "OK    {}", r.message);
        }
        Some(reason) => {
            let _ = writeln!(s, "FAIL  {reason}: {}", r.message);
        }
    }
    s
}

fn render_dns(d: &crate::check::DnsFacts) -> String {
    serde_json::to_value(d)
        .ok()
        .map(|v| {
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
            let mut s = format!(
                "DNS   {} {} via {} ({}): {}",
                get("query_name"),
                get("query_type"),
                get("server"),
                get("transport"),
                get("rcode")
            );
            if let Some(answers) = v.get("answers").and_then(|a| a.as_array()) {
                for a in answers {
                    let f = |k: &str| {
                        a.get(k)
                            .map(|x| x.to_string().trim_matches('"').to_owned())
                            .unwrap_or_default()
                    };
                    s.push_str(&format!(
                        "\n  {} {} {} {}",
                        f("name"),
                        f("ttl"),
                        f("type"),
                        f("data")
                    ));
                }
            }
            s
        })
        .unwrap_or_default()
}

/// Rules whose notifications for some check match no route (they would be
/// recorded as undeliverable), one line per rule.
fn unrouted(
    r: &crate::coordinator::rules::Rules,
    checks: &[crate::probe::CheckDef],
) -> Vec<String> {
    let mut out = Vec::new();
    for rule in &r.rules {
        let mut missed = Vec::new();
        for def in checks {
            let mut labels = crate::coordinator::engine::check_labels(def);
            if !rule.matches(&labels) {
                continue;
            }
            labels.insert("severity".into(), rule.severity.as_str().to_owned());
            labels.insert("rule".into(), rule.name.clone());
            labels.insert("rule_kind".into(), rule.kind.as_str().to_owned());
            labels.insert("receiver".into(), rule.receiver.clone());
            if !r.routes.iter().any(|route| route.matches(&labels)) {
                missed.push(def.name.clone());
            }
        }
        if !missed.is_empty() {
            let shown: Vec<&str> = missed.iter().take(5).map(String::as_str).collect();
            let more = if missed.len() > 5 {
                format!(" and {} more", missed.len() - 5)
            } else {
                String::new()
            };
            out.push(format!(
                "rule {:?}: no [[route]] matches its notifications for {}{more}; they would not be delivered",
                rule.name,
                shown.join(", ")
            ));
        }
    }
    out
}

/// Runs one API call on a small runtime; prints errors; the exit code.
fn api_call(
    api: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    need_token: bool,
) -> Result<serde_json::Value, ExitCode> {
    let token = match &api.token_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => {
                eprintln!("{}: the token file is empty", f.display());
                return Err(ExitCode::from(EXIT_USAGE));
            }
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return Err(ExitCode::from(EXIT_USAGE));
            }
        },
        None => std::env::var("VARDE_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    if need_token && token.is_none() {
        eprintln!("an API token is needed: --token-file FILE or VARDE_API_TOKEN");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let client =
        crate::client::ApiClient::new(api.coordinator.clone(), token, api.ca_file.as_deref())
            .map_err(|e| {
                eprintln!("{e}");
                ExitCode::from(EXIT_USAGE)
            })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start a runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        })?;
    match runtime.block_on(client.call(method, path, body.as_ref())) {
        Ok((s, v)) if (200..300).contains(&s) => Ok(v),
        Ok((s, v)) => {
            let why = v
                .get("error")
                .and_then(|e| e.as_str())
                .map_or_else(|| v.to_string(), str::to_owned);
            eprintln!("the coordinator refused ({s}): {why}");
            Err(ExitCode::from(if (400..500).contains(&s) {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            }))
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn run_override(cmd: OverrideCmd) -> ExitCode {
    match cmd {
        OverrideCmd::Add {
            api,
            team,
            by_team,
            contacts,
            from,
            until,
            for_,
            comment,
        } => {
            let mut body =
                serde_json::json!({ "team": team, "contacts": contacts, "comment": comment });
            if let Some(b) = by_team {
                body["by_team"] = b.into();
            }
            if let Some(f) = from {
                body["starts_at"] = serde_json::json!(f);
            }
            match (until, for_) {
                (Some(u), None) => body["ends_at"] = serde_json::json!(u),
                (None, Some(d)) => body["duration"] = d.into(),
                _ => {
                    eprintln!("give --until TIME or --for DURATION");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            match api_call(&api, "POST", "/api/v1/overrides", Some(body), true) {
                Ok(v) => {
                    println!("{}", format_override(&v["override"]));
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        OverrideCmd::List { api } => {
            match api_call(&api, "GET", "/api/v1/overrides", None, false) {
                Ok(v) => {
                    let list = v["overrides"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        println!("no overrides");
                    }
                    for o in &list {
                        println!("{}", format_override(o));
                    }
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        OverrideCmd::End { api, id } => {
            match api_call(
                &api,
                "DELETE",
                &format!("/api/v1/overrides/{id}"),
                None,
                true,
            ) {
                Ok(_) => {
                    println!("override {id} ended");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}

/// `#3 emea → amer + email:bob@example.com, 2026-11-24T08:00Z – 2026-11-25T08:00Z by alice (holiday)`
fn format_override(o: &serde_json::Value) -> String {
    let s = |k: &str| o[k].as_str().unwrap_or("").to_owned();
    let mut by: Vec<String> = Vec::new();
    if let Some(t) = o["by_team"].as_str() {
        by.push(t.to_owned());
    }
    for c in o["contacts"].as_array().into_iter().flatten() {
        by.push(c.as_str().unwrap_or("").to_owned());
    }
    let mut line = format!(
        "#{} {} → {}, {} – {} by {}",
        o["id"],
        s("team"),
        by.join(" + "),
        s("starts_at"),
        s("ends_at"),
        s("author")
    );
    if !s("comment").is_empty() {
        line.push_str(&format!(" ({})", s("comment")));
    }
    line
}

/// `varde oncall --coordinator URL [--at TIME]`: the coordinator's answer.
fn run_oncall_remote(url: &url::Url, at: Option<chrono::DateTime<chrono::Utc>>) -> ExitCode {
    let api = ApiArgs {
        coordinator: url.clone(),
        token_file: None,
        ca_file: None,
    };
    let path = match at {
        Some(t) => format!(
            "/api/v1/oncall?at={}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "/api/v1/oncall".to_owned(),
    };
    match api_call(&api, "GET", &path, None, false) {
        Ok(v) => {
            println!(
                "{}: {} on duty{}",
                v["at"].as_str().unwrap_or(""),
                v["team"].as_str().unwrap_or("?"),
                if v["fallback"].as_bool() == Some(true) {
                    " (fallback: no shift covers this instant)"
                } else {
                    ""
                }
            );
            for o in v["overrides"].as_array().into_iter().flatten() {
                println!("  override: {}", format_override(o));
            }
            for c in v["contacts"].as_array().into_iter().flatten() {
                println!("  contact: {}", c.as_str().unwrap_or(""));
            }
            if let Some(n) = v["next"].as_object() {
                println!(
                    "  next: {} at {}",
                    n["team"].as_str().unwrap_or("?"),
                    n["at"].as_str().unwrap_or("?")
                );
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> CheckArgs {
        let mut full = vec!["varde", "check"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Check(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn dns_target_with_type_and_port() {
        let CheckSpec::Dns(d) =
            spec_from_args(&args(&["dns://127.0.0.1:5353/example.com?type=MX"])).unwrap()
        else {
            panic!("expected dns");
        };
        assert_eq!(d.server, "127.0.0.1:5353");
        assert_eq!(d.name, "example.com");
        assert_eq!(d.query_type, "MX");
    }

    #[test]
    fn foreign_flags_are_usage_errors() {
        let e = spec_from_args(&args(&["tcp://h:1", "--body-contains", "x"])).unwrap_err();
        assert!(e.0.contains("--body-contains applies to http"), "{}", e.0);
        let e = spec_from_args(&args(&["https://h/", "--type", "MX"])).unwrap_err();
        assert!(e.0.contains("--type applies to dns"), "{}", e.0);
        let e = spec_from_args(&args(&["dns://1.1.1.1/x", "--insecure"])).unwrap_err();
        assert!(e.0.contains("--insecure applies to https"), "{}", e.0);
        assert!(spec_from_args(&args(&["ftp://h/"])).is_err());
        assert!(spec_from_args(&args(&["example.com"])).is_err());
    }

    #[test]
    fn unescape_sequences() {
        assert_eq!(unescape("a\\r\\n\\x41\\\\").unwrap(), "a\r\nA\\");
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
    }
}
