//! `switchboard-bench`: the benchmark suite (issue 10). It starts `switchboard serve` itself, drives
//! it over loopback with its own HTTP/1.1 client, receives the notifications in its own webhook sink,
//! and measures the anchors in the same run: (a) a bare handler on the same HTTP stack, (b) the
//! store's raw durable commit rate, (c) the sink's own receive rate. Results go to a JSON file and
//! `docs/BENCHMARKS.md` (with SVG plots); the last line printed is the one-line summary.
//!
//! `scripts/bench` builds it and runs it; `--quick` stays under two minutes.

mod anchors;
mod graph;
mod http;
mod load;
mod process;
mod report;
mod sink;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::graph::Bot;
use crate::http::Conn;
use crate::load::{Load, Req};
use crate::process::Proc;
use crate::stats::round;

#[derive(Parser)]
#[command(name = "switchboard-bench", about = "Switchboard's benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the suite against a `switchboard` binary.
    Run {
        /// How much to run: quick (under two minutes), full, or smoke (tiny counts, for CI).
        #[arg(long, value_enum, default_value_t = Mode::Full)]
        mode: Mode,
        /// The `switchboard` binary under test.
        #[arg(long, default_value = "target/release/switchboard")]
        switchboard: PathBuf,
        /// Where the JSON results go.
        #[arg(long, default_value = "target/bench.json")]
        out: PathBuf,
        /// Regenerates this Markdown file's suite section and the plots beside it.
        #[arg(long)]
        docs: Option<PathBuf>,
        /// Runs only these phases (anchors, api, e2e, open, scale), e.g. under a profiler.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Serves anchor (a), the bare handler, until killed.
    Anchor {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Smoke,
    Quick,
    Full,
}

/// The sizes of one run.
struct Plan {
    api_seconds: u64,
    concurrency: Vec<usize>,
    transfers_per_level: usize,
    e2e_workers: Vec<usize>,
    e2e_seconds: u64,
    open_seconds: f64,
    /// Extra offered rates besides 1,000/s and half the e2e maximum.
    open_rates: Vec<f64>,
    scale: Vec<usize>,
    recover_at: usize,
}

impl Plan {
    fn of(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                api_seconds: 1,
                concurrency: vec![8],
                transfers_per_level: 40,
                e2e_workers: vec![4],
                e2e_seconds: 1,
                open_seconds: 1.0,
                open_rates: vec![],
                scale: vec![200],
                recover_at: 200,
            },
            Mode::Quick => Plan {
                api_seconds: 3,
                concurrency: vec![8, 32, 128],
                transfers_per_level: 1500,
                e2e_workers: vec![64],
                e2e_seconds: 5,
                open_seconds: 3.0,
                open_rates: vec![],
                scale: vec![5_000, 20_000],
                recover_at: 20_000,
            },
            Mode::Full => Plan {
                api_seconds: 8,
                concurrency: vec![1, 8, 32, 128, 256],
                transfers_per_level: 8000,
                e2e_workers: vec![16, 64, 256],
                e2e_seconds: 15,
                open_seconds: 5.0,
                open_rates: vec![250.0, 500.0, 2000.0],
                scale: vec![10_000, 100_000, 1_000_000],
                recover_at: 100_000,
            },
        }
    }
}

/// The concurrency the headline GET ratio is taken at (wrk's `-c32` in the table).
const HEADLINE_CONCURRENCY: usize = 32;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Anchor { listen } => anchors::serve_bare(listen),
        Cmd::Run { mode, switchboard, out, docs, only } => {
            // One thread for the driver and the sink: they share the machine with the server under
            // test, so they must cost as little as they can.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let mut results = runtime.block_on(run(mode, &switchboard, &only))?;
            stats::integral(&mut results);
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
            eprintln!("results written to {}", out.display());
            if let Some(doc) = docs {
                report::write(&doc, &results)?;
                eprintln!("{} and its plots regenerated", doc.display());
            }
            println!("{}", report::summary_line(&results));
            Ok(())
        }
    }
}

fn phase(name: &str) {
    eprintln!("== {name}");
}

