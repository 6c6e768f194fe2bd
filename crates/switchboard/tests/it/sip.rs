//! SIP (`--sip-listen`): real SIPp user agents register with Digest over UDP and TCP, through lost
//! packets, and hostile datagrams get a 400 naming the problem or are dropped, never a crash.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// A port free for both UDP and TCP on loopback, as far as one can tell.
pub(crate) fn free_sip_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Switchboard serving SIP on a free port, its webhook at `bot`; returns it and the SIP port.
pub(crate) async fn sip_server(bot: &Bot) -> (Server, u16) {
    let port = free_sip_port();
    let extra = vec!["--sip-listen".into(), format!("127.0.0.1:{port}")];
    (Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await, port)
}

/// Runs a scenario of `tests/sipp` against `target`; returns SIPp's exit code and its screen.
fn sipp(scenario: &str, target: &str, args: &[&str]) -> (i32, String) {
    sipp_on(scenario, 0, Some(target), args)
}

/// Runs a scenario of `tests/sipp` on local `port` (0: any), against `target` or, without one, as a
/// server that waits for calls.
fn sipp_on(scenario: &str, port: u16, target: Option<&str>, args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("switchboard-sipp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/").to_owned() + scenario;
    let mut child = Command::new("sipp")
        .current_dir(&dir)
        .args(["-sf", &file, "-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin", "-timeout", "30s", "-trace_err"])
        .args(args)
        .args(target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp (Debian's sip-tester; scripts/test.sh installs it)");
    // SIPp's own -timeout does not always fire while it waits for a message that never comes (a
    // failing test): killed at 40 s, so that the test fails instead of hanging the suite.
    let mut stdout = child.stdout.take().expect("sipp's stdout");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        bytes
    });
    let started = std::time::Instant::now();
    while child.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let status = child.wait().expect("sipp's exit");
    let mut screen = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        screen.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    let _ = std::fs::remove_dir_all(&dir);
    (status.code().unwrap_or(-1), screen)
}

#[tokio::test]
async fn phones_register_with_digest_over_udp_and_tcp_through_lost_packets() {
    let bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let target = format!("127.0.0.1:{port}");
    let demo = "switchboard-demo-sip";
    let (t1, t2) = (target.clone(), target.clone());
    let runs = tokio::task::spawn_blocking(move || {
        [
            ("heidi over UDP", sipp("register.xml", &t1, &["-s", "heidi", "-au", "heidi", "-ap", demo, "-m", "1", "-t", "u1"])),
            (
                // SIPp loses 20 % each way, so an attempt gets through about two times in three; SIPp
                // gives a transaction 32 s, about ten attempts. (At 30 % and SIPp's default of five
                // retransmissions, a run of 20 transactions failed about one time in three.)
                "alex over UDP, 20 % lost",
                sipp(
                    "register.xml",
                    &t1,
                    &[
                        "-s",
                        "alex",
                        "-au",
                        "alex",
                        "-ap",
                        demo,
                        "-m",
                        "10",
                        "-r",
                        "10",
                        "-lost",
                        "20",
                        "-max_non_invite_retrans",
                        "20",
                        "-t",
                        "u1",
                    ],
                ),
            ),
            ("dana over TCP", sipp("register.xml", &t2, &["-s", "dana", "-au", "dana", "-ap", demo, "-m", "3", "-t", "t1"])),
            (
                "a wrong password",
                sipp("register_refused.xml", &t2, &["-s", "heidi", "-au", "heidi", "-ap", "guess", "-m", "1", "-t", "u1"]),
            ),
            ("OPTIONS", sipp("options.xml", &t2, &["-m", "1", "-t", "u1"])),
        ]
    })
    .await
    .unwrap();
    for (what, (code, screen)) in &runs {
        assert_eq!(*code, 0, "{what}: SIPp failed:\n{screen}");
    }
    let page = server.metrics().await;
    assert_eq!(metric(&page, "switchboard_sip_registered"), 3, "heidi, alex and dana, one contact each:\n{page}");
    assert_eq!(metric(&page, "switchboard_sip_responses_total{code=\"403\"}"), 1);
    assert!(metric(&page, "switchboard_sip_retransmissions_total") > 0, "lost answers were sent again:\n{page}");
}

#[tokio::test]
async fn hostile_datagrams_get_a_named_400_or_nothing() {
    let bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = socket.local_addr().unwrap();
    let target = format!("127.0.0.1:{port}");
    let headers = format!("Via: SIP/2.0/UDP {me};branch=z9hG4bKh1;rport\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:y@h>\r\nCall-ID: h1\r\n");
    let cases = [
        (
            format!("OPTIONS sip:h SIP/2.0\r\n{headers}CSeq: many OPTIONS\r\n\r\n"),
            Some("SIP/2.0 400 Bad Request (CSeq 'many OPTIONS': the number is not below 2^31)"),
        ),
        (
            format!("OPTIONS sip:h SIP/9.9\r\n{headers}CSeq: 1 OPTIONS\r\n\r\n"),
            Some("SIP/2.0 400 Bad Request (version 'SIP/9.9' is not SIP/2.0)"),
        ),
        (
            format!("OPTIONS sip:h SIP/2.0\r\n{headers}CSeq: 1 OPTIONS\r\nContent-Length: 99\r\n\r\n"),
            Some("SIP/2.0 400 Bad Request (Content-Length says 99 bytes, but the body has 0)"),
        ),
        ("\u{0}\u{1}garbage".to_owned(), None),
        ("SIP/2.0 200 OK\r\n\r\n".to_owned(), None),
    ];
    let mut buf = vec![0u8; 65_535];
    for (datagram, want) in &cases {
        socket.send_to(datagram.as_bytes(), &target).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await;
        match (got, want) {
            (Ok(Ok((n, _))), Some(line)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert_eq!(text.lines().next(), Some(*line), "{text}");
            }
            (Err(_), None) => {}
            (got, want) => panic!("{datagram:?}: got {got:?}, want {want:?}"),
        }
    }
    // Still serving, and the drop was counted.
    let t = target.clone();
    let (code, screen) = tokio::task::spawn_blocking(move || sipp("options.xml", &t, &["-m", "1", "-t", "u1"])).await.unwrap();
    assert_eq!(code, 0, "{screen}");
    assert!(metric(&server.metrics().await, "switchboard_sip_dropped_total") >= 1);
}

/// Heidi's phone calls the reception's number as SIPp's `scenario` says, over UDP.
fn phone_call(scenario: &'static str, port: u16) -> tokio::task::JoinHandle<(i32, String)> {
    phone_call_over(scenario, port, "u1")
}

/// The same over SIPp's `transport` (`u1` UDP, `t1` TCP).
fn phone_call_over(scenario: &'static str, port: u16, transport: &'static str) -> tokio::task::JoinHandle<(i32, String)> {
    heidi_calls(scenario, port, &["-t", transport])
}

/// Heidi's phone calls the reception's number as `scenario` says, with SIPp's `extra` arguments.
fn heidi_calls(scenario: &'static str, port: u16, extra: &[&str]) -> tokio::task::JoinHandle<(i32, String)> {
    let target = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = ["-s", "14255550100", "-key", "caller", "heidi", "-au", "heidi", "-ap", "switchboard-demo-sip", "-m", "1"]
        .map(str::to_owned)
        .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || sipp(scenario, &target, &args.iter().map(String::as_str).collect::<Vec<_>>()))
}

