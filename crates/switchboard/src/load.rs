//! `switchboard load`: synthetic callers into a bot, at a rate or a concurrency, for a while, with a
//! mix of scenarios; then a summary of what happened to every call.
//!
//! It speaks only Switchboard's public HTTP APIs, so it runs against a server on another host: the sim
//! API places the calls (`POST /sim/v1/calls`) and hangs them up, the calls list
//! (`GET /sim/v1/calls`) says which have ended, and each ended call's story
//! (`GET /sim/v1/calls/{id}/history`) says what the bot did and how fast: when it answered, whether
//! it transferred, how long each notification took to be acknowledged. The bot under test is yours,
//! or the built-in one (`--bot-listen`), which acts out the mix through the Graph API.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

/// What a synthetic call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// The bot answers; the caller hangs up after `--hold-ms`.
    Answer,
    /// The bot rejects the call as busy.
    Busy,
    /// The caller gives up while the call still rings the bot (after `--abandon-ms`).
    Hangup,
    /// The bot answers and transfers the caller to `--transfer-to`; the caller stays `--hold-ms` with
    /// the target.
    Transfer,
}

impl Scenario {
    const ALL: [Scenario; 4] = [Scenario::Answer, Scenario::Busy, Scenario::Hangup, Scenario::Transfer];

    fn name(self) -> &'static str {
        match self {
            Scenario::Answer => "answer",
            Scenario::Busy => "busy",
            Scenario::Hangup => "hangup",
            Scenario::Transfer => "transfer",
        }
    }
}

/// The scenarios and their weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(pub Vec<(Scenario, u32)>);

/// `answer=60,busy=10,hangup=10,transfer=20` (weights; a scenario left out never happens).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut mix: Vec<(Scenario, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let scenario = Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == name.trim())
            .ok_or_else(|| format!("'{name}' is not a scenario; the scenarios are answer, busy, hangup and transfer"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= 1_000_000)
            .ok_or_else(|| format!("'{weight}' (the weight of {name}) is not a whole number from 0 to 1000000"))?;
        if mix.iter().any(|(sc, _)| *sc == scenario) {
            return Err(format!("{name} is given twice"));
        }
        mix.push((scenario, weight));
    }
    if mix.iter().all(|(_, w)| *w == 0) {
        return Err("the mix needs at least one scenario with a weight above 0".into());
    }
    Ok(Mix(mix))
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// The Switchboard to drive (its sim API must be reachable: the admin key).
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The sim admin key.
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", default_value = "switchboard-demo-admin")]
    pub admin_key: String,
    /// The bot under test: an app id, an app instance id, or an instance's number (default: the
    /// demo's Demo Bot).
    #[arg(long, default_value = "cccccccc-0000-4000-8000-000000000003")]
    pub to: String,
    /// Who calls: user ids or E.164 numbers of the directory, taken in turn (default: Alex Wilber).
    #[arg(long = "from", value_delimiter = ',', default_value = "751f6800-3180-414d-bd94-333364659951")]
    pub from: Vec<String>,
    /// New calls a second (open loop: calls are placed on time whatever the bot does).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Calls at once (closed loop: a new call as soon as one ends). The default, with 10, unless
    /// `--rate` is given.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to place calls, in seconds; calls still going then are waited for (up to
    /// `--hold-ms` + 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The scenarios and their weights.
    #[arg(long, default_value = "answer=1", value_parser = parse_mix)]
    pub mix: Mix,
    /// How long a caller stays once answered (or, transferred, with the target), in ms.
    #[arg(long, default_value_t = 1_000)]
    pub hold_ms: u64,
    /// How long a `hangup` caller waits before giving up, in ms.
    #[arg(long, default_value_t = 300)]
    pub abandon_ms: u64,
    /// Run the built-in bot on this address; the app's calling webhook must point there
    /// (`http://ADDR/api/calls`: the demo's Demo Bot's default webhook is 127.0.0.1:3978). It answers,
    /// rejects and transfers as the mix says. Without it, your bot decides: the mix then only chooses
    /// whether a caller stays (`answer`, `busy`, `transfer`) or gives up (`hangup`).
    #[arg(long)]
    pub bot_listen: Option<SocketAddr>,
    /// The built-in bot's app (client id), secret and tenant.
    #[arg(long, default_value = "cccccccc-0000-4000-8000-000000000003")]
    pub client_id: String,
    #[arg(long, env = "SWITCHBOARD_LOAD_CLIENT_SECRET", default_value = "switchboard-demo-secret")]
    pub client_secret: String,
    #[arg(long, default_value = "aaaaaaaa-0000-4000-8000-000000000001")]
    pub tenant: String,
    /// Who the built-in bot transfers to (a user id; default: Heidi Steen).
    #[arg(long, default_value = "550fae72-d251-43ec-868c-373732c2704f")]
    pub transfer_to: String,
    /// A PEM certificate to trust, for a Switchboard served over HTTPS with its own certificate
    /// (`<data-dir>/tls/cert.pem` after `serve --tls`).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Also write the summary here, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Half and 99 in 100 were at or under these (ms).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(mut v: Vec<u64>) -> Percentiles {
        v.sort_unstable();
        // Nearest rank: the smallest value with at least q in 100 at or under it.
        let at = |q: usize| if v.is_empty() { 0 } else { v[(v.len() * q).div_ceil(100).max(1) - 1] };
        Percentiles { count: v.len(), p50: at(50), p99: at(99), max: v.last().copied().unwrap_or(0) }
    }
}