async fn run(mode: Mode, bin: &std::path::Path, only: &[String]) -> anyhow::Result<Value> {
    let want = |phase: &str| only.is_empty() || only.iter().any(|p| p == phase);
    if !bin.exists() {
        bail!("{} not found: build it first (cargo build --release -p switchboard)", bin.display());
    }
    let plan = Plan::of(mode);
    let secs = Duration::from_secs(plan.api_seconds);
    let work = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();

    let sink = Arc::new(sink::Sink::default());
    let sink_addr = sink::serve(Arc::clone(&sink), "127.0.0.1:0".parse()?).await?;

    // The anchors first, on a quiet machine.
    let (mut sink_anchor, mut store_anchor, mut bare_levels) = (Value::Null, Value::Null, Vec::new());
    if want("anchors") {
        phase("anchor (c): the sink's own receive rate");
        let post = Req {
            method: "POST",
            path: "/cb".into(),
            headers: "Content-Type: application/json\r\n".into(),
            body: anchors::NOTIFICATION.as_bytes().to_vec(),
            expect: 202,
        };
        let mut sink_load = load::closed(sink_addr, post, HEADLINE_CONCURRENCY, secs).await;
        sink_anchor = sink_load.json(HEADLINE_CONCURRENCY);
        eprintln!("  {} notification POSTs/s", sink_anchor["rps"]);

        phase("anchor (b): the store's durable commit rate");
        store_anchor = anchors::store_commits(HEADLINE_CONCURRENCY, secs).await?;
        eprintln!("  {} commits/s", store_anchor["commits_per_s"]);
    }

    // The API and end-to-end figures, on one server.
    let data = work.join("api");
    let mut server = Proc::switchboard(bin, &data)?;
    server.ready("/readyz", Duration::from_secs(30)).await.context("switchboard did not become ready")?;
    let bot = Arc::new(Bot::new(server.addr, Arc::clone(&sink), sink_addr).await?);
    let (one, _) = load::establish(&bot, 1, 1, "a call to read").await?;
    let get_path = Bot::get_path(&one[0]);

    let (mut get_levels, mut transfer_levels) = (Vec::new(), Vec::new());
    if want("api") {
        // The anchor and the GET take turns, a second each, so that the machine's drift (other tenants,
        // frequency) weighs on both alike and the ratio holds.
        phase("api: authenticated GET call, in turns with anchor (a): a bare handler answering 202 on the same HTTP stack");
        let mut bare = Proc::anchor()?;
        bare.ready("/", Duration::from_secs(10)).await.context("the bare handler (anchor a) did not start")?;
        let bare_req = || Req { method: "GET", path: "/".into(), headers: String::new(), body: Vec::new(), expect: 202 };
        let get_req = || Req { method: "GET", path: get_path.clone(), headers: bot.headers.clone(), body: Vec::new(), expect: 200 };
        for &c in &plan.concurrency {
            let (mut anchor, mut get) = (Load::default(), Load::default());
            for _ in 0..plan.api_seconds {
                anchor.absorb(load::closed(bare.addr, bare_req(), c, Duration::from_secs(1)).await);
                get.absorb(load::closed(server.addr, get_req(), c, Duration::from_secs(1)).await);
            }
            eprintln!("  c={c}: anchor {} req/s, GET call {} req/s (p99 {} ms)", anchor.rps(), get.rps(), get.latency.ms(0.99));
            bare_levels.push(anchor.json(c));
            get_levels.push(get.json(c));
        }
        drop(bare);

        phase("api: POST transfer on established calls (202)");
        for &c in &plan.concurrency {
            let (ids, _) = load::establish(&bot, plan.transfers_per_level, 64, "calls to transfer").await?;
            let mut l = load::transfers_closed(&bot, ids, c).await;
            eprintln!("  c={c}: {} transfers/s, p50 {} ms, p99 {} ms", l.rps(), l.latency.ms(0.5), l.latency.ms(0.99));
            transfer_levels.push(l.json(c));
            settle(&server).await;
        }
    }

    phase("e2e: complete transfers (set up, transfer, every notification)");
    let mut e2e_runs = Vec::new();
    let cpu0 = server.cpu_s()?;
    let driver0 = process::cpu_s(std::process::id())?;
    for &w in plan.e2e_workers.iter().filter(|_| want("e2e")) {
        let r = load::e2e(&bot, w, Duration::from_secs(plan.e2e_seconds)).await;
        eprintln!("  {w} workers: {} transfers/s ({} errors)", r["transfers_per_s"], r["errors"]);
        e2e_runs.push(r);
        settle(&server).await;
    }
    let e2e_completed: f64 = e2e_runs.iter().filter_map(|r| r["completed"].as_f64()).sum();
    let per_transfer = |cpu: f64| if e2e_completed > 0.0 { round(cpu / e2e_completed * 1e6, 0) } else { 0.0 };
    let cpu_per_transfer_us = per_transfer(server.cpu_s()? - cpu0);
    let driver_cpu_per_transfer_us = per_transfer(process::cpu_s(std::process::id())? - driver0);
    let e2e_max = e2e_runs.iter().filter_map(|r| r["transfers_per_s"].as_f64()).fold(0.0, f64::max);

    phase("open loop: transfers offered at fixed rates");
    let half = (e2e_max / 2.0).max(1.0).round();
    let notify_rate = if mode == Mode::Smoke { 50.0 } else { 1000.0 };
    let mut rates: Vec<f64> = plan.open_rates.clone();
    rates.extend([notify_rate, half]);
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let mut open = Vec::new();
    for rate in rates.into_iter().filter(|_| want("open")) {
        let n = (rate * plan.open_seconds).ceil() as usize;
        let (ids, _) = load::establish(&bot, n, 64, "calls to transfer").await?;
        let mut r = load::transfers_open(&bot, ids, rate).await;
        eprintln!(
            "  {rate}/s offered, {}/s achieved: POST p99 {} ms, notification p50 {} / p99 {} ms, {} errors",
            r.achieved,
            r.post.ms(0.99),
            r.notify.ms(0.5),
            r.notify.ms(0.99),
            r.errors
        );
        let mut v = r.json();
        v["half_of_e2e_max"] = json!(rate == half);
        v["notify_rate"] = json!(rate == notify_rate);
        open.push(v);
        settle(&server).await;
    }
    drop(server);

    // Memory and recovery, on a fresh server.
    phase("scale: memory per established call, recovery after kill -9");
    let data = work.join("scale");
    let mut server = Proc::switchboard(bin, &data)?;
    server.ready("/readyz", Duration::from_secs(30)).await?;
    let mut bot = Arc::new(Bot::new(server.addr, Arc::clone(&sink), sink_addr).await?);
    let base_rss = server.rss()?;
    let mut alive: Vec<String> = Vec::new();
    let mut points = Vec::new();
    let mut recovery = Value::Null;
    for &target in plan.scale.iter().filter(|_| want("scale")) {
        let (mut ids, rate) = load::establish(&bot, target - alive.len(), 128, &format!("calls toward {target}")).await?;
        alive.append(&mut ids);
        settle(&server).await;
        let rss = server.rss()?;
        let per_call = (rss.saturating_sub(base_rss)) as f64 / alive.len() as f64;
        eprintln!("  {} calls: RSS {} MiB, {:.0} bytes per call (set up at {rate}/s)", alive.len(), rss >> 20, per_call);
        points.push(json!({"calls": alive.len(), "rss_bytes": rss, "base_rss_bytes": base_rss, "bytes_per_call": per_call.round(), "setup_per_s": rate}));
        if alive.len() == plan.recover_at {
            let (r, restarted) = recover(server, bin, &data, &alive).await?;
            server = restarted;
            // The server came back on another port; the bot follows it (and sets the behaviours again).
            bot = Arc::new(Bot::new(server.addr, Arc::clone(&sink), sink_addr).await?);
            eprintln!("  recovery with {} calls: ready in {} s, {} of them readable", alive.len(), r["ready_s"], r["readable"]);
            recovery = r;
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&work);

    let machine = machine();
    let results = json!({
        "mode": format!("{mode:?}").to_lowercase(),
        "date": date(),
        "machine": machine,
        "settings": {
            "store": "SQLite (WAL, synchronous=NORMAL): a 2xx survives kill -9",
            "server": "switchboard serve, embedded defaults, logs at info to a file",
            "driver": "switchboard-bench: one thread, its own HTTP/1.1 keep-alive client and webhook sink, on the same machine",
            "headline_concurrency": HEADLINE_CONCURRENCY,
        },
        "anchors": {"bare_handler": bare_levels, "store": store_anchor, "sink": sink_anchor},
        "api": {"get_call": get_levels, "transfer_post": transfer_levels},
        "e2e": {"runs": e2e_runs, "max_transfers_per_s": e2e_max, "server_cpu_us_per_transfer": cpu_per_transfer_us, "driver_cpu_us_per_transfer": driver_cpu_per_transfer_us},
        "open_loop": open,
        "scale": {"points": points, "recovery": recovery},
        "seconds": round(started.elapsed().as_secs_f64(), 1),
    });
    Ok(results)
}

/// Kills the server (-9) with `alive` calls, starts it again on the same data and times it to
/// `/readyz`, then reads every call back.
async fn recover(server: Proc, bin: &std::path::Path, data: &std::path::Path, alive: &[String]) -> anyhow::Result<(Value, Proc)> {
    server.kill9();
    let mut again = Proc::switchboard(bin, data)?;
    let ready = again.ready("/readyz", Duration::from_secs(600)).await?;
    let rss = again.rss()?;
    // A fresh token: the signing key is on disk, so the old one would do too, but a bot would ask again.
    let sink = Arc::new(sink::Sink::default());
    let bot = Arc::new(Bot::new(again.addr, sink, "127.0.0.1:9".parse()?).await?);
    let t0 = Instant::now();
    let readable = read_all(&bot, alive).await;
    Ok((
        json!({
            "calls": alive.len(),
            "ready_s": round(ready.as_secs_f64(), 3),
            "readable": readable,
            "read_back_s": round(t0.elapsed().as_secs_f64(), 3),
            "rss_after_bytes": rss,
        }),
        again,
    ))
}

/// GETs every call from 32 connections; returns how many answered 200.
async fn read_all(bot: &Arc<Bot>, ids: &[String]) -> usize {
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (bot, ids, next) = (Arc::clone(bot), Arc::clone(&ids), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(bot.server);
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                if conn.send("GET", &Bot::get_path(id), &bot.headers, b"").await.is_ok_and(|r| r.status == 200) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total
}

/// Lets the server finish what the last phase left (notifications in flight), so that phases do not
/// charge each other.
async fn settle(server: &Proc) {
    let mut last = server.cpu_s().unwrap_or(0.0);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.cpu_s().unwrap_or(0.0);
        // Less than 2 % of a core over 200 ms: idle.
        if now - last < 0.004 {
            return;
        }
        last = now;
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": round(mem_kb as f64 / 1024.0 / 1024.0, 1),
    })
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