#[tokio::test]
async fn a_phone_calls_the_bot_which_answers_and_hangs_up_or_rejects() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Heidi's phone calls the reception's number; the bot answers; Heidi hangs up.
    let (id, created, phone) = answered_phone_call(&server, &mut bot, &token, "phone_hangs_up.xml", port).await;
    assert_eq!((created["changeType"].as_str(), created["resourceData"]["state"].as_str()), (Some("created"), Some("incoming")));
    assert_eq!(created["resourceData"]["source"]["identity"]["user"]["id"], HEIDI, "the phone's user is the caller: {created}");
    assert_eq!(
        created["resourceData"]["targets"][0]["identity"]["applicationInstance"]["id"], RECEPTION,
        "the number is the reception's: {created}"
    );
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."), "the phone's BYE");
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone's side:\n{screen}");

    // The bot hangs up: Switchboard sends BYE.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "bot_hangs_up.xml", port).await;
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone got a BYE:\n{screen}");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "terminating"));
    assert_eq!(bot.next().await.1["changeType"], "deleted");

    // Over TCP: everything of the call (our 200, and our BYE) goes back on the phone's connection.
    let phone = phone_call_over("bot_hangs_up.xml", port, "t1");
    let (_, created) = bot.next().await;
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone got our BYE over TCP:\n{screen}");
    bot.take(2).await;

    // The bot rejects as busy: the phone hears 486.
    let phone = phone_call("bot_rejects.xml", port);
    let (_, created) = bot.next().await;
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let body = serde_json::json!({"reason": "busy"});
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/reject"), &token, Some(body)).await.0, 202);
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone got 486:\n{screen}");
    assert_eq!(bot.next().await.1["changeType"], "deleted");
    bot.expect_silence(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_sip_call_whose_dialog_died_with_the_server_ends_after_the_restart() {
    let mut bot = Bot::start().await;
    let (mut server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_stays.xml", port).await;
    assert_eq!(phone.await.unwrap().0, 0);
    server.settled().await;
    server.kill9();
    server.restart().await;
    // Nothing of the dialog was stored: the call ends cleanly, as if the phone had hung up.
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    bot.expect_silence(std::time::Duration::from_millis(300)).await;
}

/// Registers `user`'s phone (SIPp, once) so that it can be a transfer target.
async fn register(user: &'static str, port: u16) {
    let target = format!("127.0.0.1:{port}");
    let (code, screen) = tokio::task::spawn_blocking(move || {
        sipp("register.xml", &target, &["-s", user, "-au", user, "-ap", "switchboard-demo-sip", "-m", "1", "-t", "u1"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{user} registers:\n{screen}");
}

/// A phone call from Heidi through `scenario`, answered by the bot; returns the Graph call id.
async fn answered_phone_call(
    server: &Server,
    bot: &mut Bot,
    token: &str,
    scenario: &'static str,
    port: u16,
) -> (String, serde_json::Value, tokio::task::JoinHandle<(i32, String)>) {
    let phone = phone_call(scenario, port);
    let (_, created) = bot.next().await;
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    (id, created, phone)
}

#[tokio::test]
async fn the_bot_transfers_a_phone_blind_with_refer_and_the_notify_decides() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    register("alex", port).await;
    let to_alex = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}});

    // The phone takes the REFER and reports 200: transferred, and Switchboard leaves with BYE.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_transferred.xml", port).await;
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to_alex.clone()).await.0, 202);
    crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone's side (REFER to Alex's contact, NOTIFYs, BYE):\n{screen}");

    // The target is busy: the call stays with the bot, established, with 500/7000; then the phone hangs up.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_transfer_busy.xml", port).await;
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to_alex.clone()).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    let mut back = None;
    while back.is_none() {
        let (_, item) = bot.next().await;
        if item["resourceData"]["state"] == "established" {
            back = Some(item);
        }
    }
    let back = back.unwrap();
    assert_eq!(
        (back["resourceData"]["resultInfo"]["code"].as_i64(), back["resourceData"]["resultInfo"]["subcode"].as_i64()),
        (Some(500), Some(7000)),
        "{back}"
    );
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");

    // A transferee that takes the REFER and never reports, and one that refuses REFER: the transfer
    // fails (at the deadline, or at once), the call stays with the bot, and the bot hangs up.
    for (scenario, why) in [("phone_never_notifies.xml", "the transfer's deadline"), ("phone_refuses_refer.xml", "405 to the REFER")] {
        let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, scenario, port).await;
        assert_eq!(crate::transfer::transfer(&server, &token, &id, to_alex.clone()).await.0, 202);
        expect_transfer_failed(&mut bot, &id, why).await;
        bot_hangs_up(&server, &mut bot, &token, &id).await;
        let (code, screen) = phone.await.unwrap();
        assert_eq!(code, 0, "{why}: the phone gets a BYE:\n{screen}");
    }

    // A target without a registered phone rings on the sim: Declining Dana declines; the call stays.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_hangs_up.xml", port).await;
    let to_dana = serde_json::json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to_dana).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    let failed = bot.next().await.1;
    assert_eq!(
        (failed["resourceData"]["state"].as_str(), failed["resourceData"]["resultInfo"]["subcode"].as_i64()),
        (Some("established"), Some(7000)),
        "{failed}"
    );
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");
    bot.take(1).await;
}

/// The transfer in hand failed: `transferring`, then `established` again with 500/7000.
async fn expect_transfer_failed(bot: &mut Bot, id: &str, what: &str) {
    assert_eq!(redact(bot.next().await.1, id), state_note("updated", "transferring"), "{what}");
    let back = bot.next().await.1;
    assert_eq!(
        (back["resourceData"]["state"].as_str(), back["resourceData"]["resultInfo"]["subcode"].as_i64()),
        (Some("established"), Some(7000)),
        "{what}: {back}"
    );
}

/// The bot hangs up: `terminating`, then the call is deleted.
async fn bot_hangs_up(server: &Server, bot: &mut Bot, token: &str, id: &str) {
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), token, None).await.0, 204);
    let gone = bot.take(2).await;
    assert_eq!(redact(gone[0].clone(), id), state_note("updated", "terminating"), "{gone:?}");
    assert_eq!(gone[1]["changeType"], "deleted", "{gone:?}");
}

