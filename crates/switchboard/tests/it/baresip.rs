//! baresip, a real SIP phone (Debian's `baresip`), against Switchboard: two phones register, one calls
//! the reception's number, the bot answers through Graph and transfers it blind to the other, and the
//! two phones end up in a call with each other.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// One headless baresip: a SIP account on Switchboard, answering automatically, controlled over
/// ctrl_tcp (netstring-framed JSON).
struct Phone {
    child: Child,
    ctrl: u16,
    dir: std::path::PathBuf,
}

/// A port free for SIP over UDP and TCP whose next port is free too (baresip takes it for TLS).
fn free_pair() -> u16 {
    let free = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let p = free_port();
        if p < u16::MAX && free(p) && free(p + 1) {
            return p;
        }
    }
}

impl Phone {
    fn start(user: &str, sip_port: u16) -> Phone {
        Self::start_with(user, sip_port, "auto")
    }

    /// `answermode`: `auto` answers at once, `manual` rings until told. The ports are picked free, but
    /// another test may take one before baresip binds it: then baresip exits, and starts again on others.
    fn start_with(user: &str, sip_port: u16, answermode: &str) -> Phone {
        for _ in 0..5 {
            let mut phone = Self::try_start(user, sip_port, answermode);
            std::thread::sleep(Duration::from_millis(500));
            let exited = phone.child.try_wait().ok().flatten().is_some();
            if !exited && !phone.log().contains("Address already in use") {
                return phone;
            }
            let _ = phone.child.kill();
        }
        panic!("baresip could not start for {user} on five sets of free ports");
    }

