//! The documented examples, read from the seed pages themselves (`../shared/seeds/en-*.md`): each
//! example's exact request body is sent to a server whose directory has the pages' tenant, on calls with
//! the pages' call ids, and the notifications the bot receives are compared with the documented ones.
//!
//! Where Switchboard differs from a page, the difference is named here, in `expected`, with its reason.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::lifecycle::answer_body;

/// The tenant the seed pages use (Heidi Steen's `tenantId`).
const SEED_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const LEGACY_PHONE: &str = "+14255550107";

/// One documented example: the request and the notifications the page shows, in page order.
#[derive(Debug)]
struct Example {
    title: String,
    /// The request path, relative to the server (`/beta/communications/calls/{id}/transfer`).
    path: String,
    body: Value,
    /// (heading, the notification item), e.g. ("Notification - transferring", {...}).
    notes: Vec<(String, Value)>,
}

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds")
}

/// Reads the examples of a seed page: every `###` heading after "Examples" that is not a notification
/// starts one; the first `POST` is its request (body in the same block or the next JSON block), and each
/// JSON block after a "Notification - …" heading is one documented notification.
fn examples(page: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(seeds_dir().join(page)).unwrap_or_else(|e| panic!("seed page {page}: {e}"));
    let mut out: Vec<Example> = Vec::new();
    let (mut in_examples, mut heading, mut block, mut fence) = (false, String::new(), String::new(), None::<String>);
    let mut wants_body = false;
    for line in text.lines() {
        if let Some(kind) = &fence {
            if line.trim_start().starts_with("```") {
                let (kind, content) = (kind.clone(), std::mem::take(&mut block));
                fence = None;
                let Some(ex) = out.last_mut() else { continue };
                if kind == "http" && ex.path.is_empty() {
                    let post = content.lines().find_map(|l| l.strip_prefix("POST ")).unwrap_or_default();
                    ex.path = post.trim().trim_start_matches("https://graph.microsoft.com").to_owned();
                    if !ex.path.starts_with("/beta") && !ex.path.starts_with("/v1.0") {
                        ex.path = format!("/beta{}", ex.path);
                    }
                    match content.find("\n{") {
                        Some(at) => ex.body = serde_json::from_str(&content[at..]).expect("request body"),
                        None => wants_body = true,
                    }
                } else if kind == "json" && wants_body {
                    ex.body = serde_json::from_str(&content).expect("request body");
                    wants_body = false;
                } else if kind == "json" && heading.to_lowercase().contains("notification") {
                    let doc: Value = serde_json::from_str(&content).expect("notification");
                    ex.notes.push((heading.clone(), doc["value"][0].clone()));
                }
            } else {
                block.push_str(line);
                block.push('\n');
            }
            continue;
        }
        if let Some(kind) = line.trim_start().strip_prefix("```") {
            fence = Some(kind.trim().to_owned());
            continue;
        }
        if line.starts_with('#') {
            // "### <a name=\"x\"></a>Example 1: Call transfer" → "Example 1: Call transfer"
            heading = line.rsplit("</a>").next().unwrap_or(line).trim_start_matches('#').trim().to_owned();
            if line.starts_with("## ") {
                in_examples = heading == "Examples";
            } else if in_examples && line.starts_with("### ") && !heading.to_lowercase().contains("notification") {
                out.push(Example { title: heading.clone(), path: String::new(), body: Value::Null, notes: Vec::new() });
            }
        }
    }
    out
}