/// A phone (SIPp, `scenario`) waiting for one call at `port`, ready once it has bound the port.
async fn phone_waiting(scenario: &'static str, port: u16) -> tokio::task::JoinHandle<(i32, String)> {
    let phone = tokio::task::spawn_blocking(move || sipp_on(scenario, port, None, &["-m", "1"]));
    for _ in 0..100 {
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return phone;
        }
        if phone.is_finished() {
            let (code, screen) = phone.await.unwrap();
            panic!("SIPp ({scenario}) ended with {code} before it bound port {port}:\n{screen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("SIPp did not bind port {port}");
}

/// A phone (SIPp, `scenario`) waiting for one call on a free port, and the port. Another test may take
/// a port between its pick and SIPp's bind: then another port.
async fn phone_anywhere(scenario: &'static str) -> (tokio::task::JoinHandle<(i32, String)>, u16) {
    for _ in 0..5 {
        let port = free_sip_port();
        let phone = tokio::task::spawn_blocking(move || sipp_on(scenario, port, None, &["-m", "1"]));
        for _ in 0..100 {
            if phone.is_finished() {
                break; // the port was taken: try another
            }
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                return (phone, port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("SIPp ({scenario}) could not bind any of five free ports");
}

/// Registers `user` with its phone at `contact_port` (another SIPp).
async fn register_at(user: &'static str, contact_port: u16, port: u16) {
    let target = format!("127.0.0.1:{port}");
    let contact_port = contact_port.to_string();
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let args = ["-s", user, "-au", user, "-ap", "switchboard-demo-sip", "-key", "contact_port", &contact_port, "-m", "1", "-t", "u1"];
        sipp("register_at.xml", &target, &args)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{user} registers:\n{screen}");
}

async fn place_call(server: &Server, token: &str, body: serde_json::Value) -> String {
    let (status, call) = server.graph(reqwest::Method::POST, "/v1.0/communications/calls", token, Some(body)).await;
    assert_eq!((status, call["state"].as_str()), (201, Some("establishing")), "{call}");
    call["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_bot_calls_registered_phones_and_pstn_numbers_through_a_trunk() {
    use switchboard_sip::endpoint::is_sip_call;
    let mut bot = Bot::start().await;
    let (port, trunk_port) = (free_sip_port(), free_sip_port());
    let extra = vec!["--sip-listen".into(), format!("127.0.0.1:{port}"), "--sip-trunk".into(), format!("sip:127.0.0.1:{trunk_port}")];
    let server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Alex's phone rings, answers and hangs up.
    let (alex, alex_port) = phone_anywhere("phone_answers.xml").await;
    register_at("alex", alex_port, port).await;
    let id = place_call(&server, &token, call_to_user(&bot.callback("alex"), ALEX)).await;
    assert!(is_sip_call(&id), "a call that goes over SIP says so in its id: {id}");
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    let (code, screen) = alex.await.unwrap();
    assert_eq!(code, 0, "Alex's phone (INVITE with PCMU/PCMA/telephone-event, 180, 200, ACK, BYE):\n{screen}");

    // Bob's phone is busy: 486, the same resultInfo as the sim's busy party.
    let (bob, bob_port) = phone_anywhere("phone_busy.xml").await;
    register_at("bob", bob_port, port).await;
    let id = place_call(&server, &token, call_to_user(&bot.callback("bob"), BUSY_BOB)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(486, 0, "The callee is busy."));
    let (code, screen) = bob.await.unwrap();
    assert_eq!(code, 0, "Bob's phone got the ACK to its 486:\n{screen}");

    // Heidi's phone rings until the bot hangs up: CANCEL, 487, ACK.
    let (heidi, heidi_port) = phone_anywhere("phone_rings_until_cancel.xml").await;
    register_at("heidi", heidi_port, port).await;
    let id = place_call(&server, &token, call_to_user(&bot.callback("heidi"), HEIDI)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    tokio::time::sleep(Duration::from_millis(300)).await; // ringing
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let rest = bot.take(2).await;
    assert_eq!(redact(rest[0].clone(), &id), state_note("updated", "terminating"), "{rest:?}");
    assert_eq!(rest[1]["changeType"], "deleted", "{rest:?}");
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "Heidi's phone got the CANCEL and the ACK to its 487:\n{screen}");

    // A PSTN number goes to the trunk, from the reception's number; the bot hangs up.
    let trunk = phone_waiting("trunk_answers.xml", trunk_port).await;
    let id = place_call(&server, &token, call_to_phone(&bot.callback("pstn"), "+15550001111")).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "terminating"));
    assert_eq!(bot.next().await.1["changeType"], "deleted");
    let (code, screen) = trunk.await.unwrap();
    assert_eq!(code, 0, "the trunk (INVITE for the number from the caller id, BYE):\n{screen}");

    // The sim's scripted numbers stay on the sim while a trunk is configured.
    let id = place_call(&server, &token, call_to_phone(&bot.callback("sim"), "+15555550486")).await;
    assert!(!is_sip_call(&id));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(486, 0, "The callee is busy."));

    // The trunk calls the reception's number for a PSTN caller, without Digest.
    let target = format!("127.0.0.1:{port}");
    let trunk = tokio::task::spawn_blocking(move || {
        sipp_on(
            "trunk_calls_bot.xml",
            trunk_port,
            Some(&target),
            &["-s", "14255550100", "-key", "caller", "+15550002222", "-m", "1", "-t", "u1"],
        )
    });
    let (_, created) = bot.next().await;
    assert_eq!(created["resourceData"]["source"]["identity"]["phone"]["id"], "+15550002222", "{created}");
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 540000, "The call was ended by the PSTN user."), "as Graph says it");
    let (code, screen) = trunk.await.unwrap();
    assert_eq!(code, 0, "the trunk's call:\n{screen}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// A server whose config bridges transferees that refuse REFER (`[sip] bridge_when_refer_refused`).
async fn bridging_server(bot: &Bot) -> (Server, u16) {
    let port = free_sip_port();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/switchboard.example.toml")).unwrap();
    let config = std::env::temp_dir().join(format!("switchboard-bridge-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&config, format!("{example}\n[sip]\nbridge_when_refer_refused = true\n")).unwrap();
    let extra = vec![
        "--config".into(),
        config.display().to_string(),
        "--sip-listen".into(),
        format!("127.0.0.1:{port}"),
        "--ring-timeout-ms".into(),
        "3000".into(),
    ];
    (Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await, port)
}

#[tokio::test]
async fn a_transferee_that_refuses_refer_is_bridged_to_a_target_that_answers_refuses_or_never_answers() {
    let mut bot = Bot::start().await;
    let (server, port) = bridging_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let targets = [
        ("alex", ALEX, "phone_answers.xml", None),
        ("bob", BUSY_BOB, "phone_busy.xml", Some("busy")),
        ("dana", DECLINING_DANA, "phone_declines.xml", Some("declined")),
        ("sam", SILENT_SAM, "phone_rings_until_cancel.xml", Some("never answers")),
    ];
    for (user, user_id, scenario, failure) in targets {
        let (target, target_port) = phone_anywhere(scenario).await;
        register_at(user, target_port, port).await;
        // Heidi's phone is held, refuses the REFER (405), and is re-INVITEd: to the target's media
        // once the target answers, or back to ours when it does not.
        let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_refuses_refer.xml", port).await;
        let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": user_id}}}});
        assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
        match failure {
            None => {
                crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
                // The target hangs up after a moment; Switchboard passes the BYE on to Heidi.
            }
            Some(why) => {
                expect_transfer_failed(&mut bot, &id, &format!("{user} {why}")).await;
                bot_hangs_up(&server, &mut bot, &token, &id).await;
            }
        }
        let (code, screen) = target.await.unwrap();
        assert_eq!(code, 0, "{user}'s phone, the target:\n{screen}");
        let (code, screen) = phone.await.unwrap();
        assert_eq!(code, 0, "Heidi's phone, the transferee ({user}):\n{screen}");
    }
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_consultative_transfer_refers_the_transferee_with_replaces_for_the_consultation_call() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // Heidi's phone calls the bot (A); the bot consults Alex (B), who answers.
    let (a, _, heidi) = answered_phone_call(&server, &mut bot, &token, "phone_transferred_replacing.xml", port).await;
    let (alex, alex_port) = phone_anywhere("target_replaced.xml").await;
    register_at("alex", alex_port, port).await;
    let b = place_call(&server, &token, call_to_user(&bot.callback("consult"), ALEX)).await;
    assert_eq!(redact(bot.next().await.1, &b), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &b), established_note());
    let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}, "replacesCallId": b}});
    assert_eq!(crate::transfer::transfer(&server, &token, &a, body).await.0, 202);
    crate::transfer::expect_transferred(&mut bot, &a, crate::transfer::completed_consultative()).await;
    // Alex's phone hangs up the consultation call: replaced by A, as Graph reports it.
    let mut replaced = terminated_note(200, 7015, &format!("The call was handed over to call {a} by a consultative transfer."));
    replaced["resourceData"]["terminationReason"] = serde_json::json!("AppTransferred");
    assert_eq!(redact(bot.next().await.1, &b), replaced);
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "Heidi's phone (REFER with Replaces, NOTIFYs, BYE):\n{screen}");
    let (code, screen) = alex.await.unwrap();
    assert_eq!(code, 0, "Alex's phone:\n{screen}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_sim_call_is_transferred_to_a_registered_phone_and_the_two_networks_hang_up_together() {
    let mut bot = Bot::start().await;
    let port = free_sip_port();
    let extra = vec!["--sip-listen".into(), format!("127.0.0.1:{port}"), "--ring-timeout-ms".into(), "3000".into()];
    let server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let cases = [
        ("alex", ALEX, "target_takes_sim_call.xml", None),
        ("bob", BUSY_BOB, "phone_busy.xml", Some("busy")),
        ("sam", SILENT_SAM, "phone_rings_until_cancel.xml", Some("never answers")),
    ];
    for (user, user_id, scenario, failure) in cases {
        let (phone, phone_port) = phone_anywhere(scenario).await;
        register_at(user, phone_port, port).await;
        // Heidi, on the sim (not registered), calls the bot, which transfers her to the phone with a
        // custom header for it.
        let id = crate::transfer::answered(&server, &mut bot, &token, HEIDI, DEMO_BOT).await;
        let body = serde_json::json!({
            "transferTarget": {"identity": {"user": {"id": user_id}}},
            "customCallingContext": {"sipHeaders": {"X-Ticket": "4711"}}
        });
        assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
        match failure {
            None => {
                crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
                let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
                let heidi = world["legs"].as_array().unwrap().iter().find(|l| l["party"]["id"] == HEIDI).cloned();
                let heidi = heidi.unwrap_or_else(|| panic!("Heidi's leg: {world}"));
                assert_eq!((heidi["state"].as_str(), heidi["peer"]["kind"].as_str()), (Some("connected"), Some("external")), "{heidi}");
                assert_eq!(heidi["peer"]["network"], "sip");
            }
            Some(why) => {
                expect_transfer_failed(&mut bot, &id, &format!("{user} {why}")).await;
                bot_hangs_up(&server, &mut bot, &token, &id).await;
            }
        }
        let (code, screen) = phone.await.unwrap();
        assert_eq!(code, 0, "{user}'s phone:\n{screen}");
    }
    // Alex's phone hung up: Heidi's sim leg went with it.
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(0), "{world}");

    // The other way round: Heidi hangs up on the sim, and Dana's phone gets a BYE.
    let (phone, phone_port) = phone_anywhere("target_until_sim_hangs_up.xml").await;
    register_at("dana", phone_port, port).await;
    let id = crate::transfer::answered(&server, &mut bot, &token, HEIDI, DEMO_BOT).await;
    let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    let leg = world["legs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.sim(reqwest::Method::DELETE, &format!("/legs/{leg}"), None).await.0, 204);
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "Dana's phone got the BYE:\n{screen}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn calls_complete_through_lost_invites_200s_acks_and_byes() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // SIPp loses 10 % of the messages each way (a run of losses backs off for seconds, so each
    // notification may take up to 30 s); each call is answered by the bot through Graph, and
    // must still end as a normal call: established, then hung up by the phone.
    for round in 0..5 {
        let lossy = ["-t", "u1", "-lost", "10", "-max_invite_retrans", "12", "-max_non_invite_retrans", "12"];
        let phone = heidi_calls("phone_call_lossy.xml", port, &lossy);
        let next = async |bot: &mut Bot| bot.next_within(Duration::from_secs(30)).await.expect("a notification within 30 s").1;
        let created = next(&mut bot).await;
        let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
        assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await.0, 202);
        assert_eq!(redact(next(&mut bot).await, &id), state_note("updated", "establishing"), "round {round}");
        assert_eq!(redact(next(&mut bot).await, &id), established_note(), "round {round}");
        assert_eq!(redact(next(&mut bot).await, &id), terminated_note(200, 4521, "The other participant ended the call."), "round {round}");
        let (code, screen) = phone.await.unwrap();
        assert_eq!(code, 0, "round {round}: the phone's call through lost packets:\n{screen}");
    }
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_answered_phone_hears_comfort_audio_and_its_rtp_is_taken() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    // SIPp echoes whatever RTP reaches its media port back to the sender: our comfort audio comes
    // back to our media socket.
    let media = free_sip_port().to_string();
    let phone = heidi_calls("phone_hangs_up.xml", port, &["-t", "u1", "-rtp_echo", "-mp", &media]);
    let (_, created) = bot.next().await;
    let id = created["resourceUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let answer = Some(crate::lifecycle::answer_body(&bot.callback(&id)));
    assert_eq!(server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/answer"), &token, answer).await.0, 202);
    bot.take(3).await; // establishing, established, and the phone's hang-up a second later
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");
    let page = server.metrics().await;
    // About a second of 20 ms packets each way (SIPp's pause), with slack for a loaded machine.
    assert!(metric(&page, "switchboard_rtp_sent_total") >= 20, "{page}");
    assert!(metric(&page, "switchboard_rtp_received_total") >= 10, "the echo came back:\n{page}");
    // And none after the call.
    let sent = metric(&page, "switchboard_rtp_sent_total");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&server.metrics().await, "switchboard_rtp_sent_total"), sent, "quiet after the BYE");
}

