//! linphonec, a real SIP phone that knows Replaces (Debian's `linphone-cli`; baresip 1.0 does not),
//! against Switchboard: an attended (consultative) transfer end to end between real user agents.
//! Heidi's linphone calls the bot; the bot calls Alex's linphone (the consultation call) and transfers
//! Heidi to it with `replacesCallId`: Heidi's phone is held, gets REFER with Replaces, INVITEs Alex's
//! phone with Replaces, and Alex's phone swaps the bot's call for Heidi's.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::sip::free_sip_port;

/// One linphonec, driven through its command line on stdin; what it prints goes to a file.
struct Linphone {
    child: Child,
    stdin: ChildStdin,
    dir: std::path::PathBuf,
}

impl Linphone {
    fn start(user: &str, sip_port: u16, auto_answer: bool) -> Linphone {
        let dir = std::env::temp_dir().join(format!("switchboard-linphone-{user}-{}", uuid::Uuid::new_v4()));
        // linphonec keeps its call history under $HOME; without the folder it only complains.
        std::fs::create_dir_all(dir.join(".local/share/linphone")).unwrap();
        let (port, rtp) = (free_sip_port(), free_sip_port());
        let rc = format!(
            "[sip]\nsip_port={port}\nsip_tcp_port=0\nsip_tls_port=0\ndefault_proxy=0\nregister_only_when_network_is_up=0\n\
             [proxy_0]\nreg_proxy=<sip:127.0.0.1:{sip_port}>\nreg_route=<sip:127.0.0.1:{sip_port};lr>\n\
             reg_identity=sip:{user}@127.0.0.1\nreg_expires=3600\nreg_sendregister=1\n\
             [auth_info_0]\nusername={user}\npasswd=switchboard-demo-sip\n[rtp]\naudio_rtp_port={rtp}\n[sound]\necho_cancellation=0\n"
        );
        std::fs::write(dir.join("rc"), rc).unwrap();
        let out = std::fs::File::create(dir.join("out")).unwrap();
        let mut args = vec!["-c".to_owned(), dir.join("rc").display().to_string(), "-d".into(), "0".into()];
        if auto_answer {
            args.push("-a".into());
        }
        let mut child = Command::new("linphonec")
            .args(&args)
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("linphonec (Debian's linphone-cli; scripts/test.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        Linphone { child, stdin, dir }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("out")).unwrap_or_default()
    }

    /// Waits until what the phone printed contains `text`.
    async fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.output().contains(text) {
            assert!(Instant::now() < deadline, "linphonec never printed {text:?}:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn linphone_phones_are_transferred_consultatively_with_replaces() {
    let mut bot = Bot::start().await;
    let (server, port) = crate::sip::sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let mut heidi = Linphone::start("heidi", port, false);
    let mut alex = Linphone::start("alex", port, true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server.metrics().await, "switchboard_sip_registered") < 2 {
        assert!(Instant::now() < deadline, "the linphones never registered:\n{}\n{}", heidi.output(), alex.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Heidi calls the reception; the bot answers.
    heidi.command("call sip:14255550100@127.0.0.1");
    let (_, created) = bot.next().await;
    let a = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&a)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{a}/answer"), &token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &a), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &a), established_note());

    // The bot consults Alex, whose phone answers by itself.
    let (status, b) =
        server.graph(reqwest::Method::POST, "/v1.0/communications/calls", &token, Some(call_to_user(&bot.callback("consult"), ALEX))).await;
    assert_eq!(status, 201, "{b}");
    let b = b["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &b), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &b), established_note());

    // The attended transfer: Heidi's phone replaces the bot's call with Alex.
    let body = json!({"transferTarget": {"identity": {"user": {"id": ALEX}}, "replacesCallId": b}});
    assert_eq!(crate::transfer::transfer(&server, &token, &a, body).await.0, 202);
    let (for_a, for_b) = crate::transfer::by_call(&mut bot, &a, 4, &b, 1).await;
    assert_eq!(for_a.first(), Some(&state_note("updated", "transferring")), "{for_a:?}");
    assert_eq!(for_a.last(), Some(&crate::transfer::completed_consultative()), "{for_a:?}");
    let mut replaced = terminated_note(200, 7015, &format!("The call was handed over to call {a} by a consultative transfer."));
    replaced["resourceData"]["terminationReason"] = json!("AppTransferred");
    assert_eq!(for_b, [replaced]);

    // Heidi and Alex now talk to each other, and to nobody else.
    heidi.wait_for("Call 2 with <sip:alex@127.0.0.1").await;
    heidi.wait_for("Call 1 with sip:14255550100@127.0.0.1 ended").await;
    alex.wait_for("Call 2 with sip:heidi@127.0.0.1 connected.").await;
    alex.wait_for("Call 1 with \"Demo Bot\" <sip:cccccccc-0000-4000-8000-000000000003@127.0.0.1> ended").await;
    heidi.command("calls");
    alex.command("calls");
    heidi.wait_for("Call states").await;
    alex.wait_for("Call states").await;
    let (h, a_out) = (heidi.output(), alex.output());
    let table = |out: &str| out.rsplit("Call states").next().unwrap_or_default().to_owned();
    assert!(table(&h).contains("sip:alex@127.0.0.1") && table(&h).contains("StreamsRunning"), "Heidi's calls:\n{h}");
    assert!(!table(&h).contains("14255550100"), "Heidi's call with the bot is over:\n{h}");
    assert!(table(&a_out).contains("sip:heidi@127.0.0.1") && table(&a_out).contains("StreamsRunning"), "Alex's calls:\n{a_out}");
    assert!(!table(&a_out).contains("cccccccc"), "Alex's call with the bot is over:\n{a_out}");
    bot.expect_silence(Duration::from_millis(300)).await;
}