/// What happened, over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// How long calls were placed; and the whole run, with the wait for the last calls to end.
    pub duration_s: f64,
    pub run_s: f64,
    /// Calls the sim placed into the bot.
    pub offered: u64,
    /// ... by scenario.
    pub scenarios: BTreeMap<Scenario, u64>,
    /// Calls the bot answered.
    pub answered: u64,
    /// Calls that ended before the bot answered while their callers still waited: rejected,
    /// redirected, or never answered.
    pub unanswered: u64,
    /// Calls whose caller gave up before the bot answered.
    pub abandoned: u64,
    /// Transfers that completed, and that failed.
    pub transferred: u64,
    pub transfers_failed: u64,
    /// Calls that had ended when the run did; and those that had not (counted as errors too).
    pub ended: u64,
    pub unfinished: u64,
    pub bot_answer_latency_ms: Percentiles,
    pub notification_ack_latency_ms: Percentiles,
    /// Errors by kind: a refused sim or Graph request, a notification the bot did not acknowledge, a
    /// call whose story was not kept, a call that did not end.
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        let mix: Vec<String> = self.scenarios.iter().map(|(s, n)| format!("{} {n}", s.name())).collect();
        let errors: u64 = self.errors.values().sum();
        let mut out = vec![
            format!("calls offered           {} in {:.1} s ({}); run {:.1} s", self.offered, self.duration_s, mix.join(", "), self.run_s),
            format!("answered by the bot     {}", self.answered),
            format!("not answered            {}", self.unanswered),
            format!("abandoned by callers    {}", self.abandoned),
            format!("transferred             {} ({} failed)", self.transferred, self.transfers_failed),
            format!("ended                   {} ({} unfinished)", self.ended, self.unfinished),
            format!(
                "bot answer latency      p50 {} ms  p99 {} ms  max {} ms  ({} answers)",
                self.bot_answer_latency_ms.p50,
                self.bot_answer_latency_ms.p99,
                self.bot_answer_latency_ms.max,
                self.bot_answer_latency_ms.count
            ),
            format!(
                "notification ack        p50 {} ms  p99 {} ms  max {} ms  ({} acknowledged)",
                self.notification_ack_latency_ms.p50,
                self.notification_ack_latency_ms.p99,
                self.notification_ack_latency_ms.max,
                self.notification_ack_latency_ms.count
            ),
            format!("errors                  {errors}"),
        ];
        out.extend(self.errors.iter().map(|(kind, n)| format!("  {n:>6}  {kind}")));
        out
    }
}