#[tokio::test]
async fn sip_over_tls_is_served_with_the_certificate() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (port, tls_port) = (free_sip_port(), free_sip_port());
    let extra = vec!["--sip-listen".into(), format!("127.0.0.1:{port}"), "--sip-tls-listen".into(), format!("127.0.0.1:{tls_port}")];
    let server = Server::start_with(Options { demo_webhook: None, extra }).await;
    // No certificate configured: the self-signed one made in the data folder, which a phone must trust.
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).expect("the generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let request = |method: &str, cseq: u32| {
        format!(
            "{method} sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKtls{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:heidi@127.0.0.1>;tag=t\r\n\
             To: <sip:heidi@127.0.0.1>\r\nCall-ID: tls-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:heidi@{me};transport=tls>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let read = async |tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.expect("an answer").unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    tls.write_all(request("OPTIONS", 1).as_bytes()).await.unwrap();
    let answer = read(&mut tls).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n") && answer.contains("Allow: INVITE"), "{answer}");
    tls.write_all(request("REGISTER", 2).as_bytes()).await.unwrap();
    let answer = read(&mut tls).await;
    assert!(answer.starts_with("SIP/2.0 401 Unauthorized\r\n") && answer.contains("WWW-Authenticate: Digest"), "{answer}");
    // Plain TCP on the TLS port is no SIP: the handshake fails and nothing is answered.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    plain.write_all(request("OPTIONS", 3).as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await.expect("closed");
    assert!(!String::from_utf8_lossy(&buf[..got.unwrap_or(0)]).starts_with("SIP/2.0"));
}

#[tokio::test]
async fn a_phone_is_transferred_to_a_sim_party_which_answers_refuses_or_hangs_up() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;

    // Alex has no registered phone: his sim self rings for Heidi's phone and answers. Switchboard
    // keeps the phone's dialog and joins it to Alex's sim leg; the Graph call is transferred.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_until_bye.xml", port).await;
    let to_alex = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to_alex).await.0, 202);
    crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    let alex = world["legs"].as_array().unwrap().iter().find(|l| l["party"]["id"] == ALEX).cloned().unwrap_or_else(|| panic!("{world}"));
    assert_eq!(
        (alex["state"].as_str(), alex["peer"]["kind"].as_str(), alex["peer"]["id"].as_str()),
        (Some("connected"), Some("external"), Some(id.as_str()))
    );
    // Alex hangs up on the sim: the phone gets a BYE.
    let leg = alex["id"].as_str().unwrap();
    assert_eq!(server.sim(reqwest::Method::DELETE, &format!("/legs/{leg}"), None).await.0, 204);
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone got the BYE:\n{screen}");

    // Busy Bob refuses: the call stays with the bot (500/7000), which hangs up.
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_until_bye.xml", port).await;
    let to_bob = serde_json::json!({"transferTarget": {"identity": {"user": {"id": BUSY_BOB}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, to_bob).await.0, 202);
    expect_transfer_failed(&mut bot, &id, "a busy sim party").await;
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(0), "nobody left ringing: {world}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_sim_call_is_transferred_to_a_pstn_number_through_the_trunk() {
    let mut bot = Bot::start().await;
    let (port, trunk_port) = (free_sip_port(), free_sip_port());
    let extra = vec!["--sip-listen".into(), format!("127.0.0.1:{port}"), "--sip-trunk".into(), format!("sip:127.0.0.1:{trunk_port}")];
    let server = Server::start_with(Options { demo_webhook: Some(bot.webhook()), extra }).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let trunk = phone_waiting("trunk_takes_transfer.xml", trunk_port).await;
    // Heidi (sim) calls the reception; the bot transfers her to a PSTN number, which the trunk takes.
    let id = crate::transfer::answered(&server, &mut bot, &token, HEIDI, RECEPTION).await;
    let body = serde_json::json!({"transferTarget": {"identity": {"phone": {"id": "+15550001111"}}}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    crate::transfer::expect_transferred(&mut bot, &id, crate::transfer::completed_blind()).await;
    let (code, screen) = trunk.await.unwrap();
    assert_eq!(code, 0, "the trunk (INVITE for the number as Heidi, with Referred-By; its BYE):\n{screen}");
    // The far end hung up: Heidi's sim leg went with it.
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(0), "{world}");
}

/// A phone's key presses reach the bot as `toneInfo`: RFC 4733 telephone-events (SIPp plays Debian's
/// `dtmf_2833_1.pcap`: one press of 1, in many packets) and SIP INFO (`Signal=#`).
#[tokio::test]
async fn a_phones_keys_reach_the_bot_as_tone_info() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_presses_keys.xml", port).await;
    let (status, sub) = server
        .graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/subscribeToTone"), &token, Some(serde_json::json!({})))
        .await;
    assert_eq!(status, 200, "{sub}");
    for (n, tone) in [(1, "tone1"), (2, "pound")] {
        let mut note = state_note("updated", "established");
        note["resourceData"]["toneInfo"] = serde_json::json!({"@odata.type": "#microsoft.graph.toneInfo", "sequenceId": n, "tone": tone});
        assert_eq!(redact(bot.next().await.1, &id), note);
    }
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone's side (pcap, INFO, BYE):\n{screen}");
}

/// A WAV file of `ms` of a tone, 8 kHz 16-bit mono.
fn tone_wav(ms: u32) -> Vec<u8> {
    let samples = ms * 8;
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for v in [
        16u32.to_le_bytes().to_vec(),
        1u16.to_le_bytes().to_vec(),
        1u16.to_le_bytes().to_vec(),
        8_000u32.to_le_bytes().to_vec(),
        16_000u32.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        16u16.to_le_bytes().to_vec(),
    ] {
        w.extend(v);
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(samples * 2).to_le_bytes());
    for i in 0..samples {
        w.extend_from_slice(&((((i as f64) * 0.345).sin() * 8_000.0) as i16).to_le_bytes());
    }
    w
}

/// `playPrompt` to a phone: a WAV from the data folder's `prompts/` plays as RTP and the operation
/// completes when it has; files elsewhere, URLs that cannot be fetched and non-WAV files fail it with
/// `playPromptFailed`; a looping prompt is cancelled.
#[tokio::test]
async fn prompts_play_to_a_phone_from_wav_files() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let prompts = server.data_dir.join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(prompts.join("greeting.wav"), tone_wav(400)).unwrap();
    std::fs::write(prompts.join("not-audio.wav"), b"<html>not a prompt</html>").unwrap();
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_until_bye.xml", port).await;
    let play = |uri: String, looped: bool| serde_json::json!({"prompts": [{"mediaInfo": {"uri": uri}}], "loop": looped});
    let path = format!("/v1.0/communications/calls/{id}/playPrompt");
    let sent_before = metric(&server.metrics().await, "switchboard_rtp_prompt_sent_total");
    let greeting = format!("file://{}", prompts.join("greeting.wav").display());
    let (status, op) = server.graph(reqwest::Method::POST, &path, &token, Some(play(greeting, false))).await;
    assert_eq!(status, 200, "{op}");
    let (_, done) = bot.next().await;
    assert_eq!(
        (done["resourceData"]["status"].as_str(), done["resourceData"]["completionReason"].as_str()),
        (Some("completed"), Some("completedSuccessfully")),
        "{done}"
    );
    let sent = metric(&server.metrics().await, "switchboard_rtp_prompt_sent_total") - sent_before;
    assert_eq!(sent, 20, "0.4 s is 20 packets of 20 ms");
    for uri in [
        "file:///etc/hostname".to_owned(),
        format!("file://{}", prompts.join("not-audio.wav").display()),
        format!("file://{}", prompts.join("missing.wav").display()),
        "http://127.0.0.1:1/greeting.wav".to_owned(),
    ] {
        let (status, _) = server.graph(reqwest::Method::POST, &path, &token, Some(play(uri.clone(), false))).await;
        assert_eq!(status, 200);
        let (_, failed) = bot.next().await;
        assert_eq!(
            (failed["resourceData"]["status"].as_str(), failed["resourceData"]["completionReason"].as_str()),
            (Some("failed"), Some("playPromptFailed")),
            "{uri}: {failed}"
        );
    }
    // A looping prompt plays until it is cancelled.
    let greeting = format!("file://{}", prompts.join("greeting.wav").display());
    server.graph(reqwest::Method::POST, &path, &token, Some(play(greeting, true))).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let cancel = format!("/v1.0/communications/calls/{id}/cancelMediaProcessing");
    assert_eq!(server.graph(reqwest::Method::POST, &cancel, &token, Some(serde_json::json!({}))).await.0, 200);
    let (_, cancelled) = bot.next().await;
    assert_eq!(
        (cancelled["resourceData"]["status"].as_str(), cancelled["resourceData"]["resultInfo"]["subcode"].as_i64()),
        (Some("failed"), Some(8508))
    );
    bot.expect_silence(Duration::from_millis(500)).await;
    // Hold music (a soft tone of our own) plays until it is stopped; each operation completes.
    let (_, list) = server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), &token, None).await;
    let phone_pid = list["value"][1]["id"].as_str().unwrap().to_owned();
    let hold = |what: &str| format!("/v1.0/communications/calls/{id}/participants/{phone_pid}/{what}");
    let before = metric(&server.metrics().await, "switchboard_rtp_prompt_sent_total");
    assert_eq!(server.graph(reqwest::Method::POST, &hold("startHoldMusic"), &token, Some(serde_json::json!({}))).await.0, 202);
    let (_, started) = bot.next().await;
    assert_eq!(started["resourceData"]["status"], "completed", "{started}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.graph(reqwest::Method::POST, &hold("stopHoldMusic"), &token, Some(serde_json::json!({}))).await.0, 202);
    let (_, stopped) = bot.next().await;
    assert_eq!(stopped["resourceData"]["status"], "completed", "{stopped}");
    let during = metric(&server.metrics().await, "switchboard_rtp_prompt_sent_total") - before;
    assert!(during >= 10, "music played while on hold: {during} packets");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&server.metrics().await, "switchboard_rtp_prompt_sent_total") - before, during, "and stopped");
    // Tones to the phone go as RFC 4733 events (it offered telephone-event).
    let tones = serde_json::json!({"tones": ["tone1", "pound"], "delayBetweenTonesMs": 100});
    let (status, op) =
        server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/sendDtmfTones"), &token, Some(tones)).await;
    assert_eq!((status, op["status"].as_str()), (200, Some("running")));
    let (_, sent) = bot.next().await;
    assert_eq!(
        (sent["resourceData"]["status"].as_str(), sent["resourceData"]["completionReason"].as_str()),
        (Some("completed"), Some("completedSuccessfully"))
    );
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");
}