    fn try_start(user: &str, sip_port: u16, answermode: &str) -> Phone {
        let dir = std::env::temp_dir().join(format!("switchboard-baresip-{user}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (listen, ctrl) = (free_pair(), free_port());
        let rtp = 30_000 + (listen % 1000) * 20;
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{listen}\ncall_local_timeout 120\ncall_max_calls 4\n\
             audio_player aubridge,nil_{user}\naudio_source aubridge,src_{user}\naudio_alert aubridge,nil_{user}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aubridge.so\nmodule_app account.so\nmodule_app menu.so\n\
             module ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\nrtp_ports {rtp}-{}\nnet_interface 127.0.0.1\n",
            rtp + 19
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let account = format!(
            "<sip:{user}@127.0.0.1>;auth_user={user};auth_pass=switchboard-demo-sip;outbound=\"sip:127.0.0.1:{sip_port}\";regint=600;answermode={answermode};audio_codecs=PCMU,PCMA\n"
        );
        std::fs::write(dir.join("accounts"), account).unwrap();
        let child = Command::new("baresip")
            .args(["-4", "-n", "127.0.0.1", "-f"])
            .arg(&dir)
            .args(["-t", "60"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("baresip.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip (Debian's baresip; scripts/test.sh installs it)");
        Phone { child, ctrl, dir }
    }

    /// Sends a ctrl_tcp command; returns every message received within `wait` (the response and events).
    fn command(&self, command: &str, params: &str, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match TcpStream::connect(("127.0.0.1", self.ctrl)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("baresip's ctrl_tcp on {}: {e}\n{}", self.ctrl, self.log()),
            }
        };
        let msg = json!({"command": command, "params": params, "token": "t"}).to_string();
        stream.write_all(format!("{}:{msg},", msg.len()).as_bytes()).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (mut buf, mut out, end) = (Vec::new(), Vec::new(), Instant::now() + wait);
        while Instant::now() < end {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            while let Some(colon) = buf.iter().position(|b| *b == b':') {
                let Some(len) = std::str::from_utf8(&buf[..colon]).ok().and_then(|n| n.parse::<usize>().ok()) else { break };
                if buf.len() < colon + 1 + len + 1 {
                    break;
                }
                let body: Vec<u8> = buf[colon + 1..colon + 1 + len].to_vec();
                buf.drain(..colon + 1 + len + 1);
                if let Ok(v) = serde_json::from_slice(&body) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The peers of this phone's calls (baresip's `listcalls`).
    fn calls(&self) -> String {
        self.command("listcalls", "", Duration::from_millis(500))
            .into_iter()
            .find(|v| v["response"] == true)
            .and_then(|v| v["data"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A phone's calls, asked off the test's runtime (the bot's webhook runs on it).
async fn calls_of(phone: &Arc<Phone>) -> String {
    let phone = Arc::clone(phone);
    tokio::task::spawn_blocking(move || phone.calls()).await.unwrap()
}

/// Switchboard with SIP, Heidi's phone and `other`'s (answering as `mode` says), both registered.
async fn two_phones(bot: &Bot, other: &str, mode: &str) -> (Server, String, u16, Arc<Phone>, Arc<Phone>) {
    let (server, sip_port) = crate::sip::sip_server(bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (heidi, other) = (Arc::new(Phone::start("heidi", sip_port)), Arc::new(Phone::start_with(other, sip_port, mode)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server.metrics().await.lines().any(|l| l == "switchboard_sip_registered 2") {
        assert!(Instant::now() < deadline, "the phones did not register:\n{}\n{}", heidi.log(), other.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (server, token, sip_port, heidi, other)
}

/// Heidi dials the reception's number; the bot answers. Returns the Graph call id.
async fn heidi_calls_the_bot(server: &Server, bot: &mut Bot, token: &str, heidi: &Arc<Phone>, sip_port: u16) -> String {
    let phone = Arc::clone(heidi);
    tokio::task::spawn_blocking(move || {
        phone.command("dial", &format!("sip:14255550100@127.0.0.1:{sip_port}"), Duration::from_millis(300))
    });
    let (_, created) = bot.next().await;
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    assert_eq!(created["resourceData"]["source"]["identity"]["user"]["id"], HEIDI, "{created}");
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note(), "heidi's phone log:\n{}", heidi.log());
    id
}

#[tokio::test]
async fn a_baresip_phone_calls_the_bot_and_is_transferred_to_another_baresip() {
    let mut bot = Bot::start().await;
    let (server, token, sip_port, heidi, alex) = two_phones(&bot, "alex", "auto").await;
    let id = heidi_calls_the_bot(&server, &mut bot, &token, &heidi, sip_port).await;

    // The bot transfers Heidi to Alex: Heidi's phone follows the REFER and Alex's phone answers.
    let body = json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    let accepted = redact(bot.next().await.1, &id);
    assert_eq!(accepted, state_note("updated", "transferAccepted"), "heidi's phone:\n{}\nalex's phone:\n{}", heidi.log(), alex.log());
    assert_eq!(redact(bot.next().await.1, &id), crate::transfer::accepted_media_note());
    assert_eq!(redact(bot.next().await.1, &id), crate::transfer::completed_blind());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (h, a) = (calls_of(&heidi).await, calls_of(&alex).await);
        if h.contains("alex") && a.contains("heidi") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the phones are not in a call together: heidi {h:?}, alex {a:?}\n{}\n{}",
            heidi.log(),
            alex.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_declined_transfer_target_brings_the_baresip_call_back_to_the_bot() {
    let mut bot = Bot::start().await;
    let (server, token, sip_port, heidi, dana) = two_phones(&bot, "dana", "manual").await;
    let id = heidi_calls_the_bot(&server, &mut bot, &token, &heidi, sip_port).await;

    let body = json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    // Dana's phone rings; she declines.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !calls_of(&dana).await.contains("heidi") {
        assert!(Instant::now() < deadline, "Dana's phone never rang:\n{}\n{}", heidi.log(), dana.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let phone = Arc::clone(&dana);
    tokio::task::spawn_blocking(move || phone.command("hangup", "", Duration::from_millis(200))).await.unwrap();
    let back = redact(bot.next().await.1, &id);
    assert_eq!(
        (
            back["resourceData"]["state"].as_str(),
            back["resourceData"]["resultInfo"]["code"].as_i64(),
            back["resourceData"]["resultInfo"]["subcode"].as_i64()
        ),
        (Some("established"), Some(500), Some(7000)),
        "{back}\n{}",
        heidi.log()
    );
    // Heidi is still with the bot, which hangs up: her phone's call ends.
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    bot.take(2).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while calls_of(&heidi).await.contains("14255550100") {
        assert!(Instant::now() < deadline, "Heidi's phone still has a call:\n{}", heidi.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