/// The demo directory with the seed pages' tenant in place of Contoso's, and both bots' webhooks at
/// the test bot; `extra` are more `serve` flags.
pub async fn seed_server_with(bot: &Bot, extra: Vec<String>) -> Server {
    let toml = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/switchboard.example.toml"))
        .expect("docs/switchboard.example.toml");
    let toml = toml
        .replace(CONTOSO, SEED_TENANT)
        .replace("http://127.0.0.1:3978/api/calls", &bot.webhook())
        .replace("http://127.0.0.1:3980/api/calls", &bot.webhook());
    let path = std::env::temp_dir().join(format!("switchboard-seeds-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).expect("write config");
    let mut args = vec!["--config".into(), path.display().to_string()];
    args.extend(extra);
    let server = Server::start_with(Options { demo_webhook: None, extra: args }).await;
    let _ = std::fs::remove_file(&path);
    server
}

/// The last path segment naming a call in a documented notification's resource.
fn documented_call_id(ex: &Example) -> String {
    let (_, first) = ex.notes.first().expect("a notification");
    let resource = first["resourceUrl"].as_str().or(first["resource"].as_str()).expect("resource");
    resource.split('/').nth(3).expect("call id").to_owned()
}

/// An incoming call from `from` to `to` with the given id, answered by the bot (on the path dialect of
/// `prefix`); its notifications are consumed.
async fn answered_as(server: &Server, bot: &mut Bot, token: &str, prefix: &str, from: &str, to: &str, id: &str) {
    let (status, body) = server.sim(Method::POST, "/calls", Some(json!({"from": from, "to": to, "callId": id}))).await;
    assert_eq!(status, 201, "{body}");
    bot.next().await;
    let (status, body) = server.graph(Method::POST, &format!("{prefix}/{id}/answer"), token, Some(answer_body(&bot.callback(id)))).await;
    assert_eq!(status, 202, "{body}");
    bot.take(2).await;
}

/// Collects the notifications of call `id` until it has `n`, setting aside those of other calls.
async fn notes_of(bot: &mut Bot, id: &str, n: usize, others: &mut Vec<Value>) -> Vec<Value> {
    let mut mine = Vec::new();
    while mine.len() < n {
        let (_, item) = bot.next().await;
        let resource = item["resourceUrl"].as_str().or(item["resource"].as_str()).unwrap_or_default();
        if resource.split('/').nth(3) == Some(id) { mine.push(item) } else { others.push(item) }
    }
    mine
}

/// What the bot must receive, from what the page shows, with each of Switchboard's differences applied
/// and named. `consultation` is the replaced call's id, if the transfer was consultative.
fn expected(ex: &Example, outcome: Outcome, consultation: Option<&str>, client_context: Option<&str>) -> Vec<Value> {
    let mut seq = Vec::new();
    for (heading, note) in &ex.notes {
        let h = heading.to_lowercase();
        let failed = h.contains("failed");
        if failed != (outcome == Outcome::Failed) {
            continue;
        }
        let mut note = note.clone();
        let data = &mut note["resourceData"];
        // The failure examples spell it `subCode`, the schema and the success examples `subcode`
        // (the 2018 operations keep their `subCode`).
        let is_call = data["@odata.type"] == "#microsoft.graph.call";
        if let Some(info) = data.get_mut("resultInfo").and_then(Value::as_object_mut).filter(|_| is_call)
            && let Some(sub) = info.remove("subCode")
        {
            info.insert("subcode".into(), sub);
        }
        if failed {
            // The pages show a placeholder message; Switchboard says what failed (checked in transfer.rs).
            data["resultInfo"]["message"] = json!("<message>");
            // v1.0 example 1 shows `replacesContext` on a transfer without a consultation call, and
            // example 4 omits it on one with: Switchboard sends it exactly when the transfer was consultative.
            match consultation {
                Some(c) => data["replacesContext"] = json!(c),
                None => {
                    data.as_object_mut().map(|d| d.remove("replacesContext"));
                }
            }
        }
        // The 2018 page's example 1 sends clientContext "clientContext-value" but its notifications show
        // another one; Switchboard echoes what the bot sent.
        if let (Some(cc), Some(_)) = (client_context, data.get("clientContext")) {
            data["clientContext"] = json!(cc);
        }
        let accepted = h.contains("accepted") && data["@odata.type"] == "#microsoft.graph.call";
        seq.push(note);
        if accepted {
            // "Transfer accepted may happen after or before media state audio inactive": Switchboard
            // always sends the media-state change right after it.
            let mut media = seq.last().cloned().unwrap_or_default();
            media["resourceData"]["mediaState"] = json!({"@odata.type": "#microsoft.graph.callMediaState", "audio": "inactive"});
            seq.push(media);
        }
    }
    seq
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Completed,
    Failed,
}

/// Makes what cannot be the same comparable: the 2018 format's operation ids and etags, and the
/// failure message.
fn comparable(mut item: Value) -> Value {
    if let Some(r) = item["resource"].as_str().map(str::to_owned)
        && let Some(at) = r.find("/operations/")
    {
        let op = r[at + "/operations/".len()..].to_owned();
        item = replace_in_strings(item, &op, "{opId}");
    }
    let data = &mut item["resourceData"];
    if data.get("@odata.etag").is_some() {
        data["@odata.etag"] = json!("W/\"{etag}\"");
    }
    if data["state"] == "established" && data["resultInfo"].get("message").is_some() {
        data["resultInfo"]["message"] = json!("<message>");
    }
    item
}

/// Runs one documented example end to end, to its documented success and (if the page shows one) its
/// documented failure, and compares every notification of the transferred call with the page's.
async fn check(page: &str, number: usize) {
    let all = examples(page);
    let ex = all.get(number - 1).unwrap_or_else(|| panic!("{page} has no example {number}: {all:#?}"));
    let mut bot = Bot::start().await;
    // The consultative failure needs the transfer still in progress when the transferee acts, 5 s
    // after it started: the transfer deadline (the ring timeout) must be well beyond that.
    let server = seed_server_with(&bot, long_ring_timeout()).await;
    let legacy = ex.notes.iter().any(|(_, n)| n.get("resource").is_some());
    // Answer, get and the rest on the page's own version and path: ".../calls/{id}/transfer" → ".../calls".
    let prefix = ex.path.find("/calls/").map(|at| ex.path[..at + "/calls".len()].to_owned()).expect("a calls path");
    let (app, bot_address) = if legacy { (LEGACY_BOT, LEGACY_PHONE) } else { (DEMO_BOT, DEMO_BOT) };
    let token = server.token(app, SEED_TENANT).await;
    let target = &ex.body["transferTarget"]["identity"];
    let target_key = target["user"]["id"].as_str().or(target["phone"]["id"].as_str()).expect("target").to_owned();
    // A PSTN target needs a call on an application instance (the pages' step 1–4).
    let bot_address = if target.get("phone").is_some() { RECEPTION } else { bot_address };
    let id = documented_call_id(ex);
    let mut body = ex.body.clone();
    let replaces = body["transferTarget"]["replacesCallId"].as_str().map(str::to_owned);
    let client_context = body["clientContext"].as_str().map(str::to_owned);

    answered_as(&server, &mut bot, &token, &prefix, ALEX, bot_address, &id).await;
    let path = ex.path.replace("{id}", &id);
    let consultation = match replaces.as_deref() {
        // The pages' blind examples 1 carry the template's placeholder: an unknown replacesCallId is
        // refused, as for any other unknown call; without it the example is the blind transfer it documents.
        Some("replacesCallId-value") => {
            let (status, err) = server.graph(Method::POST, &path, &token, Some(body.clone())).await;
            assert_eq!(status, 409, "{err}");
            let message = err["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("'replacesCallId-value' is not a live call of this application"), "{message}");
            body["transferTarget"].as_object_mut().map(|t| t.remove("replacesCallId"));
            None
        }
        Some(b) => {
            answered_as(&server, &mut bot, &token, &prefix, &target_key, bot_address, b).await;
            Some(b.to_owned())
        }
        None => None,
    };

    let (status, resp) = server.graph(Method::POST, &path, &token, Some(body.clone())).await;
    assert_eq!(status, 202, "{}: {resp}", ex.title);
    let want = expected(ex, Outcome::Completed, consultation.as_deref(), client_context.as_deref());
    let mut others = Vec::new();
    let got: Vec<Value> = notes_of(&mut bot, &id, want.len(), &mut others).await.into_iter().map(comparable).collect();
    let want: Vec<Value> = want.into_iter().map(comparable).collect();
    assert_eq!(got, want, "{page}, {}: the transferred call's notifications", ex.title);
    if let Some(b) = &consultation {
        // Not on the pages: the consultation call ends too, handed over (README, "Transfer a call").
        let ended = match others.pop() {
            Some(n) => n,
            None => notes_of(&mut bot, b, 1, &mut Vec::new()).await.remove(0),
        };
        assert!(others.is_empty(), "{others:?}");
        assert_eq!(ended["changeType"], "deleted", "{ended}");
        assert_eq!(ended["resourceData"]["state"], "terminated", "{ended}");
        assert_eq!(ended["resourceData"]["terminationReason"], "AppTransferred", "{ended}");
    }
    bot.expect_silence(Duration::from_millis(200)).await;

    // The documented failure, on the same ids once more: a busy target (blind), or a consultation call
    // that ends while the transferee acts on the transfer (consultative).
    if !ex.notes.iter().any(|(h, _)| h.to_lowercase().contains("failed")) {
        return;
    }
    answered_as(&server, &mut bot, &token, &prefix, ALEX, bot_address, &id).await;
    match &consultation {
        None => {
            let (status, _) = server.sim(Method::PUT, &format!("/parties/{target_key}/behaviour"), Some(json!({"kind": "busy"}))).await;
            assert_eq!(status, 200);
        }
        Some(b) => {
            answered_as(&server, &mut bot, &token, &prefix, &target_key, bot_address, b).await;
            // The consultation call must end before the transferee acts on the transfer, whatever the load.
            let slow = json!({"kind": "answer", "after_ms": 0, "transfer_delay_ms": 5000});
            assert_eq!(server.sim(Method::PUT, &format!("/parties/{ALEX}/behaviour"), Some(slow)).await.0, 200);
        }
    }
    let (status, resp) = server.graph(Method::POST, &path, &token, Some(body)).await;
    assert_eq!(status, 202, "{}: {resp}", ex.title);
    if let Some(b) = &consultation {
        assert_eq!(server.sim(Method::POST, &format!("/calls/{b}/hangup"), None).await.0, 204);
    }
    let want: Vec<Value> = expected(ex, Outcome::Completed, None, None)
        .into_iter()
        .take(1)
        .chain(expected(ex, Outcome::Failed, consultation.as_deref(), None))
        .map(comparable)
        .collect();
    let got: Vec<Value> = notes_of(&mut bot, &id, want.len(), &mut Vec::new()).await.into_iter().map(comparable).collect();
    assert_eq!(got, want, "{page}, {}: the failed transfer's notifications", ex.title);
    let (_, call) = server.graph(Method::GET, &format!("{prefix}/{id}"), &token, None).await;
    assert_eq!(call["state"], "established", "after a failed transfer the call stays up");
}

#[test]
fn every_seed_page_has_the_examples_these_tests_name() {
    let titles = |page| examples(page).into_iter().map(|e| (e.title, e.notes.len(), e.body.is_object())).collect::<Vec<_>>();
    let four = |p| {
        let t = titles(p);
        assert_eq!(t.len(), 4, "{p}: {t:?}");
        assert!(t.iter().all(|(_, n, body)| *n == 4 && *body), "{p}: {t:?}");
    };
    four("en-v1.0-2021.md");
    four("en-beta-2021.md");
    let t = titles("en-beta-2018.md");
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t.iter().all(|(_, n, body)| *n == 3 && *body), "{t:?}");
}

#[tokio::test]
async fn v1_2021_example_1_call_transfer() {
    check("en-v1.0-2021.md", 1).await;
}

#[tokio::test]
async fn v1_2021_example_2_consultative_transfer() {
    check("en-v1.0-2021.md", 2).await;
}

#[tokio::test]
async fn v1_2021_example_3_call_transfer_to_pstn_number() {
    check("en-v1.0-2021.md", 3).await;
}

#[tokio::test]
async fn v1_2021_example_4_consultative_transfer_to_pstn_number() {
    check("en-v1.0-2021.md", 4).await;
}

#[tokio::test]
async fn beta_2021_example_1_call_transfer() {
    check("en-beta-2021.md", 1).await;
}

#[tokio::test]
async fn beta_2021_example_2_consultative_transfer() {
    check("en-beta-2021.md", 2).await;
}

#[tokio::test]
async fn beta_2021_example_3_call_transfer_to_pstn_number() {
    check("en-beta-2021.md", 3).await;
}

#[tokio::test]
async fn beta_2021_example_4_consultative_transfer_to_pstn_number() {
    check("en-beta-2021.md", 4).await;
}

#[tokio::test]
async fn beta_2018_transfer_call_directly() {
    check("en-beta-2018.md", 1).await;
}

#[tokio::test]
async fn beta_2018_consultative_transfer() {
    check("en-beta-2018.md", 2).await;
}