/// `recordResponse` with a phone: the beep plays, what the phone sends (SIPp plays Debian's
/// `g711a.pcap`) is recorded until it presses # (SIP INFO), and the WAV is fetched with its token.
#[tokio::test]
async fn a_phones_reply_is_recorded_until_its_stop_key() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_speaks.xml", port).await;
    let body = serde_json::json!({"playBeep": true, "initialSilenceTimeoutInSeconds": 10, "maxSilenceTimeoutInSeconds": 5,
        "maxRecordDurationInSeconds": 30, "stopTones": ["#"], "clientContext": "reply"});
    let (status, op) =
        server.graph(reqwest::Method::POST, &format!("/v1.0/communications/calls/{id}/recordResponse"), &token, Some(body)).await;
    assert_eq!(status, 200, "{op}");
    let (_, done) = bot.next().await;
    let data = &done["resourceData"];
    assert_eq!((data["status"].as_str(), data["completionReason"].as_str()), (Some("completed"), Some("stopToneDetected")), "{done}");
    let location = data["recordingLocation"].as_str().unwrap();
    let wav = client().get(location).bearer_auth(data["recordingAccessToken"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(wav.status().as_u16(), 200);
    let wav = wav.bytes().await.unwrap();
    assert_eq!(&wav[0..4], b"RIFF");
    let samples: Vec<i16> = wav[44..].chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect();
    let seconds = samples.len() as f64 / 8_000.0;
    assert!((1.5..8.0).contains(&seconds), "from the beep's end to the # is about 3.5 s: {seconds} s");
    assert!(samples.iter().any(|s| s.saturating_abs() > 2_000), "the phone's audio is in it");
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "{screen}");
}

