//! The `switchboard` command. Configuration layers: built-in demo (or `--config` file), then
//! environment variables, then flags (clap reads both).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use switchboard::config::Config;
use switchboard::server::{self, Tls};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "The Microsoft Graph calling API, self-hosted, on a simulated telephony network.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server. Without a config file it serves the built-in demo directory (see the README).
    Serve(ServeArgs),
    /// Print the example configuration file (equivalent to the demo directory).
    ExampleConfig,
    /// Create or migrate the PostgreSQL schema and exit (`serve` also does it at start).
    Migrate(MigrateArgs),
    /// Print the directory's users and PSTN numbers (who a bot can call, and how each answers on the
    /// sim), from the config file or the built-in demo.
    Directory(DirectoryArgs),
    /// Drive synthetic callers into a bot, at a rate or a concurrency, for a while, with a mix of
    /// scenarios (answer, busy, hangup, transfer); then print what happened: calls offered, answered,
    /// transferred, the bot's answer latency and notification acknowledgement latency (p50/p99),
    /// errors by kind. Runs against any Switchboard whose sim API it can reach.
    Load(switchboard::load::LoadArgs),
}

#[derive(clap::Args)]
struct DirectoryArgs {
    /// TOML configuration file (default: the built-in demo directory).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The PostgreSQL database: postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "SWITCHBOARD_STORE")]
    store: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port). Overrides `listen` of the config file.
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the SQLite database, signing keys and generated certificates. Overrides `data_dir`.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep calls and the outbox in PostgreSQL (postgres://USER@HOST:PORT/DB) instead of SQLite in the
    /// data folder. Overrides `store`.
    #[arg(long, env = "SWITCHBOARD_STORE")]
    store: Option<String>,
    /// This node's name in logs, /metrics and call ownership (default: host name and port). Overrides
    /// `node_id`.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    node_id: Option<String>,
    /// Where the other nodes sharing the PostgreSQL store reach this one (default: the listen
    /// address). Overrides `node_url`.
    #[arg(long, env = "SWITCHBOARD_NODE_URL")]
    node_url: Option<String>,
    /// Serve SIP over UDP and TCP on this address (e.g. 127.0.0.1:5060; port 0 picks one). Overrides
    /// `[sip] listen`. Without it there is no SIP.
    #[arg(long, env = "SWITCHBOARD_SIP_LISTEN")]
    sip_listen: Option<SocketAddr>,
    /// Send PSTN numbers to this SIP trunk (sip:HOST:PORT), and take calls from it to the instances'
    /// numbers. Replaces `[[sip.trunks]]` with this one.
    #[arg(long, env = "SWITCHBOARD_SIP_TRUNK")]
    sip_trunk: Option<String>,
    /// Serve SIP over TLS on this address too (e.g. 127.0.0.1:5061), with `[sip] tls_cert`/`tls_key`,
    /// else `[tls]`'s certificate, else a self-signed one. Overrides `[sip] tls_listen`.
    #[arg(long, env = "SWITCHBOARD_SIP_TLS_LISTEN")]
    sip_tls_listen: Option<SocketAddr>,
    /// TOML configuration file (directory of tenants, apps, users, numbers; settings).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Calling webhook of the demo's "Demo Bot" (default http://127.0.0.1:3978/api/calls).
    #[arg(long, env = "SWITCHBOARD_DEMO_WEBHOOK")]
    demo_webhook: Option<String>,
    /// Calling webhook of the demo's "Legacy Bot" (default http://127.0.0.1:3980/api/calls).
    #[arg(long, env = "SWITCHBOARD_LEGACY_WEBHOOK")]
    legacy_webhook: Option<String>,
    /// Calling webhook of the demo's "Unprivileged Bot" (default http://127.0.0.1:3979/api/calls).
    #[arg(long, env = "SWITCHBOARD_UNPRIVILEGED_WEBHOOK")]
    unprivileged_webhook: Option<String>,
    /// Base URL bots use to reach this server, if not the listen address (e.g. behind a proxy).
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Ring timeout for outgoing calls, in milliseconds (1000 to 115000).
    #[arg(long, env = "SWITCHBOARD_RING_TIMEOUT_MS")]
    ring_timeout_ms: Option<u64>,
    /// First notification retry delay in milliseconds (doubles per attempt).
    #[arg(long, env = "SWITCHBOARD_RETRY_FIRST_MS")]
    retry_first_ms: Option<u64>,
    /// Delivery attempts before a notification is marked failed (kept in the outbox).
    #[arg(long, env = "SWITCHBOARD_RETRY_MAX_ATTEMPTS")]
    retry_max_attempts: Option<u32>,
    /// Virtual time: the clock stands still until `POST /sim/v1/clock {"advance_ms": N}` moves it,
    /// firing every timer that falls due (ring timeouts, keepAlive expiry, sim behaviours, retries).
    #[arg(long, env = "SWITCHBOARD_VIRTUAL_CLOCK")]
    virtual_clock: bool,
    /// How long a client may take to send a request's head, in ms ([http] header_timeout_ms; 10000).
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's body, in ms ([http] body_timeout_ms; 30000).
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT_MS")]
    body_timeout_ms: Option<u64>,
    /// How long a connection may sit idle between requests, in ms ([http] idle_timeout_ms; 60000).
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// HTTP connections open at once; more get 503 ([http] max_connections; 4096).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Serve HTTPS: with the config file's [tls] cert and key, or a generated self-signed certificate.
    #[arg(long, env = "SWITCHBOARD_TLS")]
    tls: bool,
    /// Log format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExampleConfig => {
            print!("{}", switchboard::config::EXAMPLE_TOML);
            std::process::ExitCode::SUCCESS
        }
        Command::Directory(args) => {
            let config = match &args.config {
                Some(path) => match Config::from_file(path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("switchboard: {e:#}");
                        return std::process::ExitCode::from(2);
                    }
                },
                None => Config::demo(),
            };
            for line in directory_lines(&config) {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Command::Load(args) => {
            eprintln!("{}", switchboard::load::describe(&args));
            let json = args.json.clone();
            let summary = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(switchboard::load::run(args)));
            match summary {
                Ok(summary) => {
                    for line in summary.lines() {
                        println!("{line}");
                    }
                    if let Some(path) = json {
                        let written = serde_json::to_vec_pretty(&summary).map_err(anyhow::Error::from).and_then(|mut bytes| {
                            bytes.push(b'\n');
                            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
                        });
                        if let Err(e) = written {
                            eprintln!("switchboard: {e:#}");
                            return std::process::ExitCode::FAILURE;
                        }
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => {
            init_logs(LogFormat::Text);
            let migrated = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(migrate(&args.store)));
            match migrated {
                Ok(applied) => {
                    println!("schema up to date; applied now: {applied:?}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            init_logs(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("switchboard: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

async fn migrate(url: &str) -> anyhow::Result<Vec<i32>> {
    let store = switchboard_postgres::PgStore::connect(url).await?;
    // `connect` migrated already; a second look reports nothing left to do.
    Ok(store.migrate().await?)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().event_format(WithNode(tracing_subscriber::fmt::format().json(), true)).init(),
        LogFormat::Text => builder.event_format(WithNode(tracing_subscriber::fmt::format(), false)).init(),
    }
}

/// Puts the node's name on every log line once the node knows it (`node=…` first, or a `"node"`
/// field in JSON), so that the logs of several nodes can be read together.
struct WithNode<F>(F, bool);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithNode<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(node) = server::node_id() else {
            return self.0.format_event(ctx, writer, event);
        };
        if !self.1 {
            write!(writer, "node={node} ")?;
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node\":{},{rest}", serde_json::Value::from(node)),
            None => writer.write_str(&line),
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<(Config, String)> {
    let (mut config, file) = match &args.config {
        Some(path) => (Config::from_file(path)?, path.display().to_string()),
        None => (Config::demo(), "(built-in demo)".to_owned()),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(s) = &args.store {
        config.store = Some(s.clone());
    }
    if let Some(n) = &args.node_id {
        config.node_id = Some(n.clone());
    }
    if let Some(a) = args.sip_listen {
        config.sip.listen = Some(a);
    }
    if let Some(a) = args.sip_tls_listen {
        config.sip.tls_listen = Some(a);
    }
    if let Some(t) = &args.sip_trunk {
        config.sip.trunks = vec![switchboard::config::SipTrunk { address: t.clone(), name: None, numbers: Vec::new() }];
    }
    if let Some(u) = &args.node_url {
        config.node_url = Some(u.clone());
    }
    if let Some(u) = &args.public_url {
        config.public_url = Some(u.clone());
    }
    if let Some(ms) = args.ring_timeout_ms {
        config.calls.ring_timeout_ms = ms;
    }
    if let Some(ms) = args.retry_first_ms {
        config.notifications.first_retry_ms = ms;
    }
    if let Some(n) = args.retry_max_attempts {
        config.notifications.max_attempts = n;
    }
    if args.virtual_clock {
        config.sim.virtual_clock = true;
    }
    let http = &mut config.http;
    for (flag, value) in [
        (&mut http.header_timeout_ms, args.header_timeout_ms),
        (&mut http.body_timeout_ms, args.body_timeout_ms),
        (&mut http.idle_timeout_ms, args.idle_timeout_ms),
    ] {
        if let Some(ms) = value {
            *flag = ms;
        }
    }
    if let Some(n) = args.max_connections {
        http.max_connections = n;
    }
    for (flag, client_id, url) in [
        ("--demo-webhook", "cccccccc-0000-4000-8000-000000000003", &args.demo_webhook),
        ("--legacy-webhook", "cccccccc-0000-4000-8000-000000000006", &args.legacy_webhook),
        ("--unprivileged-webhook", "cccccccc-0000-4000-8000-000000000005", &args.unprivileged_webhook),
    ] {
        if let Some(url) = url {
            let app = config
                .directory
                .applications
                .iter_mut()
                .find(|a| a.client_id == client_id)
                .with_context(|| format!("{flag} needs the demo directory's app {client_id}, which {file} does not have"))?;
            app.calling_webhook = Some(url.clone());
        }
    }
    config.validate(&format!("{file} with flags and environment applied"))?;
    Ok((config, file))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, file) = load_config(&args)?;
    let tls = match (args.tls, &config.tls) {
        (false, _) => Tls::Off,
        (true, Some(t)) => match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => Tls::Files { cert: cert.clone(), key: key.clone() },
            _ => Tls::Generate,
        },
        (true, None) => Tls::Generate,
    };
    let data_dir = config.data_dir.clone();
    let store = config.store.clone();
    let directory = config.directory.clone();
    let issuer = config.notifications.issuer.clone();
    let admin_key = config.sim.admin_key.clone();
    let virtual_clock = config.sim.virtual_clock;
    let people = directory_lines(&config);
    let (running, handle) = server::start(config, tls, shutdown_signal()).await?;
    let base = &running.base_url;
    // Scripts read the base URL as the first line's last word: keep it there.
    println!("Switchboard {} listening on {base}", env!("CARGO_PKG_VERSION"));
    match &running.cluster_address {
        Some(address) => {
            println!("  node:               {} (one of the nodes on this database; the others reach it at {address})", running.node_id)
        }
        None => println!("  node:               {}", running.node_id),
    }
    println!("  directory:          {file}");
    match &store {
        Some(url) => println!(
            "  data:               {} (PostgreSQL); keys and certificates in {}",
            switchboard_postgres::redact(url),
            data_dir.display()
        ),
        None => println!("  data:               {} (SQLite, WAL)", data_dir.display()),
    }
    if let Some(cert) = &running.cert_path {
        println!("  TLS certificate:    {} (trust it in your bot, e.g. REQUESTS_CA_BUNDLE / SSL_CERT_FILE)", cert.display());
    }
    println!("  recovered:          {} live calls, {} undelivered notifications", running.recovered_calls, running.recovered_notifications);
    println!("  Graph base URL:     {base}/v1.0  and  {base}/beta");
    println!(
        "  token authority:    {base}/{{tenant}}  (token endpoint {base}/{{tenant}}/oauth2/v2.0/token, scope https://graph.microsoft.com/.default)"
    );
    for t in &directory.tenants {
        println!("  tenant {:<12} {}", format!("{}:", t.name), t.id);
    }
    for a in &directory.applications {
        println!(
            "  app {:<24} client id {}  secret {}  webhook {}",
            format!("\"{}\":", a.name),
            a.client_id,
            a.secret,
            a.calling_webhook.as_deref().unwrap_or("(none)")
        );
        for i in &a.instances {
            println!(
                "      instance {:<19} {}  phone {}",
                format!("\"{}\":", i.display_name),
                i.id,
                i.phone.as_deref().unwrap_or("(none)")
            );
        }
    }
    // Whom a bot can call: listed when it is a handful, else where to find them.
    let parties = directory.users.len() + directory.numbers.len();
    if parties <= 20 {
        for line in &people {
            println!("  {line}");
        }
    } else {
        println!(
            "  parties:            {} users and {} PSTN numbers; `switchboard directory` lists them",
            directory.users.len(),
            directory.numbers.len()
        );
    }
    if let Some((addr, domain)) = &running.sip {
        println!("  SIP:                UDP and TCP on {addr}, domain {domain}; users register as sip:<username>@{domain}");
    }
    if let Some(addr) = &running.sip_tls {
        println!("  SIP over TLS:       {addr}");
    }
    println!("  notification JWTs:  issuer {issuer}; OpenID configuration {base}/notifications/v1/.well-known/openid-configuration");
    println!("  sim control API:    {base}/sim/v1  (header X-Sim-Admin-Key: {admin_key})");
    if virtual_clock {
        println!("  clock:              virtual, standing still; move it with POST {base}/sim/v1/clock {{\"advance_ms\": N}}");
    }
    println!("  OpenAPI:            {base}/openapi.json   metrics: {base}/metrics");
    handle.await.context("the server task failed")?;
    Ok(())
}

/// The directory's users and PSTN numbers, one line each: id, name, and how each answers on the sim.
fn directory_lines(config: &Config) -> Vec<String> {
    use switchboard_sim::Behaviour;
    let describe = |key: &str| match config.sim.behaviours.get(key).cloned().unwrap_or_default() {
        Behaviour::Answer { after_ms, hang_up_after_ms: Some(h), .. } => format!("answers after {after_ms} ms, hangs up {h} ms later"),
        Behaviour::Answer { after_ms, .. } => format!("answers after {after_ms} ms"),
        Behaviour::Busy => "busy (486)".to_owned(),
        Behaviour::Decline => "declines (603)".to_owned(),
        Behaviour::NoAnswer => "never answers".to_owned(),
    };
    let tenant =
        |id: &str| config.directory.tenants.iter().find(|t| t.id.eq_ignore_ascii_case(id)).map_or(id.to_owned(), |t| t.name.clone());
    let sip =
        |id: &str| config.sip.accounts.iter().find(|(u, _)| u.eq_ignore_ascii_case(id)).map(|(_, a)| format!("; SIP user {}", a.username));
    let mut lines: Vec<String> = config
        .directory
        .users
        .iter()
        .map(|u| {
            format!(
                "user {:<24} {}  ({}) {}{}",
                format!("\"{}\":", u.display_name),
                u.id,
                tenant(&u.tenant_id),
                describe(&u.id),
                sip(&u.id).unwrap_or_default()
            )
        })
        .collect();
    lines.extend(config.directory.numbers.iter().map(|n| format!("PSTN {:<24} {}", format!("{}:", n.number), describe(&n.number))));
    lines
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining requests and notifications in flight");
}