/// A call placed and not yet accounted for.
struct Live {
    scenario: Scenario,
    leg_id: String,
    placed: Instant,
    /// When the generator saw it established (the caller's hold starts).
    established: Option<Instant>,
    /// The caller hung up (or was asked to).
    hung_up: bool,
}

#[derive(Default)]
struct Tally {
    summary: Summary,
    answer_ms: Vec<u64>,
    ack_ms: Vec<u64>,
}

impl Tally {
    fn error(&mut self, kind: impl Into<String>) {
        *self.summary.errors.entry(kind.into()).or_default() += 1;
    }
}

struct Run {
    args: LoadArgs,
    http: reqwest::Client,
    base: String,
    live: Mutex<HashMap<String, Live>>,
    tally: Mutex<Tally>,
    /// The built-in bot's part: what each call is for.
    scenarios: Mutex<HashMap<String, Scenario>>,
    token: tokio::sync::Mutex<Option<String>>,
    bot_url: Option<String>,
    /// The built-in bot's actions taken, by call and verb: each at most once (a failed transfer puts
    /// the call back to established, which must not start another).
    acted: Mutex<std::collections::HashSet<(String, &'static str)>>,
    /// Tasks spawned and not yet done (hang-ups, stories read, the bot's requests): the run waits for them.
    tasks: std::sync::atomic::AtomicUsize,
}

impl Run {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` on its own, counted, so that the run ends only once it is done.
    fn spawn(self: &Arc<Self>, work: impl std::future::Future<Output = ()> + Send + 'static) {
        use std::sync::atomic::Ordering;
        self.tasks.fetch_add(1, Ordering::SeqCst);
        let run = Arc::clone(self);
        tokio::spawn(async move {
            work.await;
            run.tasks.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn busy(&self) -> usize {
        self.tasks.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn sim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
        let mut req = self.http.request(method, format!("{}/sim/v1{path}", self.base)).header("X-Sim-Admin-Key", &self.args.admin_key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| format!("unreachable ({})", without_url(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Places one call, with an id of ours (so the built-in bot knows its scenario before the offer).
    async fn place(self: &Arc<Self>, n: u64, run_id: &str) {
        let scenario = pick(&self.args.mix.0);
        let id = format!("load-{run_id}-{n}");
        let from = &self.args.from[(n as usize) % self.args.from.len()];
        self.scenarios.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), scenario);
        let body = json!({"from": from, "to": self.args.to, "callId": id});
        match self.sim(reqwest::Method::POST, "/calls", Some(body)).await {
            Ok((201, resp)) => {
                let leg_id = resp["legId"].as_str().unwrap_or_default().to_owned();
                self.live().insert(id, Live { scenario, leg_id, placed: Instant::now(), established: None, hung_up: false });
                let mut t = self.tally();
                t.summary.offered += 1;
                *t.summary.scenarios.entry(scenario).or_default() += 1;
            }
            Ok((status, resp)) => {
                let code = resp["error"]["code"].as_str().unwrap_or("").to_owned();
                self.tally().error(format!("place call: {status} {code}").trim().to_owned());
            }
            Err(e) => self.tally().error(format!("place call: {e}")),
        }
    }

    /// One look at every call: hang up those whose callers are done, account for those that ended.
    async fn watch(self: &Arc<Self>) {
        if self.live().is_empty() {
            return;
        }
        let calls = match self.sim(reqwest::Method::GET, "/calls", None).await {
            Ok((200, list)) => list["value"].as_array().cloned().unwrap_or_default(),
            Ok((status, _)) => {
                self.tally().error(format!("list calls: {status}"));
                return;
            }
            Err(e) => {
                self.tally().error(format!("list calls: {e}"));
                return;
            }
        };
        let states: HashMap<&str, (&str, bool)> =
            calls.iter().filter_map(|c| Some((c["id"].as_str()?, (c["state"].as_str().unwrap_or(""), !c["endedAt"].is_null())))).collect();
        let now = Instant::now();
        let hold = Duration::from_millis(self.args.hold_ms);
        let give_up = hold + Duration::from_secs(30);
        let mut ended = Vec::new();
        let mut hang_up = Vec::new();
        {
            let mut live = self.live();
            for (id, call) in live.iter_mut() {
                let (state, over) = states.get(id.as_str()).copied().unwrap_or(("", false));
                if over {
                    ended.push(id.clone());
                    continue;
                }
                if state == "established" && call.established.is_none() {
                    call.established = Some(now);
                }
                let due = match call.scenario {
                    Scenario::Hangup => now.duration_since(call.placed) >= Duration::from_millis(self.args.abandon_ms),
                    // A transfer under way is waited for (its target may ring a while).
                    _ if matches!(state, "transferring" | "transferAccepted") => false,
                    _ => call.established.is_some_and(|at| now.duration_since(at) >= hold),
                };
                // A call that outlives every reason to go on is hung up and counted as unfinished.
                let stuck = now.duration_since(call.placed) >= give_up;
                if (due || stuck) && !call.hung_up {
                    call.hung_up = true;
                    hang_up.push(id.clone());
                }
                if stuck {
                    ended.push(id.clone());
                }
            }
        }
        for id in hang_up {
            let run = Arc::clone(self);
            self.spawn(async move { run.hang_up(&id).await });
        }
        for id in ended {
            let Some(call) = self.live().remove(&id) else { continue };
            let run = Arc::clone(self);
            self.spawn(async move { run.account(&id, call).await });
        }
    }

    /// The caller of call `id` hangs up.
    async fn hang_up(&self, id: &str) {
        match self.sim(reqwest::Method::POST, &format!("/calls/{id}/hangup"), None).await {
            // Gone already (the bot hung up, or transferred it): nothing to do.
            Ok((204 | 404 | 409, _)) => {}
            Ok((status, _)) => self.tally().error(format!("hang up: {status}")),
            Err(e) => self.tally().error(format!("hang up: {e}")),
        }
    }

    /// An ended call's story, once every notification it owed has had its delivery attempt noted
    /// (the last ones are often still on their way when the call ends), or as it is after 5 s.
    async fn story(&self, id: &str) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let story = match self.sim(reqwest::Method::GET, &format!("/calls/{id}/history"), None).await? {
                (200, story) => story,
                (status, _) => return Err(format!("{status}")),
            };
            let entries = story["entries"].as_array().cloned().unwrap_or_default();
            let tried: std::collections::HashSet<i64> = entries
                .iter()
                .filter(|e| e["kind"] == "delivery")
                .flat_map(|e| e["seqs"].as_array().cloned().unwrap_or_default())
                .filter_map(|s| s.as_i64())
                .collect();
            let all_tried =
                entries.iter().filter(|e| e["kind"] == "notification").all(|e| e["seq"].as_i64().is_some_and(|s| tried.contains(&s)));
            if all_tried || Instant::now() >= deadline {
                return Ok(story);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What happened to an ended call, from its story.
    async fn account(self: Arc<Self>, id: &str, call: Live) {
        self.scenarios.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let story = match self.story(id).await {
            Ok(story) => story,
            Err(e) => {
                self.tally().error(format!("call story: {e}"));
                return;
            }
        };
        let mut transferred = false;
        {
            let mut t = self.tally();
            if story["endedAt"].is_null() {
                t.summary.unfinished += 1;
                t.error("call did not end");
            } else {
                t.summary.ended += 1;
            }
            let created = story["createdAt"].as_u64().unwrap_or(0);
            let mut answered = false;
            for e in story["entries"].as_array().into_iter().flatten() {
                match e["kind"].as_str() {
                    Some("state") => match (e["from"].as_str(), e["to"].as_str()) {
                        (Some("incoming"), Some("establishing" | "established")) => {
                            answered = true;
                            t.summary.answered += 1;
                            t.answer_ms.push(e["at"].as_u64().unwrap_or(created).saturating_sub(created));
                        }
                        (Some("incoming"), Some("terminated")) if call.hung_up => t.summary.abandoned += 1,
                        (Some("incoming"), Some("terminated")) => t.summary.unanswered += 1,
                        // The target took the call: the bot's call ends as the transfer completes.
                        (Some("transferAccepted"), Some("terminated")) => {
                            transferred = true;
                            t.summary.transferred += 1;
                        }
                        // Back with the bot, or ended (hung up) before the target took it.
                        (Some("transferring" | "transferAccepted"), Some("established" | "terminated")) => t.summary.transfers_failed += 1,
                        _ => {}
                    },
                    Some("delivery") => match e["status"].as_u64() {
                        Some(200..=299) => t.ack_ms.push(e["latencyMs"].as_u64().unwrap_or(0)),
                        Some(status) => t.error(format!("notification: {status}")),
                        None if e["faults"].as_array().is_some_and(|f| f.iter().any(|x| x == "drop")) => {}
                        None => t.error("notification: no answer"),
                    },
                    _ => {}
                }
            }
            // The built-in bot answers these at once.
            if !answered && self.bot_url.is_some() && matches!(call.scenario, Scenario::Answer | Scenario::Transfer) {
                t.error("bot did not answer");
            }
        }
        // A transferred caller talks with the target, then hangs up.
        if transferred && !call.leg_id.is_empty() {
            tokio::time::sleep(Duration::from_millis(self.args.hold_ms)).await;
            match self.sim(reqwest::Method::DELETE, &format!("/legs/{}", call.leg_id), None).await {
                Ok((204 | 404, _)) => {}
                Ok((status, _)) => self.tally().error(format!("hang up transferee: {status}")),
                Err(e) => self.tally().error(format!("hang up transferee: {e}")),
            }
        }
    }

    /// The built-in bot's Graph request (a fresh token when the one it has is refused).
    async fn graph(&self, path: &str, body: Value) -> Result<u16, String> {
        for fresh in [false, true] {
            let token = self.bot_token(fresh).await?;
            let resp = self
                .http
                .post(format!("{}/v1.0/communications/calls/{path}", self.base))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("unreachable ({})", without_url(&e)))?;
            let status = resp.status().as_u16();
            if status != 401 || fresh {
                return Ok(status);
            }
        }
        Ok(401)
    }

    async fn bot_token(&self, fresh: bool) -> Result<String, String> {
        let mut token = self.token.lock().await;
        if let (Some(t), false) = (&*token, fresh) {
            return Ok(t.clone());
        }
        let resp = self
            .http
            .post(format!("{}/{}/oauth2/v2.0/token", self.base, self.args.tenant))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.args.client_id),
                ("client_secret", &self.args.client_secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .map_err(|e| format!("token: unreachable ({})", without_url(&e)))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let t = body["access_token"].as_str().ok_or_else(|| format!("token: {status}"))?.to_owned();
        *token = Some(t.clone());
        Ok(t)
    }

    /// A notification for the built-in bot: acts on the offers and answers of the calls it placed.
    fn notified(self: &Arc<Self>, body: &Value) {
        for item in body["value"].as_array().into_iter().flatten() {
            let data = &item["resourceData"];
            let id = data["id"]
                .as_str()
                .or_else(|| item["resourceUrl"].as_str().and_then(|u| u.rsplit('/').next()))
                .unwrap_or_default()
                .to_owned();
            let Some(scenario) = self.scenarios.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied() else { continue };
            let Some(callback) = self.bot_url.clone() else { continue };
            let action = match (data["state"].as_str(), scenario) {
                (Some("incoming"), Scenario::Answer | Scenario::Transfer) => Some((
                    "answer",
                    json!({"callbackUri": callback, "acceptedModalities": ["audio"],
                           "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}}),
                )),
                (Some("incoming"), Scenario::Busy) => Some(("reject", json!({"reason": "busy"}))),
                (Some("established"), Scenario::Transfer) if item["changeType"] == "updated" => Some((
                    "transfer",
                    json!({"transferTarget": {"endpointType": "default", "identity": {"user": {"id": self.args.transfer_to}}}}),
                )),
                _ => None,
            };
            if let Some((verb, body)) = action {
                if !self.acted.lock().unwrap_or_else(|e| e.into_inner()).insert((id.clone(), verb)) {
                    continue;
                }
                let run = Arc::clone(self);
                self.spawn(async move {
                    match run.graph(&format!("{id}/{verb}"), body).await {
                        Ok(202 | 200 | 204) => {}
                        // The caller gave up meanwhile.
                        Ok(404) => {}
                        Ok(status) => run.tally().error(format!("bot {verb}: {status}")),
                        Err(e) => run.tally().error(format!("bot {verb}: {e}")),
                    }
                });
            }
        }
    }
}

fn pick(mix: &[(Scenario, u32)]) -> Scenario {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut n = fastrand::u32(0..total.max(1));
    for (scenario, w) in mix {
        if n < *w {
            return *scenario;
        }
        n -= w;
    }
    Scenario::Answer
}

fn without_url(e: &reqwest::Error) -> String {
    let s = e.to_string();
    match e.url() {
        Some(u) => s.replace(&format!(" ({u})"), "").replace(u.as_str(), "…"),
        None => s,
    }
}

/// The built-in bot's webhook.
async fn serve_bot(run: Arc<Run>, listener: tokio::net::TcpListener) {
    let app = axum::Router::new()
        .route(
            "/api/calls",
            axum::routing::post(|axum::extract::State(run): axum::extract::State<Arc<Run>>, body: axum::body::Bytes| async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    run.notified(&v);
                }
                axum::http::StatusCode::ACCEPTED
            }),
        )
        .with_state(run);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("load: the built-in bot stopped: {e}");
    }
}

/// Runs the load; prints progress to stderr, and returns the summary.
pub async fn run(args: LoadArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(!args.from.is_empty(), "--from needs at least one caller");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 86_400.0, "--duration must be between 0 and 86400 seconds");
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate <= 10_000.0, "--rate must be between 0 and 10000 calls a second");
    }
    anyhow::ensure!(args.concurrency.is_none_or(|c| (1..=10_000).contains(&c)), "--concurrency must be between 1 and 10000");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(64);
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
        http = http.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).with_context(|| format!("{} is not a PEM certificate", path.display()))?,
        );
    }
    let http = http.build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let listener = match args.bot_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("the built-in bot cannot listen on {addr}"))?),
        None => None,
    };
    let bot_url = match &listener {
        Some(l) => Some(format!("http://{}/api/calls", l.local_addr()?)),
        None => None,
    };
    let run = Arc::new(Run {
        args: args.clone(),
        http,
        base,
        live: Mutex::default(),
        tally: Mutex::default(),
        scenarios: Mutex::default(),
        token: tokio::sync::Mutex::new(None),
        bot_url,
        acted: Mutex::default(),
        tasks: Default::default(),
    });
    // Reachable, and the admin key right, before anything starts.
    match run.sim(reqwest::Method::GET, "/clock", None).await {
        Ok((200, _)) => {}
        Ok((status, body)) => anyhow::bail!("{} refused the sim API ({status}): {}", args.url, body["error"]["message"]),
        Err(e) => anyhow::bail!("{} is {e}", args.url),
    }
    if let Some(listener) = listener {
        run.bot_token(true).await.map_err(|e| anyhow::anyhow!("the built-in bot has no {e}"))?;
        tokio::spawn(serve_bot(Arc::clone(&run), listener));
    }

    let run_id = format!("{:08x}", fastrand::u32(..));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let concurrency = args.rate.is_none().then(|| args.concurrency.unwrap_or(10));
    let tty = std::io::stderr().is_terminal();
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_progress = started;
    let grace = Duration::from_millis(args.hold_ms) + Duration::from_secs(30);
    // The calls are watched on their own, so that placing keeps its pace whatever the server's answers take.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (run, watching) = (Arc::clone(&run), Arc::clone(&watching));
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                run.watch().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    loop {
        tick.tick().await;
        let now = Instant::now();
        let placing = now < deadline;
        if placing {
            // How many calls should have been placed by now, or how many may be live.
            let due = match (args.rate, concurrency) {
                (Some(rate), _) => ((now - started).as_secs_f64() * rate).floor() as u64 + 1,
                (None, Some(c)) => n + c.saturating_sub(run.live().len() + in_flight(&run, n)) as u64,
                (None, None) => n,
            };
            while n < due {
                n += 1;
                let (placer, id) = (Arc::clone(&run), run_id.clone());
                run.spawn(async move { placer.place(n, &id).await });
            }
        }
        if now.duration_since(last_progress) >= Duration::from_secs(if tty { 1 } else { 5 }) {
            last_progress = now;
            progress(&run, started, args.duration, tty);
        }
        if !placing && (run.live().is_empty() && in_flight(&run, n) == 0 || now > deadline + grace) {
            break;
        }
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.await;
    // Whatever is left did not end in time: hung up, and counted as unfinished.
    let left: Vec<String> = run.live().keys().cloned().collect();
    for id in left {
        let call = run.live().remove(&id);
        if let Some(call) = call {
            run.hang_up(&id).await;
            Arc::clone(&run).account(&id, call).await;
        }
    }
    // The stories still being read, the transferred callers still talking with their targets.
    let bound = Instant::now() + Duration::from_millis(args.hold_ms) + Duration::from_secs(40);
    while run.busy() > 0 && Instant::now() < bound {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if run.busy() > 0 {
        run.tally().error("still busy at the end");
    }
    progress(&run, started, args.duration, tty);
    if tty {
        eprintln!();
    }
    let mut t = std::mem::take(&mut *run.tally());
    t.summary.duration_s = args.duration;
    t.summary.run_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    t.summary.bot_answer_latency_ms = Percentiles::of(t.answer_ms);
    t.summary.notification_ack_latency_ms = Percentiles::of(t.ack_ms);
    Ok(t.summary)
}

/// Calls placed whose placing has not been answered yet.
fn in_flight(run: &Run, placed: u64) -> usize {
    let t = run.tally();
    let answered = t.summary.offered + t.summary.errors.iter().filter(|(k, _)| k.starts_with("place call")).map(|(_, n)| n).sum::<u64>();
    (placed.saturating_sub(answered)) as usize
}

fn progress(run: &Run, started: Instant, duration: f64, tty: bool) {
    let live = run.live().len();
    let t = run.tally();
    let s = &t.summary;
    let errors: u64 = s.errors.values().sum();
    let line = format!(
        "load {:.0}/{duration:.0} s  offered {}  live {live}  answered {}  transferred {}  ended {}  errors {errors}",
        started.elapsed().as_secs_f64(),
        s.offered,
        s.answered,
        s.transferred,
        s.ended
    );
    if tty {
        eprint!("\r{line}\x1b[K");
    } else {
        eprintln!("{line}");
    }
}

/// What the run will do, in one line.
pub fn describe(args: &LoadArgs) -> String {
    let mix: Vec<String> = args.mix.0.iter().filter(|(_, w)| *w > 0).map(|(s, w)| format!("{}={w}", s.name())).collect();
    let pace = match (args.rate, args.concurrency) {
        (Some(r), _) => format!("{r} calls/s"),
        (None, c) => format!("{} at once", c.unwrap_or(10)),
    };
    let bot = match args.bot_listen {
        Some(a) => format!("the built-in bot on {a}"),
        None => "your bot".to_owned(),
    };
    format!("load: {pace} into {} for {} s, scenarios {}; {bot}", args.to, args.duration, mix.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_or_say_what_is_wrong() {
        assert_eq!(parse_mix("answer=3, transfer=1"), Ok(Mix(vec![(Scenario::Answer, 3), (Scenario::Transfer, 1)])));
        assert_eq!(parse_mix("busy"), Ok(Mix(vec![(Scenario::Busy, 1)])));
        for (bad, says) in [
            ("sing=1", "'sing' is not a scenario"),
            ("answer=x", "'x' (the weight of answer)"),
            ("answer=1,answer=2", "given twice"),
            ("answer=0", "at least one scenario"),
            ("", "at least one scenario"),
        ] {
            assert!(parse_mix(bad).is_err_and(|e| e.contains(says)), "{bad}: {:?}", parse_mix(bad));
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        let p = Percentiles::of((1..=100).rev().collect());
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50, 99, 100));
        assert_eq!(Percentiles::of(vec![7]).p99, 7);
    }
}