/// A phone that registers over TCP (as phones behind NAT, and RFC 5626's, do) is called on that
/// connection: its contact names a port where nothing listens, so only the connection reaches it.
/// One SIP message off a stream (its head, and the body its Content-Length announces).
async fn read_sip(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> String {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length:").or_else(|| l.strip_prefix("l:")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return String::from_utf8_lossy(&msg).into_owned();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await.expect("a message").unwrap();
        assert!(n > 0, "the connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A header's value in a message (its full name only).
fn sip_header(msg: &str, name: &str) -> String {
    msg.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned)).unwrap_or_else(|| panic!("no {name} in {msg}"))
}

/// The phone's 2xx (or other final answer) to `request`, with `to_tag` added to To when given, and a body.
fn sip_answer(request: &str, status: &str, to_tag: Option<&str>, extra: &str, body: &str) -> String {
    let to = match to_tag {
        Some(tag) => format!("{};tag={tag}", sip_header(request, "To")),
        None => sip_header(request, "To"),
    };
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        sip_header(request, "Via"),
        sip_header(request, "From"),
        sip_header(request, "Call-ID"),
        sip_header(request, "CSeq"),
        body.len()
    )
}

#[tokio::test]
async fn a_phone_registered_over_tcp_is_called_on_its_connection() {
    use tokio::io::AsyncWriteExt;
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKtcpreg{cseq}\r\nMax-Forwards: 70\r\n\
             From: <sip:alex@127.0.0.1>;tag=r1\r\nTo: <sip:alex@127.0.0.1>\r\nCall-ID: tcp-reg-1\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:alex@127.0.0.1:9;transport=tcp>\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    tcp.write_all(register(1, "").as_bytes()).await.unwrap();
    let challenge = read_sip(&mut tcp, &mut buf).await;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let www = sip_header(&challenge, "WWW-Authenticate");
    let field = |name: &str| www.split(&format!("{name}=\"")).nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let mut creds = switchboard_sip::header::authorization::Credentials {
        username: "alex".into(),
        realm: field("realm"),
        nonce: field("nonce"),
        uri: format!("sip:127.0.0.1:{port}"),
        qop: Some("auth".into()),
        nc: Some("00000001".into()),
        cnonce: Some("tcp1".into()),
        ..Default::default()
    };
    creds.response = switchboard_sip::digest::expected_response(&creds, "switchboard-demo-sip", "REGISTER");
    let auth = format!(
        "Authorization: Digest username=\"alex\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm=MD5, cnonce=\"tcp1\", qop=auth, nc=00000001\r\n",
        creds.realm, creds.nonce, creds.uri, creds.response
    );
    tcp.write_all(register(2, &auth).as_bytes()).await.unwrap();
    let ok = read_sip(&mut tcp, &mut buf).await;
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");

    // The bot calls Alex: the INVITE comes on the connection, with a TCP Via.
    let id = place_call(&server, &token, call_to_user(&bot.callback("alex"), ALEX)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    let invite = read_sip(&mut tcp, &mut buf).await;
    assert!(invite.starts_with("INVITE sip:alex@127.0.0.1:9;transport=tcp SIP/2.0\r\n"), "{invite}");
    assert!(sip_header(&invite, "Via").starts_with("SIP/2.0/TCP "), "{invite}");
    let sdp = "v=0\r\no=alex 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=alextcp\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:alex@{me};transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sip_header(&invite, "Via"),
        sip_header(&invite, "From"),
        sip_header(&invite, "To"),
        sip_header(&invite, "Call-ID"),
        sip_header(&invite, "CSeq"),
        sdp.len()
    );
    tcp.write_all(ok.as_bytes()).await.unwrap();
    let ack = read_sip(&mut tcp, &mut buf).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    assert_eq!(redact(bot.next().await.1, &id), established_note());

    // The bot hangs up: the BYE comes on the connection too.
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let bye = read_sip(&mut tcp, &mut buf).await;
    assert!(bye.starts_with("BYE ") && sip_header(&bye, "Via").starts_with("SIP/2.0/TCP "), "{bye}");
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        sip_header(&bye, "Via"),
        sip_header(&bye, "From"),
        sip_header(&bye, "To"),
        sip_header(&bye, "Call-ID"),
        sip_header(&bye, "CSeq")
    );
    tcp.write_all(ok.as_bytes()).await.unwrap();
    let gone = bot.take(2).await;
    assert_eq!(gone[1]["changeType"], "deleted", "{gone:?}");
}

/// The roster items of call `id` among `n` notifications; the last roster, as user ids.
async fn rosters(bot: &mut Bot, id: &str, n: usize) -> Vec<String> {
    let mut last = Vec::new();
    for item in bot.take(n).await {
        last = crate::group::roster(&item, id);
    }
    last
}

/// A group call with members on both networks: the phones ring as SIP dialogs, the sim party on the
/// sim; each joins as it answers. A phone member is transferred by REFER (its NOTIFY decides), another
/// to a sim party that rings for it; the bot hangs up, and the phone transferred to the sim party
/// stays with it until that party hangs up.
#[tokio::test]
async fn a_group_call_rings_phones_and_sim_parties_and_transfers_phone_members_by_refer_and_to_the_sim() {
    use crate::group::{participant_of, roster, s};
    use switchboard_sip::endpoint::is_sip_call;
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    register("alex", port).await; // the transfer target: a contact for the Refer-To
    let (heidi, heidi_port) = phone_anywhere("member_transferred.xml").await;
    register_at("heidi", heidi_port, port).await;
    let (bob, bob_port) = phone_anywhere("member_until_bye.xml").await;
    register_at("bob", bob_port, port).await;
    server
        .sim(
            reqwest::Method::PUT,
            &format!("/parties/{SILENT_SAM}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 100})),
        )
        .await;

    let body = crate::group::group_body(&bot.callback("g"), &[HEIDI, SILENT_SAM, BUSY_BOB]);
    let (status, call) = server.graph(reqwest::Method::POST, "/v1.0/communications/calls", &token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(rosters(&mut bot, &id, 3).await, s(&[DEMO_BOT, HEIDI, SILENT_SAM, BUSY_BOB]), "each joins as it answers");
    let (heidi_pid, sam_pid) = (participant_of(&server, &token, &id, HEIDI).await, participant_of(&server, &token, &id, SILENT_SAM).await);
    assert!(is_sip_call(&heidi_pid) && !is_sip_call(&sam_pid), "a member on SIP has a SIP participant id: {heidi_pid}, {sam_pid}");

    // Heidi goes to Alex by REFER: the NOTIFY's 200 completes it, and the others stay with the bot.
    let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}, "transferee": {"participantId": heidi_pid}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferAccepted"));
    let back = redact(bot.next().await.1, &id);
    assert_eq!(
        (back["resourceData"]["state"].as_str(), back["resourceData"]["resultInfo"]["subcode"].as_i64()),
        (Some("established"), Some(7015)),
        "{back}"
    );
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, SILENT_SAM, BUSY_BOB]));
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "Heidi's phone (INVITE, held, REFER to Alex with Referred-By, NOTIFYs, BYE):\n{screen}");

    // Bob's phone goes to Dana, on the sim (she answers today): she rings for it, and it is hers.
    server
        .sim(
            reqwest::Method::PUT,
            &format!("/parties/{DECLINING_DANA}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 50})),
        )
        .await;
    let bob_pid = participant_of(&server, &token, &id, BUSY_BOB).await;
    let body =
        serde_json::json!({"transferTarget": {"identity": {"user": {"id": DECLINING_DANA}}}, "transferee": {"participantId": bob_pid}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferring"));
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "transferAccepted"));
    assert_eq!(redact(bot.next().await.1, &id)["resourceData"]["resultInfo"]["subcode"], 7015);
    assert_eq!(roster(&bot.next().await.1, &id), s(&[DEMO_BOT, SILENT_SAM]));

    // The bot leaves: Bob's phone stays with Dana (no BYE for it), until she hangs up.
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    let dana = world["legs"].as_array().unwrap().iter().find(|l| l["party"]["id"] == DECLINING_DANA).cloned();
    let dana = dana.unwrap_or_else(|| panic!("Dana still talks to Bob's phone: {world}"));
    assert_eq!((dana["state"].as_str(), dana["peer"]["kind"].as_str()), (Some("connected"), Some("external")), "{dana}");
    assert!(!bob.is_finished(), "Bob's phone got no BYE with the bot's leaving");
    assert_eq!(server.sim(reqwest::Method::DELETE, &format!("/legs/{}", dana["id"].as_str().unwrap()), None).await.0, 204);
    let (code, screen) = bob.await.unwrap();
    assert_eq!(code, 0, "Bob's phone (INVITE, 180, 200, ACK, then Dana's BYE):\n{screen}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// `participants/invite` into a call from a phone: the call becomes a group call whose first member
/// is the caller's phone; a registered phone and a sim party are invited, and each joins; the bot
/// hangs up and every phone gets a BYE. A phone that hangs up is a member leaving.
#[tokio::test]
async fn a_call_from_a_phone_becomes_a_group_call_with_phones_and_sim_parties_invited() {
    use crate::group::{participant_of, s};
    use switchboard_sip::endpoint::is_sip_call;
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (bob, bob_port) = phone_anywhere("member_until_bye.xml").await;
    register_at("bob", bob_port, port).await;
    server
        .sim(
            reqwest::Method::PUT,
            &format!("/parties/{SILENT_SAM}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 100})),
        )
        .await;
    let (id, _, heidi) = answered_phone_call(&server, &mut bot, &token, "phone_until_bye.xml", port).await;
    assert!(is_sip_call(&id));
    let invite = |who: &str| {
        serde_json::json!({"participants": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"@odata.type": "#microsoft.graph.identity", "id": who}}}]})
    };
    let path = format!("/v1.0/communications/calls/{id}/participants/invite");
    for who in [BUSY_BOB, SILENT_SAM] {
        let (status, op) = server.graph(reqwest::Method::POST, &path, &token, Some(invite(who))).await;
        assert_eq!(status, 200, "{op}");
        // The roster with the invitee in it, and the invitation's operation completed.
        let items = bot.take(2).await;
        let roster = items.iter().find(|i| i["resourceUrl"].as_str().is_some_and(|u| u.ends_with("/participants"))).expect("a roster");
        assert_eq!(crate::group::roster(roster, &id).last().map(String::as_str), Some(who), "{items:?}");
        let done = items.iter().find(|i| i["resourceData"]["status"].is_string()).expect("the operation");
        assert_eq!(done["resourceData"]["status"], "completed", "{done}");
    }
    let (_, list) = server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), &token, None).await;
    let users: Vec<&str> = list["value"].as_array().unwrap().iter().filter_map(|p| p["info"]["identity"]["user"]["id"].as_str()).collect();
    assert_eq!(users, [HEIDI, BUSY_BOB, SILENT_SAM], "{list}");
    // Bob, removed, gets a BYE; the others stay.
    let bob_pid = participant_of(&server, &token, &id, BUSY_BOB).await;
    assert!(is_sip_call(&bob_pid));
    let (status, _) =
        server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}/participants/{bob_pid}"), &token, None).await;
    assert_eq!(status, 204);
    // (The bot is the reception's application instance here, first.)
    assert_eq!(crate::group::roster(&bot.next().await.1, &id)[1..], s(&[HEIDI, SILENT_SAM]));
    let (code, screen) = bob.await.unwrap();
    assert_eq!(code, 0, "Bob's phone gets the BYE:\n{screen}");
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "Heidi's phone gets the BYE:\n{screen}");
    let (_, world) = server.sim(reqwest::Method::GET, "/world", None).await;
    assert_eq!(world["legs"].as_array().map(Vec::len), Some(0), "Sam's sim leg is gone too: {world}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// A group call's member on SIP does not survive a restart (its dialog was not stored): it has left,
/// and the call carries on with its sim member.
#[tokio::test]
async fn a_group_calls_phone_member_has_left_after_a_restart() {
    use crate::group::s;
    let mut bot = Bot::start().await;
    let (mut server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (heidi, heidi_port) = phone_anywhere("member_stays.xml").await;
    register_at("heidi", heidi_port, port).await;
    server
        .sim(
            reqwest::Method::PUT,
            &format!("/parties/{SILENT_SAM}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 100})),
        )
        .await;
    let body = crate::group::group_body(&bot.callback("g"), &[HEIDI, SILENT_SAM]);
    let (status, call) = server.graph(reqwest::Method::POST, "/v1.0/communications/calls", &token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(rosters(&mut bot, &id, 2).await, s(&[DEMO_BOT, HEIDI, SILENT_SAM]));
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "{screen}");
    server.settled().await;
    server.kill9();
    server.restart().await;
    assert_eq!(crate::group::roster(&bot.next().await.1, &id), s(&[DEMO_BOT, SILENT_SAM]), "Heidi's phone has left");
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (_, got) = server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(got["state"], "established", "{got}");
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// A phone that puts the bot on hold (re-INVITE `sendonly`, then `inactive`) makes the call's audio
/// `inactive`, told once; taken off hold (`sendrecv`), it is `active` again. Each re-INVITE is
/// answered with the direction mirrored.
#[tokio::test]
async fn a_phone_holding_the_call_turns_its_media_state_inactive_until_it_resumes() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (id, _, phone) = answered_phone_call(&server, &mut bot, &token, "phone_holds.xml", port).await;
    let mut held = established_note();
    held["resourceData"]["mediaState"]["audio"] = serde_json::json!("inactive");
    assert_eq!(redact(bot.next().await.1, &id), held);
    assert_eq!(redact(bot.next().await.1, &id), established_note(), "off hold");
    let (_, call) = server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}"), &token, None).await;
    assert_eq!(call["mediaState"]["audio"], "active", "{call}");
    assert_eq!(redact(bot.next().await.1, &id), terminated_note(200, 4521, "The other participant ended the call."));
    let (code, screen) = phone.await.unwrap();
    assert_eq!(code, 0, "the phone's re-INVITEs answered recvonly, inactive and sendrecv:\n{screen}");
    bot.expect_silence(Duration::from_millis(300)).await;
}

/// Registers `user` over UDP with a contact asking for TCP (`;transport=tcp`) at `contact_port`.
async fn register_tcp_contact(user: &'static str, contact_port: u16, port: u16) {
    let target = format!("127.0.0.1:{port}");
    let contact_port = contact_port.to_string();
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let args = ["-s", user, "-au", user, "-ap", "switchboard-demo-sip", "-key", "contact_port", &contact_port, "-m", "1", "-t", "u1"];
        sipp("register_at_tcp.xml", &target, &args)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{user} registers:\n{screen}");
}

/// A phone registered over UDP whose contact asks for TCP is called on a connection Switchboard opens
/// to that contact; the ACK and the BYE go on it too. Where nothing listens, the call fails at once
/// (503, unreachable), and the failure is counted.
#[tokio::test]
async fn a_contact_asking_for_tcp_is_called_on_a_connection_switchboard_opens() {
    use tokio::io::AsyncWriteExt;
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let phone_port = listener.local_addr().unwrap().port();
    register_tcp_contact("alex", phone_port, port).await;

    let id = place_call(&server, &token, call_to_user(&bot.callback("alex"), ALEX)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.expect("Switchboard connects").unwrap();
    let mut buf = Vec::new();
    let invite = read_sip(&mut tcp, &mut buf).await;
    assert!(invite.starts_with(&format!("INVITE sip:alex@127.0.0.1:{phone_port};transport=tcp SIP/2.0\r\n")), "{invite}");
    assert!(sip_header(&invite, "Via").starts_with("SIP/2.0/TCP "), "{invite}");
    let sdp = "v=0\r\no=alex 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let contact = format!("Contact: <sip:alex@127.0.0.1:{phone_port};transport=tcp>\r\nContent-Type: application/sdp\r\n");
    tcp.write_all(sip_answer(&invite, "200 OK", Some("alexout"), &contact, sdp).as_bytes()).await.unwrap();
    let ack = read_sip(&mut tcp, &mut buf).await;
    assert!(ack.starts_with("ACK sip:alex@127.0.0.1:") && sip_header(&ack, "Via").starts_with("SIP/2.0/TCP "), "{ack}");
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(server.graph(reqwest::Method::DELETE, &format!("/v1.0/communications/calls/{id}"), &token, None).await.0, 204);
    let bye = read_sip(&mut tcp, &mut buf).await;
    assert!(bye.starts_with("BYE ") && sip_header(&bye, "Via").starts_with("SIP/2.0/TCP "), "{bye}");
    tcp.write_all(sip_answer(&bye, "200 OK", None, "", "").as_bytes()).await.unwrap();
    assert_eq!(bot.take(2).await[1]["changeType"], "deleted");

    // Nothing listens at Bob's contact: the connection is refused, and the call fails at once.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = closed.local_addr().unwrap().port();
    drop(closed);
    register_tcp_contact("bob", nobody, port).await;
    let id = place_call(&server, &token, call_to_user(&bot.callback("bob"), BUSY_BOB)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    let ended = redact(bot.next().await.1, &id);
    assert_eq!(
        (ended["changeType"].as_str(), ended["resourceData"]["resultInfo"]["code"].as_i64()),
        (Some("deleted"), Some(480)),
        "{ended}"
    );
    assert_eq!(metric(&server.metrics().await, "switchboard_sip_tcp_connect_failures_total"), 1);
    // Called again at once: it fails the same way, without another attempt (none for 32 s).
    let id = place_call(&server, &token, call_to_user(&bot.callback("bob"), BUSY_BOB)).await;
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    let ended = redact(bot.next().await.1, &id);
    assert_eq!(
        (ended["changeType"].as_str(), ended["resourceData"]["resultInfo"]["code"].as_i64()),
        (Some("deleted"), Some(480)),
        "{ended}"
    );
    assert_eq!(metric(&server.metrics().await, "switchboard_sip_tcp_connect_failures_total"), 1);
}

/// The phones of one group call hear each other: Heidi's phone speaks (a pcap of voice) and Bob's
/// phone is sent her audio, mixed, in place of comfort audio.
#[tokio::test]
async fn the_phones_of_a_group_call_hear_each_other() {
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    let (heidi, heidi_port) = phone_anywhere("member_speaks.xml").await;
    register_at("heidi", heidi_port, port).await;
    let (bob, bob_port) = phone_anywhere("member_until_bye.xml").await;
    register_at("bob", bob_port, port).await;
    let before = metric(&server.metrics().await, "switchboard_rtp_mixed_sent_total");
    let body = crate::group::group_body(&bot.callback("g"), &[HEIDI, BUSY_BOB]);
    let (status, call) = server.graph(reqwest::Method::POST, "/v1.0/communications/calls", &token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    rosters(&mut bot, &id, 2).await;
    // Some of her voice (50 packets a second) reaches Bob.
    let mut mixed = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        mixed = metric(&server.metrics().await, "switchboard_rtp_mixed_sent_total") - before;
        if mixed >= 25 {
            break;
        }
    }
    assert!(mixed >= 25, "Bob's phone was sent Heidi's voice: {mixed} packets");
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    for (who, phone) in [("Heidi", heidi), ("Bob", bob)] {
        let (code, screen) = phone.await.unwrap();
        assert_eq!(code, 0, "{who}'s phone:\n{screen}");
    }
}

/// A phone member that takes the REFER and never reports: at the transfer's deadline the transfer
/// fails (500/7000), the phone is taken off hold, and it stays in the group call until the bot leaves.
#[tokio::test]
async fn a_phone_members_transfer_that_never_reports_fails_at_its_deadline() {
    use crate::group::{participant_of, s};
    let mut bot = Bot::start().await;
    let (server, port) = sip_server(&bot).await;
    let token = server.token(DEMO_BOT, CONTOSO).await;
    register("alex", port).await;
    let (heidi, heidi_port) = phone_anywhere("member_never_notifies.xml").await;
    register_at("heidi", heidi_port, port).await;
    server
        .sim(
            reqwest::Method::PUT,
            &format!("/parties/{SILENT_SAM}/behaviour"),
            Some(serde_json::json!({"kind": "answer", "after_ms": 100})),
        )
        .await;
    let body = crate::group::group_body(&bot.callback("g"), &[HEIDI, SILENT_SAM]);
    let (status, call) = server.graph(reqwest::Method::POST, "/v1.0/communications/calls", &token, Some(body)).await;
    assert_eq!(status, 201, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(redact(bot.next().await.1, &id), state_note("updated", "establishing"));
    assert_eq!(redact(bot.next().await.1, &id), established_note());
    assert_eq!(rosters(&mut bot, &id, 2).await, s(&[DEMO_BOT, HEIDI, SILENT_SAM]));
    let heidi_pid = participant_of(&server, &token, &id, HEIDI).await;
    let body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}, "transferee": {"participantId": heidi_pid}});
    assert_eq!(crate::transfer::transfer(&server, &token, &id, body).await.0, 202);
    expect_transfer_failed(&mut bot, &id, "no NOTIFY before the deadline").await;
    let (_, list) = server.graph(reqwest::Method::GET, &format!("/v1.0/communications/calls/{id}/participants"), &token, None).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(3), "Heidi is still in the call: {list}");
    bot_hangs_up(&server, &mut bot, &token, &id).await;
    let (code, screen) = heidi.await.unwrap();
    assert_eq!(code, 0, "Heidi's phone (held, REFER, taken off hold, BYE):\n{screen}");
}
