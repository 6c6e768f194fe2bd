#![allow(clippy::unwrap_used)]
//! The SIP endpoint through its public, sans-IO interface: request bytes in, response bytes out, in
//! virtual time. One `check` per exchange: the status line and the headers that matter.

use std::net::SocketAddr;

use switchboard_sip::digest::{Nonces, expected_response};
use switchboard_sip::endpoint::{Outcome, Reply};
use switchboard_sip::header::authorization::Credentials;
use switchboard_sip::message::{Message, StartLine};
use switchboard_sip::{Account, Endpoint, Settings, Transport};

const PHONE: &str = "127.0.0.1:5071";
const SECRET: &str = "nonce-secret";
const TRUNK: &str = "127.0.0.1:5090";

fn endpoint() -> Endpoint {
    endpoint_with(false)
}

/// The endpoint, holding the transferee before a REFER or not.
fn endpoint_with(hold_before_refer: bool) -> Endpoint {
    Endpoint::new(Settings {
        domain: "sb.test".into(),
        aliases: vec!["127.0.0.1".into()],
        accounts: vec![
            Account { username: "heidi".into(), password: "pw-heidi".into() },
            Account { username: "alex".into(), password: "pw-alex".into() },
        ],
        nonce_secret: SECRET.into(),
        trunks: vec![TRUNK.parse().unwrap()],
        hold_before_refer,
        bridge_when_refer_refused: hold_before_refer,
        blind_when_replaces_refused: hold_before_refer,
        comfort_audio: switchboard_sip::rtp::ComfortAudio::Silence,
    })
}

/// A request from the phone; `extra` headers go last.
fn request(method: &str, branch: &str, cseq: u32, to_user: &str, extra: &[&str]) -> String {
    let mut s = format!(
        "{method} sip:sb.test SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{to_user}@sb.test>;tag=ph1\r\nTo: <sip:{to_user}@sb.test>\r\nCall-ID: reg-1\r\nCSeq: {cseq} {method}\r\n"
    );
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// Digest credentials for `user` with `password`, answering `nonce`.
fn authorization(user: &str, password: &str, nonce: &str) -> String {
    let mut c = Credentials {
        username: user.into(),
        realm: "sb.test".into(),
        nonce: nonce.into(),
        uri: "sip:sb.test".into(),
        qop: Some("auth".into()),
        nc: Some("00000001".into()),
        cnonce: Some("c0ffee".into()),
        ..Credentials::default()
    };
    c.response = expected_response(&c, password, "REGISTER");
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"sb.test\", nonce=\"{nonce}\", uri=\"sip:sb.test\", response=\"{}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc=00000001",
        c.response
    )
}

/// Sends `req` at `now`; checks the status line and that each `(header, value)` is in the response.
fn check(ep: &mut Endpoint, req: &str, now: u64, status: &str, headers: &[(&str, &str)]) -> Message {
    let from: SocketAddr = PHONE.parse().unwrap();
    let (reply, outcome) = ep.receive(req.as_bytes(), from, Transport::Udp, now);
    let Some(Reply { to, bytes }) = reply else { panic!("no answer to {req:?}: {outcome:?}") };
    assert_eq!(to, from, "answered where the request came from");
    let msg = Message::parse(&bytes, true).unwrap();
    let StartLine::Response { code, reason } = &msg.start else { panic!("not a response") };
    assert_eq!(format!("{code} {reason}"), status, "{msg}");
    for (name, value) in headers {
        let got = msg.headers.all(name);
        assert!(got.iter().any(|g| g == value), "{name}: want {value:?}, got {got:?} in\n{msg}");
    }
    msg
}

fn nonce_of(msg: &Message) -> String {
    let challenge = msg.headers.get("WWW-Authenticate").unwrap();
    challenge.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

#[test]
fn register_with_digest_then_unregister() {
    let mut ep = endpoint();
    let contact = "Contact: <sip:heidi@127.0.0.1:5071>";
    let challenge = check(&mut ep, &request("REGISTER", "1", 1, "heidi", &[contact]), 0, "401 Unauthorized", &[]);
    let nonce = nonce_of(&challenge);
    assert_eq!(
        challenge.headers.get("WWW-Authenticate").unwrap(),
        format!("Digest realm=\"sb.test\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"")
    );
    assert_eq!(challenge.headers.get("Via").unwrap(), format!("SIP/2.0/UDP {PHONE};branch=z9hG4bK1;rport=5071"));
    assert!(challenge.headers.get("To").unwrap().contains(";tag="), "a final answer tags To");

    let auth = authorization("heidi", "pw-heidi", &nonce);
    check(
        &mut ep,
        &request("REGISTER", "2", 2, "heidi", &[contact, &auth]),
        1_000,
        "200 OK",
        &[("Contact", "<sip:heidi@127.0.0.1:5071>;expires=3600")],
    );
    assert_eq!(ep.registrar.contacts("heidi", 1_000), ["sip:heidi@127.0.0.1:5071"]);
    assert_eq!(ep.registrar.contacts("heidi", 1_000 + 3_600_000), Vec::<String>::new(), "bindings expire");

    // A contact somewhere else than where the REGISTER came from is refused (no relaying through us),
    // and credentials for another URI are refused by name.
    let auth = authorization("heidi", "pw-heidi", &nonce);
    check(
        &mut ep,
        &request("REGISTER", "x", 3, "heidi", &["Contact: <sip:heidi@10.0.0.7:5060>", &auth]),
        1_500,
        "403 Forbidden (contact sip:heidi@10.0.0.7:5060 is not at 127.0.0.1, where the REGISTER came from)",
        &[],
    );
    let other_uri = auth.replace("uri=\"sip:sb.test\"", "uri=\"sip:other.test\"");
    check(
        &mut ep,
        &request("REGISTER", "y", 3, "heidi", &[contact, &other_uri]),
        1_500,
        "400 Bad Request (the Authorization uri 'sip:other.test' is not the Request-URI)",
        &[],
    );
    // Too short; then every binding removed with `*`.
    let auth = authorization("heidi", "pw-heidi", &nonce);
    check(
        &mut ep,
        &request("REGISTER", "3", 3, "heidi", &["Contact: <sip:heidi@10.0.0.9>;expires=30", &auth]),
        2_000,
        "423 Interval Too Brief",
        &[("Min-Expires", "60")],
    );
    check(&mut ep, &request("REGISTER", "4", 4, "heidi", &["Contact: *", "Expires: 0", &auth]), 3_000, "200 OK", &[]);
    assert!(ep.registrar.contacts("heidi", 3_000).is_empty());
    check(
        &mut ep,
        &request("REGISTER", "5", 5, "heidi", &["Contact: *", &auth]),
        4_000,
        "400 Bad Request (Contact: * must be alone, with Expires: 0)",
        &[],
    );
}

#[test]
fn wrong_credentials_stale_nonces_and_other_peoples_names() {
    let mut ep = endpoint();
    let nonce = Nonces::new(SECRET).mint(0, "127.0.0.1");
    let contact = "Contact: <sip:x@127.0.0.1:5071>";
    let wrong = authorization("heidi", "guess", &nonce);
    check(&mut ep, &request("REGISTER", "1", 1, "heidi", &[contact, &wrong]), 10, "403 Forbidden (wrong user name or password)", &[]);
    let nobody = authorization("mallory", "pw", &nonce);
    check(&mut ep, &request("REGISTER", "2", 2, "mallory", &[contact, &nobody]), 10, "403 Forbidden (wrong user name or password)", &[]);
    let alex = authorization("alex", "pw-alex", &nonce);
    check(&mut ep, &request("REGISTER", "3", 3, "heidi", &[contact, &alex]), 10, "403 Forbidden ('alex' may not register 'heidi')", &[]);
    let late = check(&mut ep, &request("REGISTER", "4", 4, "alex", &[contact, &alex]), 10 * 60 * 1000, "401 Unauthorized", &[]);
    assert!(late.headers.get("WWW-Authenticate").unwrap().ends_with(", stale=true"), "{late}");
    let forged = authorization("alex", "pw-alex", "0.0000");
    let again = check(&mut ep, &request("REGISTER", "5", 5, "alex", &[contact, &forged]), 20, "401 Unauthorized", &[]);
    assert!(!again.headers.get("WWW-Authenticate").unwrap().contains("stale"));
    let mut other_domain = request("REGISTER", "6", 6, "alex", &[contact]);
    other_domain = other_domain.replace("To: <sip:alex@sb.test>", "To: <sip:alex@elsewhere.test>");
    check(&mut ep, &other_domain, 20, "404 Not Found (elsewhere.test is not this registrar's domain sb.test)", &[]);
}

#[test]
fn a_retransmission_gets_the_same_answer_until_timer_j() {
    let mut ep = endpoint();
    let req = request("REGISTER", "r", 1, "heidi", &[]);
    let from: SocketAddr = PHONE.parse().unwrap();
    let (first, _) = ep.receive(req.as_bytes(), from, Transport::Udp, 0);
    let (again, outcome) = ep.receive(req.as_bytes(), from, Transport::Udp, 31_999);
    assert_eq!((again, outcome), (first.clone(), Outcome::Retransmitted), "same nonce, same bytes");
    let (later, outcome) = ep.receive(req.as_bytes(), from, Transport::Udp, 32_000);
    assert_eq!(outcome, Outcome::Answered(401));
    assert_ne!(later, first, "a new transaction after Timer J: a new nonce");
    // Over TCP nothing is kept: each copy is answered anew.
    let (_, outcome) = ep.receive(req.as_bytes(), from, Transport::Tcp, 32_001);
    assert_eq!(outcome, Outcome::Answered(401));
}

#[test]
fn other_methods_and_broken_messages() {
    let mut ep = endpoint();
    check(&mut ep, &request("OPTIONS", "o", 1, "heidi", &[]), 0, "200 OK", &[("Allow", "REFER"), ("Accept", "application/sdp")]);
    check(&mut ep, &request("INVITE", "i", 1, "heidi", &[]), 0, "401 Unauthorized", &[]);
    let from: SocketAddr = PHONE.parse().unwrap();
    let (tcp, _) = ep.receive(request("INVITE", "t", 1, "heidi", &[]).as_bytes(), from, Transport::Tcp, 0);
    assert_eq!(status_lines(&[tcp.unwrap()]), ["SIP/2.0 401 Unauthorized"], "calls over TCP are challenged like any other");
    let ack = request("ACK", "i", 1, "heidi", &[]);
    assert_eq!(ep.receive(ack.as_bytes(), from, Transport::Udp, 1), (None, Outcome::Absorbed));
    check(&mut ep, &request("BYE", "b", 2, "heidi", &[]), 0, "481 Call/Transaction Does Not Exist", &[]);
    check(&mut ep, &request("PUBLISH", "p", 1, "heidi", &[]), 0, "405 Method Not Allowed", &[("Allow", "INVITE")]);
    check(
        &mut ep,
        &request("OPTIONS", "m", 1, "heidi", &[]).replace("Max-Forwards: 70", "Max-Forwards: x"),
        0,
        "400 Bad Request (Max-Forwards is not a number)",
        &[],
    );
    check(
        &mut ep,
        &request("OPTIONS", "c", 1, "heidi", &[]).replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS"),
        0,
        "400 Bad Request (CSeq 'one OPTIONS': the number is not below 2^31)",
        &[],
    );
    check(
        &mut ep,
        &request("OPTIONS", "d", 1, "heidi", &[]).replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
        0,
        "400 Bad Request (CSeq method INVITE is not the request's method OPTIONS)",
        &[],
    );
    check(
        &mut ep,
        &request("OPTIONS", "e", 1, "heidi", &[]).replace("Content-Length: 0", "Content-Length: 9"),
        0,
        "400 Bad Request (Content-Length says 9 bytes, but the body has 0)",
        &[],
    );
    for junk in ["", "\r\n\r\n", "hello", "SIP/2.0 200 OK\r\n\r\n"] {
        let (reply, _) = ep.receive(junk.as_bytes(), from, Transport::Udp, 0);
        assert_eq!(reply, None, "{junk:?} gets no answer");
    }
    assert!(matches!(ep.receive(b"GARBAGE\r\n\r\n", from, Transport::Udp, 0).1, Outcome::Dropped(_)));
}

#[test]
fn responses_go_where_rfc_3581_says() {
    let mut ep = endpoint();
    // Without rport: to the source address, at the Via's port; `received` names the real source.
    let req =
        request("OPTIONS", "v", 1, "heidi", &[]).replace(&format!("{PHONE};branch=z9hG4bKv;rport"), "phone.test:5099;branch=z9hG4bKv");
    let (reply, _) = ep.receive(req.as_bytes(), PHONE.parse().unwrap(), Transport::Udp, 0);
    let reply = reply.unwrap();
    assert_eq!(reply.to, "127.0.0.1:5099".parse().unwrap());
    let msg = Message::parse(&reply.bytes, true).unwrap();
    assert_eq!(msg.headers.get("Via").unwrap(), "SIP/2.0/UDP phone.test:5099;branch=z9hG4bKv;received=127.0.0.1");
}

/// An INVITE from Heidi's phone to `to`, with `extra` headers (credentials).
fn invite(branch: &str, cseq: u32, to: &str, extra: &[&str]) -> String {
    invite_offering(
        branch,
        cseq,
        to,
        extra,
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0\r\n",
    )
}

fn invite_offering(branch: &str, cseq: u32, to: &str, extra: &[&str], sdp: &str) -> String {
    let mut s = format!(
        "INVITE sip:{to}@sb.test SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:{to}@sb.test>\r\nCall-ID: call-1\r\nCSeq: {cseq} INVITE\r\nContact: <sip:heidi@{PHONE}>\r\n"
    );
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()));
    s
}

fn status_lines(replies: &[Reply]) -> Vec<String> {
    replies.iter().map(|r| String::from_utf8_lossy(&r.bytes).lines().next().unwrap_or_default().to_owned()).collect()
}

/// Digest credentials for an INVITE (the method is part of the hash).
fn invite_authorization(nonce: &str) -> String {
    let mut c = Credentials {
        username: "heidi".into(),
        realm: "sb.test".into(),
        nonce: nonce.into(),
        uri: "sip:14255550100@sb.test".into(),
        ..Credentials::default()
    };
    c.response = expected_response(&c, "pw-heidi", "INVITE");
    format!(
        "Authorization: Digest username=\"heidi\", realm=\"sb.test\", nonce=\"{nonce}\", uri=\"{}\", response=\"{}\"",
        c.uri, c.response
    )
}

#[test]
fn a_phone_call_from_invite_to_bye_with_retransmissions() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let from: SocketAddr = PHONE.parse().unwrap();
    // Unauthenticated: challenged, and nothing reaches the owner.
    let (reply, _) = ep.receive(invite("a", 1, "14255550100", &[]).as_bytes(), from, Transport::Udp, 0);
    let challenge = Message::parse(&reply.unwrap().bytes, true).unwrap();
    assert!(matches!(challenge.start, StartLine::Response { code: 401, .. }));
    assert!(ep.drain_events().is_empty());
    let auth = invite_authorization(&nonce_of(&challenge));
    let (reply, _) = ep.receive(invite("b", 2, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 10);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 100 Trying"]);
    let events = ep.drain_events();
    let [Event::Invite { graph_id, from_user, to_user, trunk: false }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((from_user.as_str(), to_user.as_str()), ("heidi", "14255550100"));
    assert!(ep.holds(graph_id));
    ep.ringing(graph_id);
    assert_eq!(status_lines(&ep.drain_outbox()), ["SIP/2.0 180 Ringing"]);
    // A retransmitted INVITE while ringing gets the 180 again (it may have been lost); the same call.
    let (again, outcome) = ep.receive(invite("b", 2, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 20);
    assert_eq!((status_lines(&[again.unwrap()]), outcome), (vec!["SIP/2.0 180 Ringing".to_owned()], Outcome::Retransmitted));
    assert!(ep.drain_events().is_empty(), "no second call");

    // Answered: the 200 (PCMA, as offered first) goes again at T1, 2·T1… until the ACK.
    ep.answer_call(graph_id, "127.0.0.1:20000".parse().unwrap(), 100);
    let ok = ep.drain_outbox();
    assert_eq!(status_lines(&ok), ["SIP/2.0 200 OK"]);
    let body = String::from_utf8_lossy(&ok[0].bytes).into_owned();
    assert!(body.contains("m=audio 20000 RTP/AVP 8\r\n") && body.contains("Contact: <sip:switchboard@127.0.0.1:5060>"), "{body}");
    ep.poll(599);
    assert!(ep.drain_outbox().is_empty());
    ep.poll(600);
    assert_eq!(status_lines(&ep.drain_outbox()), ["SIP/2.0 200 OK"], "sent again at T1");
    ep.poll(1_599);
    assert!(ep.drain_outbox().is_empty(), "then after 2·T1");
    ep.poll(1_600);
    assert_eq!(ep.drain_outbox().len(), 1);
    let ack = "ACK sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKack\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n";
    ep.receive(ack.as_bytes(), from, Transport::Udp, 1_700);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: graph_id.clone(), event: CallEvent::Connected }]);
    ep.poll(10_000);
    assert!(ep.drain_outbox().is_empty(), "the ACK stopped the retransmissions");

    // The phone hangs up.
    let bye = ack.replace("ACK sip", "BYE sip").replace("CSeq: 2 ACK", "CSeq: 3 BYE").replace("z9hG4bKack", "z9hG4bKbye");
    let (reply, _) = ep.receive(bye.as_bytes(), from, Transport::Udp, 11_000);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: graph_id.clone(), event: CallEvent::HungUp }]);
    ep.poll(11_001);
    assert!(!ep.holds(graph_id), "the call is forgotten");
}

#[test]
fn a_phone_that_never_acks_is_hung_up_and_one_that_cancels_hears_487() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let mut ep = endpoint();
    let from: SocketAddr = PHONE.parse().unwrap();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite("c", 1, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 0);
    let Some(Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), 0);
    ep.drain_outbox();
    ep.poll(32_000);
    assert_eq!(status_lines(&ep.drain_outbox()), ["BYE sip:heidi@127.0.0.1:5071 SIP/2.0"], "64·T1 without an ACK: BYE");
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: graph_id.clone(), event: CallEvent::Lost }]);

    let mut ep = endpoint();
    ep.receive(invite("d", 1, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 0);
    let Some(Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    let cancel = invite("d", 1, "14255550100", &[]).replace("INVITE sip", "CANCEL sip").replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let (reply, _) = ep.receive(cancel.as_bytes(), from, Transport::Udp, 5);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["SIP/2.0 487 Request Terminated"]);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id, event: CallEvent::HungUp }]);
}

#[test]
fn sip_calls_are_told_apart_by_their_id() {
    use switchboard_sip::endpoint::is_sip_call;
    let mut ep = endpoint();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite("e", 1, "14255550100", &[&auth]).as_bytes(), PHONE.parse().unwrap(), Transport::Udp, 0);
    let Some(switchboard_sip::Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    assert!(is_sip_call(&graph_id), "{graph_id}");
    assert!(!is_sip_call("6f3c2a14-1b2d-4c5e-8f90-0123456789ab"), "the API's and the sim's ids are version 4");
    assert!(!is_sip_call("short"));
}

/// A confirmed call from Heidi's phone; returns the endpoint and the Graph id.
fn confirmed_call() -> (Endpoint, String) {
    confirmed_call_on(endpoint())
}

fn confirmed_call_on(mut ep: Endpoint) -> (Endpoint, String) {
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let from: SocketAddr = PHONE.parse().unwrap();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite("t", 1, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 0);
    let Some(switchboard_sip::Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), 0);
    let ack = "ACK sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKack\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    ep.receive(ack.as_bytes(), from, Transport::Udp, 1);
    ep.drain_outbox();
    ep.drain_events();
    (ep, graph_id)
}

/// The phone's answer to our request `req` (status `code`), or its NOTIFY with a sipfrag `status`.
fn answer_to(req: &[u8], code: u16) -> String {
    let msg = Message::parse(req, true).unwrap();
    let mut s = format!("SIP/2.0 {code} Whatever\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        s.push_str(&format!("{name}: {}\r\n", msg.headers.get(name).unwrap()));
    }
    s + "Content-Length: 0\r\n\r\n"
}

fn notify(cseq: u32, status: &str) -> String {
    let frag = format!("SIP/2.0 {status}\r\n");
    format!(
        "NOTIFY sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKn{cseq}\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\n\
         To: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: {cseq} NOTIFY\r\nEvent: refer\r\nContent-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{frag}",
        frag.len()
    )
}

#[test]
fn a_blind_transfer_by_refer_ends_as_the_notify_says() {
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, Progress};
    let from: SocketAddr = PHONE.parse().unwrap();
    let transfer = |graph_id: &str, progress| Event::Call {
        graph_id: graph_id.to_owned(),
        event: CallEvent::Transfer { transfer_id: "op-1".into(), progress },
    };

    // Taken (202), trying, then 200: accepted and completed at once, and we leave with BYE.
    let (mut ep, id) = confirmed_call();
    assert!(ep.refer(&id, "op-1", "sip:alex@127.0.0.1:5072", "sip:bot@sb.test", 10));
    let refer = ep.drain_outbox().remove(0);
    let text = String::from_utf8_lossy(&refer.bytes).into_owned();
    assert!(text.starts_with("REFER sip:heidi@127.0.0.1:5071 SIP/2.0\r\n"), "{text}");
    assert!(text.contains("Refer-To: <sip:alex@127.0.0.1:5072>\r\n") && text.contains("Referred-By: <sip:bot@sb.test>\r\n"), "{text}");
    assert!(!ep.refer(&id, "op-2", "sip:x@y", "sip:bot@sb.test", 11), "one transfer at a time");
    ep.receive(answer_to(&refer.bytes, 202).as_bytes(), from, Transport::Udp, 20);
    assert!(ep.drain_events().is_empty(), "the phone taking the REFER is no news for Graph");
    ep.receive(notify(2, "100 Trying").as_bytes(), from, Transport::Udp, 30);
    assert!(ep.drain_events().is_empty());
    let (reply, _) = ep.receive(notify(3, "200 OK").as_bytes(), from, Transport::Udp, 40);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Accepted), transfer(&id, Progress::Completed)]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["BYE sip:heidi@127.0.0.1:5071 SIP/2.0"]);

    // The target was busy.
    let (mut ep, id) = confirmed_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    ep.drain_outbox();
    ep.receive(notify(2, "486 Busy Here").as_bytes(), from, Transport::Udp, 30);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Failed(486))]);
    assert!(ep.drain_outbox().is_empty(), "the call stays");

    // The phone refuses REFER; or never answers it (Timer F).
    let (mut ep, id) = confirmed_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    let refer = ep.drain_outbox().remove(0);
    ep.receive(answer_to(&refer.bytes, 405).as_bytes(), from, Transport::Udp, 20);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Refused(405))]);
    let (mut ep, id) = confirmed_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    ep.drain_outbox();
    ep.poll(510);
    assert_eq!(status_lines(&ep.drain_outbox()), ["REFER sip:heidi@127.0.0.1:5071 SIP/2.0"], "sent again at T1");
    ep.poll(10 + 32_000);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Refused(408))]);

    // The engine gave up (its deadline): a later failure changes nothing; a later success means the
    // phone is with the target after all, so the bot's call ends (BYE) rather than staying with nobody.
    let (mut ep, id) = confirmed_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    assert!(ep.abandon_transfer(&id, "op-1", 20));
    assert!(!ep.abandon_transfer(&id, "op-1", 20), "once");
    let (reply, _) = ep.receive(notify(2, "486 Busy Here").as_bytes(), from, Transport::Udp, 30);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"], "the NOTIFY is still answered");
    assert!(ep.drain_events().is_empty());
    let (mut ep, id) = confirmed_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    ep.drain_outbox();
    assert!(ep.abandon_transfer(&id, "op-1", 20));
    ep.receive(notify(2, "200 OK").as_bytes(), from, Transport::Udp, 30);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: id.clone(), event: CallEvent::HungUp }]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["BYE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
}

#[test]
fn requests_are_proxied_only_to_registered_contacts_and_responses_find_their_way_back() {
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let nonce = Nonces::new(SECRET).mint(0, "127.0.0.1");
    // Alex's phone registers at 127.0.0.1:5072 (the REGISTER comes from there), Heidi's at her address.
    let reg = request("REGISTER", "r", 1, "alex", &["Contact: <sip:alex-x@127.0.0.1:5072>", &authorization("alex", "pw-alex", &nonce)]);
    let (reply, _) = ep.receive(reg.as_bytes(), "127.0.0.1:5072".parse().unwrap(), Transport::Udp, 10);
    assert!(String::from_utf8_lossy(&reply.unwrap().bytes).starts_with("SIP/2.0 200 OK"));
    let from: SocketAddr = PHONE.parse().unwrap();
    // Not registered yet: Heidi's phone cannot use the proxy.
    let early = format!(
        "INVITE sip:alex-x@127.0.0.1:5072 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKp0\r\nMax-Forwards: 70\r\nFrom: <sip:heidi@sb.test>;tag=h\r\n\
         To: <sip:alex-x@127.0.0.1:5072>\r\nCall-ID: p0\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let (reply, _) = ep.receive(early.as_bytes(), from, Transport::Udp, 15);
    assert_eq!(reply.unwrap().to, from, "answered (challenged), not relayed");
    check(
        &mut ep,
        &request("REGISTER", "rh", 2, "heidi", &[&format!("Contact: <sip:heidi@{PHONE}>"), &authorization("heidi", "pw-heidi", &nonce)]),
        16,
        "200 OK",
        &[],
    );
    let invite_to = |uri: &str| {
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKp1\r\nMax-Forwards: 70\r\nFrom: <sip:heidi@sb.test>;tag=h\r\n\
             To: <{uri}>\r\nCall-ID: px\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // To the registered contact: forwarded there, our Via on top, Max-Forwards one less.
    let (reply, _) = ep.receive(invite_to("sip:alex-x@127.0.0.1:5072").as_bytes(), from, Transport::Udp, 20);
    let Reply { to, bytes } = reply.unwrap();
    assert_eq!(to, "127.0.0.1:5072".parse().unwrap());
    let fwd = Message::parse(&bytes, true).unwrap();
    let vias = fwd.headers.all("Via");
    assert!(vias[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK"), "{fwd}");
    assert_eq!(vias[1], format!("SIP/2.0/UDP {PHONE};branch=z9hG4bKp1;rport=5071"));
    assert_eq!(fwd.headers.get("Max-Forwards"), Some("69"));
    // Alex's answer comes back to us and goes on to Heidi's phone, without our Via.
    let answer = format!(
        "SIP/2.0 180 Ringing\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:heidi@sb.test>;tag=h\r\nTo: <sip:alex-x@127.0.0.1:5072>;tag=a\r\nCall-ID: px\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    let (reply, _) = ep.receive(answer.as_bytes(), "127.0.0.1:5072".parse().unwrap(), Transport::Udp, 30);
    let Reply { to, bytes } = reply.unwrap();
    assert_eq!(to, from);
    assert_eq!(Message::parse(&bytes, true).unwrap().headers.all("Via"), [vias[1]]);
    // A "response" we did not ask for (our address on top, a victim below) is not reflected.
    let forged = answer.replace(vias[0], "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKforged");
    let (reply, outcome) = ep.receive(forged.as_bytes(), "10.9.9.9:5060".parse().unwrap(), Transport::Udp, 35);
    assert_eq!(reply, None);
    assert!(matches!(outcome, Outcome::Dropped(_)), "{outcome:?}");
    // Anywhere else: not relayed. An unknown address is a call to the bot (challenged here), never forwarded.
    let (reply, _) = ep.receive(invite_to("sip:victim@127.0.0.1:6000").as_bytes(), from, Transport::Udp, 40);
    let Reply { to, bytes } = reply.unwrap();
    assert_eq!(to, from, "answered, not relayed");
    assert!(String::from_utf8_lossy(&bytes).starts_with("SIP/2.0 401"));
}

/// Where Alex's phone is: registered at 127.0.0.1:5072.
fn alex_phone() -> switchboard_sip::endpoint::Destination {
    switchboard_sip::endpoint::Destination {
        request_uri: "sip:alex@127.0.0.1:5072".into(),
        to: "<sip:alex@sb.test>".into(),
        peer: "127.0.0.1:5072".parse().unwrap(),
        headers: vec![],
        transport: "UDP",
        connect: false,
    }
}

/// The bot calls Alex's phone at 127.0.0.1:5072; returns the endpoint, the INVITE sent and the Graph id.
fn outgoing_call() -> (Endpoint, Message, String) {
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let (invite, id) = call_alex(&mut ep);
    (ep, invite, id)
}

/// The bot calls Alex's phone from `ep`; returns the INVITE sent and the Graph id.
fn call_alex(ep: &mut Endpoint) -> (Message, String) {
    let id = switchboard_sip::endpoint::new_call_id();
    let destination = alex_phone();
    ep.place(&id, "\"Reception\" <sip:+14255550100@sb.test>", destination, "127.0.0.1:20000".parse().unwrap(), 0);
    let sent = ep.drain_outbox();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "127.0.0.1:5072".parse().unwrap());
    (Message::parse(&sent[0].bytes, true).unwrap(), id)
}

/// The phone's response to `req`, with its tag and Contact, and `body`.
fn phone_response(req: &Message, code: u16, body: &str) -> String {
    let mut s = format!("SIP/2.0 {code} Whatever\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        s.push_str(&format!("{name}: {}\r\n", req.headers.get(name).unwrap()));
    }
    let to = req.headers.get("To").unwrap();
    let to = if code > 100 && !to.contains("tag=") { format!("{to};tag=alex1") } else { to.to_owned() };
    s.push_str(&format!("To: {to}\r\nContact: <sip:alex@127.0.0.1:5072>\r\nRecord-Route: <sip:proxy.test;lr>\r\n"));
    if body.is_empty() {
        s + "Content-Length: 0\r\n\r\n"
    } else {
        s + &format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }
}

#[test]
fn the_bot_calls_a_phone_which_rings_answers_and_hangs_up() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let (mut ep, invite, id) = outgoing_call();
    assert!(ep.holds(&id));
    assert_eq!(invite.start, StartLine::Request { method: "INVITE".into(), uri: "sip:alex@127.0.0.1:5072".into() });
    let text = invite.to_string();
    for want in [
        "To: <sip:alex@sb.test>\r\n",
        "CSeq: 1 INVITE\r\n",
        "Contact: <sip:switchboard@127.0.0.1:5060>\r\n",
        "m=audio 20000 RTP/AVP 0 8 101\r\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(invite.headers.get("From").unwrap().starts_with("\"Reception\" <sip:+14255550100@sb.test>;tag="), "{text}");
    // Timer A: again at T1 until something comes back.
    ep.poll(500);
    assert_eq!(status_lines(&ep.drain_outbox()), ["INVITE sip:alex@127.0.0.1:5072 SIP/2.0"]);
    ep.receive(phone_response(&invite, 100, "").as_bytes(), alex, Transport::Udp, 600);
    ep.poll(1_600);
    assert!(ep.drain_outbox().is_empty(), "a 100 stops Timer A");
    assert!(ep.drain_events().is_empty(), "a 100 is no news");
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 700);
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 710);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: id.clone(), event: CallEvent::Ringing }], "ringing once");

    // Answered: ACK at once, in the dialog (their tag, their Contact, the route set).
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    let ok = phone_response(&invite, 200, sdp);
    ep.receive(ok.as_bytes(), alex, Transport::Udp, 800);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: id.clone(), event: CallEvent::Connected }]);
    let ack = ep.drain_outbox();
    assert_eq!(status_lines(&ack), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0"]);
    let ack_msg = Message::parse(&ack[0].bytes, true).unwrap();
    assert_eq!(ack_msg.headers.get("CSeq"), Some("1 ACK"));
    assert_eq!(ack_msg.headers.get("To"), Some("<sip:alex@sb.test>;tag=alex1"));
    assert_eq!(ack_msg.headers.get("Route"), Some("<sip:proxy.test;lr>"));
    assert_ne!(ack_msg.headers.get("Via"), invite.headers.get("Via"), "the ACK to a 2xx is a transaction of its own");
    // The 200 again (our ACK was lost): the same ACK again, and no news.
    ep.receive(ok.as_bytes(), alex, Transport::Udp, 1_300);
    assert_eq!(ep.drain_outbox(), ack);
    assert!(ep.drain_events().is_empty());

    // Alex hangs up.
    let bye = format!(
        "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKab\r\nFrom: <sip:alex@sb.test>;tag=alex1\r\n\
         To: {}\r\nCall-ID: {}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.headers.get("From").unwrap(),
        invite.headers.get("Call-ID").unwrap()
    );
    let (reply, _) = ep.receive(bye.as_bytes(), alex, Transport::Udp, 2_000);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: id.clone(), event: CallEvent::HungUp }]);
    ep.poll(2_001);
    assert!(!ep.holds(&id));
}

#[test]
fn a_call_the_phone_refuses_never_reaches_or_the_bot_gives_up_on() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let refused = |id: &str, code| Event::Call { graph_id: id.to_owned(), event: CallEvent::Refused(code) };

    // Busy: the 486 is ACKed (same branch as the INVITE), again if it comes again, then forgotten.
    let (mut ep, invite, id) = outgoing_call();
    let busy = phone_response(&invite, 486, "");
    ep.receive(busy.as_bytes(), alex, Transport::Udp, 100);
    assert_eq!(ep.drain_events(), [refused(&id, 486)]);
    let ack = ep.drain_outbox();
    assert_eq!(status_lines(&ack), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0"]);
    let ack_msg = Message::parse(&ack[0].bytes, true).unwrap();
    assert_eq!(ack_msg.headers.get("Via"), invite.headers.get("Via"));
    assert_eq!(ack_msg.headers.get("To"), Some("<sip:alex@sb.test>;tag=alex1"));
    ep.receive(busy.as_bytes(), alex, Transport::Udp, 600);
    assert_eq!(ep.drain_outbox(), ack, "the 486 again: the ACK again");
    assert!(ep.drain_events().is_empty(), "and no news");
    ep.poll(100 + 32_000);
    assert!(!ep.holds(&id), "forgotten after Timer D");

    // Nobody there: Timer B after 64·T1, a 408 for Graph.
    let (mut ep, _, id) = outgoing_call();
    ep.poll(31_999);
    ep.drain_outbox();
    assert!(ep.drain_events().is_empty());
    ep.poll(32_000);
    assert_eq!(ep.drain_events(), [refused(&id, 408)]);

    // The bot gives up before anything came back: the CANCEL waits for a 1xx (RFC 3261 §9.1), then
    // goes; the 487 is ACKed; no news, the bot knows already.
    let (mut ep, invite, id) = outgoing_call();
    ep.hang_up(&id, 50);
    assert!(ep.drain_outbox().is_empty());
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 100);
    let cancel = ep.drain_outbox();
    assert_eq!(status_lines(&cancel), ["CANCEL sip:alex@127.0.0.1:5072 SIP/2.0"]);
    let cancel = Message::parse(&cancel[0].bytes, true).unwrap();
    assert_eq!(cancel.headers.get("Via"), invite.headers.get("Via"));
    assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
    ep.receive(phone_response(&cancel, 200, "").as_bytes(), alex, Transport::Udp, 110);
    ep.receive(phone_response(&invite, 487, "").as_bytes(), alex, Transport::Udp, 120);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0"]);
    assert!(ep.drain_events().is_empty());

    // It answered as we gave up: ACK, then BYE.
    let (mut ep, invite, id) = outgoing_call();
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 10);
    ep.drain_events();
    ep.hang_up(&id, 50);
    assert_eq!(status_lines(&ep.drain_outbox()), ["CANCEL sip:alex@127.0.0.1:5072 SIP/2.0"]);
    ep.receive(phone_response(&invite, 200, "").as_bytes(), alex, Transport::Udp, 60);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0", "BYE sip:alex@127.0.0.1:5072 SIP/2.0"]);
    assert!(ep.drain_events().is_empty());
}

#[test]
fn a_trunk_calls_without_digest_and_nobody_else_does() {
    use switchboard_sip::Event;
    let trunk: SocketAddr = TRUNK.parse().unwrap();
    let from_trunk = invite("tr", 1, "14255550100", &[]).replace("<sip:heidi@sb.test>", "<sip:+15551230000@carrier.test>");
    let mut ep = endpoint();
    let (reply, _) = ep.receive(from_trunk.as_bytes(), trunk, Transport::Udp, 0);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 100 Trying"]);
    let events = ep.drain_events();
    let [Event::Invite { from_user, to_user, trunk: true, .. }] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((from_user.as_str(), to_user.as_str()), ("+15551230000", "14255550100"));
    // The same INVITE from anywhere else is challenged.
    let mut ep = endpoint();
    let (reply, _) = ep.receive(from_trunk.as_bytes(), PHONE.parse().unwrap(), Transport::Udp, 0);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 401 Unauthorized"]);
    assert!(ep.drain_events().is_empty());
}

#[test]
fn the_transferee_is_held_before_the_refer_and_resumed_when_the_transfer_fails() {
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, Progress};
    let from: SocketAddr = PHONE.parse().unwrap();
    let held_call = || confirmed_call_on(endpoint_with(true));
    // The hold goes first (sendonly, a newer SDP version); the REFER once the phone answers it.
    let (mut ep, id) = held_call();
    assert!(ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10));
    let hold = ep.drain_outbox().remove(0);
    let hold = Message::parse(&hold.bytes, true).unwrap();
    assert_eq!(hold.start, StartLine::Request { method: "INVITE".into(), uri: "sip:heidi@127.0.0.1:5071".into() });
    let body = String::from_utf8_lossy(&hold.body).into_owned();
    assert!(body.contains("a=sendonly\r\n") && body.contains(" 2 IN IP4 127.0.0.1\r\n"), "{body}");
    assert!(!ep.refer(&id, "op-2", "sip:x@y", "sip:bot@sb.test", 11), "one transfer at a time");
    ep.poll(510);
    assert_eq!(status_lines(&ep.drain_outbox()), ["INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"], "sent again until answered");
    let recvonly = "v=0\r\no=p 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n";
    let ok = phone_response(&hold, 200, recvonly);
    ep.receive(ok.as_bytes(), from, Transport::Udp, 600);
    let sent = ep.drain_outbox();
    assert_eq!(status_lines(&sent), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0", "REFER sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    let ack = Message::parse(&sent[0].bytes, true).unwrap();
    assert_eq!(ack.headers.get("CSeq").unwrap(), format!("{} ACK", hold.headers.get("CSeq").unwrap().split(' ').next().unwrap()));
    ep.receive(ok.as_bytes(), from, Transport::Udp, 700);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0"], "the 200 again: the ACK again");

    // The target is busy: the failure is reported, and the phone is taken off hold.
    ep.receive(notify(5, "486 Busy Here").as_bytes(), from, Transport::Udp, 800);
    assert_eq!(
        ep.drain_events(),
        [Event::Call { graph_id: id.clone(), event: CallEvent::Transfer { transfer_id: "op-1".into(), progress: Progress::Failed(486) } }]
    );
    let resume = ep.drain_outbox();
    assert_eq!(status_lines(&resume), ["INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    let resume = Message::parse(&resume[0].bytes, true).unwrap();
    assert!(String::from_utf8_lossy(&resume.body).contains("a=sendrecv\r\n"));
    ep.receive(phone_response(&resume, 200, &recvonly.replace("recvonly", "sendrecv")).as_bytes(), from, Transport::Udp, 900);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    // A second transfer can start.
    assert!(ep.refer(&id, "op-2", "sip:alex@x", "sip:bot@sb.test", 1_000));

    // A phone that refuses the hold is still REFERred (the hold is a courtesy); the ACK shares the
    // re-INVITE's branch.
    let (mut ep, id) = held_call();
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    let hold = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.receive(phone_response(&hold, 488, "").as_bytes(), from, Transport::Udp, 20);
    let sent = ep.drain_outbox();
    assert_eq!(status_lines(&sent), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0", "REFER sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    assert_eq!(Message::parse(&sent[0].bytes, true).unwrap().headers.get("Via"), hold.headers.get("Via"));
    // The engine gives up (its deadline): nothing to resume, the phone was never held.
    assert!(ep.abandon_transfer(&id, "op-1", 30));
    assert!(ep.drain_outbox().is_empty());

    // A phone that tries to transfer the bot is refused with 403; the call goes on.
    let (mut ep, id) = held_call();
    let refer = notify(4, "x")
        .replace("NOTIFY sip", "REFER sip")
        .replace("CSeq: 4 NOTIFY", "CSeq: 4 REFER")
        .replace("Event: refer\r\n", "Refer-To: <sip:alex@sb.test>\r\n");
    let (reply, _) = ep.receive(refer.as_bytes(), from, Transport::Udp, 40);
    assert_eq!(
        status_lines(&[reply.unwrap()]),
        ["SIP/2.0 403 Forbidden (the bot transfers its calls through Graph; a REFER from the phone is refused)"]
    );
    assert!(ep.drain_events().is_empty() && ep.holds(&id));

    // The phone's own re-INVITE (it holds us) gets our answer, mirrored; again if it comes again.
    let (mut ep, _) = held_call();
    let plain = invite("ri", 2, "14255550100", &[]).replace("To: <sip:14255550100@sb.test>\r\n", "To: <sip:14255550100@sb.test>;tag=x\r\n");
    let (head, body) = plain.split_once("\r\n\r\n").unwrap();
    let body = body.replace("m=audio 4000 RTP/AVP 8 0\r\n", "m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n");
    let head = head.rsplit_once("Content-Length:").unwrap().0;
    let reinvite = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    let (reply, _) = ep.receive(reinvite.as_bytes(), from, Transport::Udp, 50);
    let reply = reply.unwrap();
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    assert!(text.starts_with("SIP/2.0 200 OK\r\n") && text.contains("a=recvonly\r\n") && text.contains("CSeq: 2 INVITE\r\n"), "{text}");
    let (again, _) = ep.receive(reinvite.as_bytes(), from, Transport::Udp, 60);
    assert_eq!(again.unwrap().bytes, reply.bytes);
}

#[test]
fn a_transferee_that_refuses_refer_is_bridged_to_the_target() {
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, Progress};
    let heidi: SocketAddr = PHONE.parse().unwrap();
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let to_alex = alex_phone();
    let transfer =
        |id: &str, progress| Event::Call { graph_id: id.to_owned(), event: CallEvent::Transfer { transfer_id: "op-1".into(), progress } };
    let recvonly = "v=0\r\no=p 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n";
    // Held, REFERred, refused: Switchboard calls Alex itself, offering Heidi's media, as Heidi.
    let refused = || {
        let (mut ep, id) = confirmed_call_on(endpoint_with(true));
        assert!(ep.transfer(&id, "op-1", &to_alex, "sip:bot@sb.test", 10));
        let hold = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
        ep.receive(phone_response(&hold, 200, recvonly).as_bytes(), heidi, Transport::Udp, 20);
        let refer = ep.drain_outbox().pop().unwrap();
        ep.receive(answer_to(&refer.bytes, 405).as_bytes(), heidi, Transport::Udp, 30);
        assert!(ep.drain_events().is_empty(), "no failure: the bridge is tried");
        let sent = ep.drain_outbox();
        assert_eq!(status_lines(&sent), ["INVITE sip:alex@127.0.0.1:5072 SIP/2.0"]);
        assert_eq!(sent[0].to, alex);
        let invite = Message::parse(&sent[0].bytes, true).unwrap();
        let text = invite.to_string();
        assert!(text.contains("Referred-By: <sip:bot@sb.test>\r\n") && text.contains("m=audio 4000 RTP/AVP"), "{text}");
        assert!(invite.headers.get("From").unwrap().starts_with("<sip:heidi@sb.test>;tag="), "{text}");
        (ep, id, invite)
    };

    // Alex answers: the transfer completes, Heidi's media goes to Alex's, and the Graph call lets go.
    let (mut ep, id, invite) = refused();
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 40);
    assert!(ep.drain_events().is_empty());
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    ep.receive(phone_response(&invite, 200, sdp).as_bytes(), alex, Transport::Udp, 50);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Accepted), transfer(&id, Progress::Completed)]);
    let sent = ep.drain_outbox();
    assert_eq!(status_lines(&sent), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0", "INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    let connect = Message::parse(&sent[1].bytes, true).unwrap();
    let body = String::from_utf8_lossy(&connect.body).into_owned();
    assert!(body.contains("m=audio 4002 ") && body.contains("a=sendrecv"), "{body}");
    assert!(!ep.holds(&id), "no Graph call any more");
    // Heidi hangs up: Alex gets a BYE; nobody on the Graph side hears of it.
    let bye = format!(
        "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKhb\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\n\
         To: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let (reply, _) = ep.receive(bye.as_bytes(), heidi, Transport::Udp, 60);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert!(ep.drain_events().is_empty());
    assert_eq!(status_lines(&ep.drain_outbox()), ["BYE sip:alex@127.0.0.1:5072 SIP/2.0"]);

    // Alex is busy: the transfer fails with his answer, and Heidi is taken off hold.
    let (mut ep, id, invite) = refused();
    ep.receive(phone_response(&invite, 486, "").as_bytes(), alex, Transport::Udp, 40);
    assert_eq!(ep.drain_events(), [transfer(&id, Progress::Failed(486))]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0", "INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    assert!(ep.holds(&id));

    // Alex never answers; the engine gives up (its deadline): CANCEL, and Heidi comes back.
    let (mut ep, id, invite) = refused();
    ep.receive(phone_response(&invite, 180, "").as_bytes(), alex, Transport::Udp, 40);
    assert!(ep.abandon_transfer(&id, "op-1", 50));
    assert_eq!(status_lines(&ep.drain_outbox()), ["CANCEL sip:alex@127.0.0.1:5072 SIP/2.0", "INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    ep.receive(phone_response(&invite, 487, "").as_bytes(), alex, Transport::Udp, 60);
    assert!(ep.drain_events().is_empty(), "the engine already knows");
}

#[test]
fn a_consultative_transfer_refers_with_replaces_and_the_targets_bye_replaces_the_consultation() {
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, Progress};
    let heidi: SocketAddr = PHONE.parse().unwrap();
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let transfer =
        |id: &str, progress| Event::Call { graph_id: id.to_owned(), event: CallEvent::Transfer { transfer_id: "op-1".into(), progress } };
    // Heidi called the bot (A); the bot called Alex (B), who answered.
    let consulted = |fallback: bool| {
        let (mut ep, a) = confirmed_call_on(endpoint_with(fallback));
        let (invite, b) = call_alex(&mut ep);
        ep.receive(phone_response(&invite, 200, "").as_bytes(), alex, Transport::Udp, 5);
        ep.drain_outbox();
        ep.drain_events();
        (ep, a, b, invite)
    };
    let (mut ep, a, b, invite) = consulted(false);
    let b_call_id = invite.headers.get("Call-ID").unwrap().to_owned();
    assert!(!ep.transfer_replacing(&a, "op-1", "no-such-call", &[], "sip:bot@sb.test", 8), "B must be a call of ours");
    let ticket = [("X-Ticket".to_owned(), "47 11".to_owned())];
    assert!(ep.transfer_replacing(&a, "op-1", &b, &ticket, "sip:bot@sb.test", 10));
    let refer = ep.drain_outbox().remove(0);
    let text = String::from_utf8_lossy(&refer.bytes).into_owned();
    let escaped = b_call_id.replace('@', "%40");
    assert!(text.starts_with("REFER sip:heidi@127.0.0.1:5071 SIP/2.0\r\n"), "{text}");
    assert!(text.contains(&format!("Refer-To: <sip:alex@127.0.0.1:5072?Replaces={escaped}%3Bto-tag%3Dalex1%3Bfrom-tag%3D")), "{text}");
    assert!(text.contains("&X-Ticket=47%2011>\r\n"), "custom headers ride in the Refer-To: {text}");
    ep.receive(answer_to(&refer.bytes, 202).as_bytes(), heidi, Transport::Udp, 20);
    ep.receive(notify(2, "200 OK").as_bytes(), heidi, Transport::Udp, 30);
    assert_eq!(ep.drain_events(), [transfer(&a, Progress::Accepted), transfer(&a, Progress::Completed)]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["BYE sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    // Alex's phone, now talking to Heidi, hangs up the consultation call: B was replaced by A.
    let bye = format!(
        "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKb1\r\nFrom: <sip:alex@sb.test>;tag=alex1\r\n\
         To: {}\r\nCall-ID: {b_call_id}\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.headers.get("From").unwrap()
    );
    ep.receive(bye.as_bytes(), alex, Transport::Udp, 40);
    assert_eq!(ep.drain_events(), [Event::Call { graph_id: b.clone(), event: CallEvent::Replaced { by: a.clone() } }]);

    // The transferee does not know Replaces (a NOTIFY with 420): with the fallback on, REFER again
    // without it, and nothing is reported yet.
    let (mut ep, a, b, _) = consulted(true);
    assert!(ep.transfer_replacing(&a, "op-1", &b, &[], "sip:bot@sb.test", 10));
    let hold = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.receive(phone_response(&hold, 200, "").as_bytes(), heidi, Transport::Udp, 12);
    let refer = ep.drain_outbox().pop().unwrap();
    ep.receive(answer_to(&refer.bytes, 202).as_bytes(), heidi, Transport::Udp, 20);
    ep.receive(notify(2, "420 Bad Extension").as_bytes(), heidi, Transport::Udp, 30);
    assert!(ep.drain_events().is_empty());
    let again = ep.drain_outbox();
    assert_eq!(status_lines(&again), ["REFER sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    assert!(String::from_utf8_lossy(&again[0].bytes).contains("Refer-To: <sip:alex@127.0.0.1:5072>\r\n"));
    // `Event: refer;id=N` names the REFER: a late NOTIFY for the first one changes nothing; the
    // second REFER's success completes the transfer.
    let cseq_of = |bytes: &[u8]| Message::parse(bytes, true).unwrap().headers.get("CSeq").unwrap().split(' ').next().unwrap().to_owned();
    let (first, second) = (cseq_of(&refer.bytes), cseq_of(&again[0].bytes));
    let with_id = |cseq: u32, id: &str| notify(cseq, "200 OK").replace("Event: refer\r\n", &format!("Event: refer;id={id}\r\n"));
    ep.receive(with_id(3, &first).as_bytes(), heidi, Transport::Udp, 40);
    assert!(ep.drain_events().is_empty(), "a NOTIFY for the first REFER");
    ep.receive(with_id(4, &second).as_bytes(), heidi, Transport::Udp, 50);
    assert_eq!(ep.drain_events(), [transfer(&a, Progress::Accepted), transfer(&a, Progress::Completed)]);
    // Without the fallback, the failure is reported (the core makes it 500/7700).
    let (mut ep, a, b, _) = consulted(false);
    ep.transfer_replacing(&a, "op-1", &b, &[], "sip:bot@sb.test", 10);
    ep.drain_outbox();
    ep.receive(notify(2, "481 Call Does Not Exist").as_bytes(), heidi, Transport::Udp, 30);
    assert_eq!(ep.drain_events(), [transfer(&a, Progress::Failed(481))]);
}

/// What a review found, each now held down: the corners of CANCEL, forks, resumes and trunks.
#[test]
fn cancels_forks_failed_resumes_and_trunk_impostors() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let heidi: SocketAddr = PHONE.parse().unwrap();

    // The CANCEL is answered but the 487 never comes: forgotten 64·T1 later; one CANCEL only.
    let (mut ep, sent_invite, id) = outgoing_call();
    ep.receive(phone_response(&sent_invite, 180, "").as_bytes(), alex, Transport::Udp, 10);
    ep.hang_up(&id, 20);
    let cancel = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.hang_up(&id, 25);
    assert!(ep.drain_outbox().is_empty(), "one CANCEL");
    ep.receive(phone_response(&cancel, 200, "").as_bytes(), alex, Transport::Udp, 30);
    ep.poll(30 + 31_999);
    assert!(ep.holds(&id));
    ep.poll(30 + 32_000);
    assert!(!ep.holds(&id), "given up");

    // A second fork answers after the first: ACK it and hang it up; the call stays with the first.
    let (mut ep, sent_invite, id) = outgoing_call();
    ep.receive(phone_response(&sent_invite, 200, "").as_bytes(), alex, Transport::Udp, 10);
    ep.drain_outbox();
    let fork = phone_response(&sent_invite, 200, "").replace("tag=alex1", "tag=fork2");
    ep.receive(fork.as_bytes(), alex, Transport::Udp, 20);
    let sent = ep.drain_outbox();
    assert_eq!(status_lines(&sent), ["ACK sip:alex@127.0.0.1:5072 SIP/2.0", "BYE sip:alex@127.0.0.1:5072 SIP/2.0"]);
    assert!(sent.iter().all(|r| String::from_utf8_lossy(&r.bytes).contains("tag=fork2")));
    assert!(ep.drain_events().iter().all(|e| !matches!(e, Event::Call { event: CallEvent::HungUp, .. })) && ep.holds(&id));

    // A resume refused with 491 (glare) is tried again a few seconds later, and its error, sent
    // again, is ACKed again.
    let (mut ep, id) = confirmed_call_on(endpoint_with(true));
    ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
    let hold = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.receive(phone_response(&hold, 200, "").as_bytes(), heidi, Transport::Udp, 20);
    let refer = ep.drain_outbox().pop().unwrap();
    ep.receive(answer_to(&refer.bytes, 405).as_bytes(), heidi, Transport::Udp, 30);
    let resume = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    assert!(String::from_utf8_lossy(&resume.body).contains("a=sendrecv"));
    let glare = phone_response(&resume, 491, "");
    ep.receive(glare.as_bytes(), heidi, Transport::Udp, 40);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0"]);
    ep.receive(glare.as_bytes(), heidi, Transport::Udp, 45);
    assert_eq!(status_lines(&ep.drain_outbox()), ["ACK sip:heidi@127.0.0.1:5071 SIP/2.0"], "the 491 again: the ACK again");
    ep.poll(1_000);
    assert!(ep.drain_outbox().is_empty(), "not at once");
    ep.poll(40 + 4_000);
    assert_eq!(status_lines(&ep.drain_outbox()), ["INVITE sip:heidi@127.0.0.1:5071 SIP/2.0"], "tried again");

    // The ACK to our 2xx is lost and the phone hangs up: its BYE proves it had the 2xx, so the call
    // was connected, then hung up, and our 2xx stops going out.
    let (mut ep, id) = {
        let mut ep = endpoint();
        ep.set_local("127.0.0.1:5060".parse().unwrap());
        let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
        ep.receive(invite("nb", 1, "14255550100", &[&auth]).as_bytes(), heidi, Transport::Udp, 0);
        let Some(Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
        ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), 0);
        ep.drain_outbox();
        (ep, graph_id)
    };
    let bye = "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKnb\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    ep.receive(bye.as_bytes(), heidi, Transport::Udp, 100);
    assert_eq!(
        ep.drain_events(),
        [Event::Call { graph_id: id.clone(), event: CallEvent::Connected }, Event::Call { graph_id: id.clone(), event: CallEvent::HungUp }]
    );
    ep.poll(600);
    assert!(ep.drain_outbox().is_empty(), "no 2xx again");

    // The phone's re-INVITE on a call not yet answered is no dialog of ours: 481.
    let mut ep = endpoint();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite("r", 1, "14255550100", &[&auth]).as_bytes(), heidi, Transport::Udp, 0);
    ep.drain_events();
    let early = invite("r2", 2, "14255550100", &[]).replace("To: <sip:14255550100@sb.test>\r\n", "To: <sip:14255550100@sb.test>;tag=x\r\n");
    let (reply, _) = ep.receive(early.as_bytes(), heidi, Transport::Udp, 10);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 481 Call/Transaction Does Not Exist (the dialog is not established)"]);

    // Someone else on the trunk's host writes the trunk's port in its Via: still challenged.
    let mut ep = endpoint();
    let impostor = invite("i", 1, "14255550100", &[])
        .replace(&format!("Via: SIP/2.0/UDP {PHONE};branch=z9hG4bKi;rport"), "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKi");
    let (reply, _) = ep.receive(impostor.as_bytes(), "127.0.0.1:40000".parse().unwrap(), Transport::Udp, 0);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 401 Unauthorized"]);
}

#[test]
fn a_transferee_that_leaves_while_its_bridge_rings_stops_the_ringing() {
    let heidi: SocketAddr = PHONE.parse().unwrap();
    let alex: SocketAddr = "127.0.0.1:5072".parse().unwrap();
    let to_alex = alex_phone();
    let (mut ep, id) = confirmed_call_on(endpoint_with(true));
    ep.transfer(&id, "op-1", &to_alex, "sip:bot@sb.test", 10);
    let hold = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.receive(phone_response(&hold, 200, "").as_bytes(), heidi, Transport::Udp, 20);
    let refer = ep.drain_outbox().pop().unwrap();
    ep.receive(answer_to(&refer.bytes, 405).as_bytes(), heidi, Transport::Udp, 30);
    let leg = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    ep.receive(phone_response(&leg, 180, "").as_bytes(), alex, Transport::Udp, 40);
    let bye = format!(
        "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKlv\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\n\
         To: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    ep.receive(bye.as_bytes(), heidi, Transport::Udp, 50);
    assert_eq!(status_lines(&ep.drain_outbox()), ["CANCEL sip:alex@127.0.0.1:5072 SIP/2.0"]);
}

#[test]
fn comfort_audio_plays_while_the_phone_listens() {
    use switchboard_sip::rtp::header;
    let heidi: SocketAddr = PHONE.parse().unwrap();
    let (mut ep, id) = confirmed_call();
    // Heidi offered PCMA first (`m=audio 4000 RTP/AVP 8 0`): 20 ms of PCMA silence to her port 4000.
    let due = ep.media_due(0);
    assert_eq!(due.len(), 1);
    let (to, packet) = &due[0];
    assert_eq!(*to, "127.0.0.1:4000".parse().unwrap());
    assert_eq!((header(packet).map(|h| h.0), packet.len()), (Some(8), 172));
    let (_, next) = &ep.media_due(0)[0];
    assert_eq!(header(next).unwrap().1, header(packet).unwrap().1.wrapping_add(1), "sequence numbers count up");

    // Heidi holds the bot (sendonly): quiet until she resumes.
    let reinvite_at = |cseq: u32, direction: &str, address: &str| {
        let plain = invite(&format!("h{cseq}"), cseq, "14255550100", &[])
            .replace("To: <sip:14255550100@sb.test>\r\n", "To: <sip:14255550100@sb.test>;tag=x\r\n");
        let (head, body) = plain.split_once("\r\n\r\n").unwrap();
        let body = format!("{body}a={direction}\r\n").replace("c=IN IP4 127.0.0.1", &format!("c=IN IP4 {address}"));
        format!("{}Content-Length: {}\r\n\r\n{body}", head.rsplit_once("Content-Length:").unwrap().0, body.len())
    };
    let reinvite = |cseq: u32, direction: &str| reinvite_at(cseq, direction, "127.0.0.1");
    // Each change is news for the bot (its mediaState), once: a retransmission is none.
    use switchboard_sip::{call::CallEvent, endpoint::Event};
    let hold = |held: bool| vec![Event::Call { graph_id: id.clone(), event: CallEvent::Hold(held) }];
    ep.drain_events();
    ep.receive(reinvite(5, "sendonly").as_bytes(), heidi, Transport::Udp, 100);
    assert!(ep.media_due(0).is_empty(), "on hold: quiet");
    assert_eq!(ep.drain_events(), hold(true));
    ep.receive(reinvite(5, "sendonly").as_bytes(), heidi, Transport::Udp, 110);
    assert_eq!(ep.drain_events(), [], "the same re-INVITE again");
    ep.receive(reinvite(6, "sendrecv").as_bytes(), heidi, Transport::Udp, 200);
    assert_eq!(ep.media_due(0).len(), 1, "resumed");
    assert_eq!(ep.drain_events(), hold(false));
    // RFC 2543's hold (`c=0.0.0.0`) is a hold too.
    let old_style = reinvite_at(7, "sendrecv", "0.0.0.0");
    ep.receive(old_style.as_bytes(), heidi, Transport::Udp, 210);
    assert_eq!(ep.drain_events(), hold(true));
    ep.receive(reinvite(8, "sendrecv").as_bytes(), heidi, Transport::Udp, 220);
    assert_eq!(ep.drain_events(), hold(false));

    // Her SDP moves the media to another host: nothing goes there, so an SDP cannot aim our audio at
    // a third party.
    let elsewhere = |cseq: u32| {
        let plain = invite(&format!("m{cseq}"), cseq, "14255550100", &[])
            .replace("To: <sip:14255550100@sb.test>\r\n", "To: <sip:14255550100@sb.test>;tag=x\r\n");
        plain.replace("c=IN IP4 127.0.0.1", "c=IN IP4 10.9.9.99")
    };
    ep.receive(elsewhere(9).as_bytes(), heidi, Transport::Udp, 250);
    assert!(ep.media_due(0).is_empty(), "not to another host");

    // Hung up: nothing more.
    ep.hang_up(&id, 300);
    assert!(ep.media_due(0).is_empty());
}

#[test]
fn our_requests_in_a_dialog_name_the_transport_the_phone_called_on() {
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let from: SocketAddr = PHONE.parse().unwrap();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    let over_tcp = invite("tcp", 1, "14255550100", &[&auth]).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    ep.receive(over_tcp.as_bytes(), from, Transport::Tcp, 0);
    let Some(switchboard_sip::Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), 0);
    ep.drain_outbox();
    ep.hang_up(&graph_id, 10);
    let bye = Message::parse(&ep.drain_outbox()[0].bytes, true).unwrap();
    assert!(bye.headers.get("Via").unwrap().starts_with("SIP/2.0/TCP 127.0.0.1:5060;"), "{bye}");
}

#[test]
fn a_bye_racing_the_transfers_notify_waits_for_it() {
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, Progress};
    let from: SocketAddr = PHONE.parse().unwrap();
    let bye = "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKrb\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n";
    let call = |id: &str, event| Event::Call { graph_id: id.to_owned(), event };
    let transferred = |id: &str| {
        [
            call(id, CallEvent::Transfer { transfer_id: "op-1".into(), progress: Progress::Accepted }),
            call(id, CallEvent::Transfer { transfer_id: "op-1".into(), progress: Progress::Completed }),
        ]
    };
    let referred = || {
        let (mut ep, id) = confirmed_call();
        ep.refer(&id, "op-1", "sip:alex@x", "sip:bot@sb.test", 10);
        let refer = ep.drain_outbox().remove(0);
        ep.receive(answer_to(&refer.bytes, 202).as_bytes(), from, Transport::Udp, 20);
        (ep, id)
    };

    // The BYE comes first, then the 200 sipfrag: a completed transfer, not a hang-up.
    let (mut ep, id) = referred();
    let (reply, _) = ep.receive(bye.as_bytes(), from, Transport::Udp, 30);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert!(ep.drain_events().is_empty(), "the NOTIFY decides");
    ep.receive(notify(3, "200 OK").as_bytes(), from, Transport::Udp, 40);
    assert_eq!(ep.drain_events(), transferred(&id));
    assert!(ep.drain_outbox().is_empty(), "no BYE of ours: the phone left already");

    // No NOTIFY within the grace: a hang-up.
    let (mut ep, id) = referred();
    ep.receive(bye.as_bytes(), from, Transport::Udp, 30);
    ep.poll(30 + 4_999);
    assert!(ep.drain_events().is_empty());
    ep.poll(30 + 5_000);
    assert_eq!(ep.drain_events(), [call(&id, CallEvent::HungUp)]);

    // The deadline passes while the BYE waits: the phone's hang-up is the outcome, at once.
    let (mut ep, id) = referred();
    ep.receive(bye.as_bytes(), from, Transport::Udp, 30);
    assert!(!ep.abandon_transfer(&id, "op-1", 40), "no transfer failure for a phone that left");
    assert_eq!(ep.drain_events(), [call(&id, CallEvent::HungUp)]);
    ep.poll(30 + 5_000);
    assert!(ep.drain_events().is_empty(), "once");

    // A BYE on the early dialog (we rang, nobody answered): the INVITE gets 487, the bot hears a hang-up.
    let mut ep = endpoint();
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite("eb", 1, "14255550100", &[&auth]).as_bytes(), from, Transport::Udp, 0);
    let Some(Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    ep.ringing(&graph_id);
    ep.drain_outbox();
    let (reply, _) = ep.receive(bye.as_bytes(), from, Transport::Udp, 10);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 200 OK"]);
    assert_eq!(status_lines(&ep.drain_outbox()), ["SIP/2.0 487 Request Terminated"]);
    assert_eq!(ep.drain_events(), [call(&graph_id, CallEvent::HungUp)]);

    // A BYE with another dialog's tags is no BYE of this call.
    let (mut ep, id) = confirmed_call();
    let (reply, _) = ep.receive(bye.replace("tag=ph1", "tag=other").as_bytes(), from, Transport::Udp, 50);
    assert_eq!(status_lines(&[reply.unwrap()]), ["SIP/2.0 481 Call/Transaction Does Not Exist (the tags name another dialog)"]);
    assert!(ep.drain_events().is_empty() && ep.holds(&id));
}

/// A phone's key presses: RFC 4733 telephone-events on the media (one event per press, however many
/// packets carry it), or SIP INFO (`application/dtmf-relay`) in the dialog.
#[test]
fn key_presses_arrive_as_telephone_events_or_sip_info() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let (mut ep, graph_id) = answered_with_telephone_events();
    let from: SocketAddr = PHONE.parse().unwrap();
    let ack = "ACK sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKack\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\nTo: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    ep.receive(ack.as_bytes(), from, Transport::Udp, 1);
    ep.drain_events();
    let keys = |ep: &mut Endpoint| -> Vec<char> {
        ep.drain_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Call { event: CallEvent::Dtmf(k), graph_id: g } if g == graph_id => Some(k),
                _ => None,
            })
            .collect()
    };
    let packet = |pt: u8, ts: u32, event: u8, end: bool| {
        let mut p = vec![0x80, pt, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3, 4, event, if end { 0x8a } else { 0x0a }, 0, 160]);
        p
    };
    let media: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    // A press of 1: a start packet, updates, and the end sent three times; then #; audio is no key.
    for end in [false, false, true, true, true] {
        ep.media_received(media, &packet(101, 1_000, 1, end), 10);
    }
    ep.media_received(media, &packet(101, 2_000, 11, false), 10);
    ep.media_received(media, &packet(0, 3_000, 5, false), 10);
    assert_eq!(keys(&mut ep), ['1', '#']);
    // From another port of the phone's host (some phones send from there): still its call.
    ep.media_received("127.0.0.1:4002".parse().unwrap(), &packet(101, 4_000, 9, false), 10);
    assert_eq!(keys(&mut ep), ['9']);
    // SIP INFO.
    let info = |cseq: u32, body: &str| {
        format!(
            "INFO sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKi{cseq}\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\n\
             To: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: {cseq} INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    check(&mut ep, &info(2, "Signal=5\r\nDuration=160\r\n"), 5, "200 OK", &[]);
    assert_eq!(keys(&mut ep), ['5']);
    check(&mut ep, &info(3, "Signal=55\r\n"), 6, "400 Bad Request (Signal=55 is not a key)", &[]);
    assert!(keys(&mut ep).is_empty());
}

/// A prompt plays as RTP in place of comfort audio, 160 samples a packet, and says when it is done.
#[test]
fn a_prompt_plays_in_packets_and_ends_once() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let (mut ep, graph_id) = confirmed_call();
    let samples = std::sync::Arc::new((0..400).map(|i| (i * 50) as i16).collect::<Vec<i16>>());
    assert!(ep.play(&graph_id, "op-1".into(), samples, false));
    assert!(!ep.play("no-such-call", "op-2".into(), std::sync::Arc::new(vec![]), false));
    let played = |ep: &mut Endpoint| {
        ep.drain_events().into_iter().filter(|e| matches!(e, Event::Call { event: CallEvent::Played { .. }, .. })).count()
    };
    let first = ep.media_due(0);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].0, first[0].1.len()), ("127.0.0.1:4000".parse().unwrap(), 12 + 160));
    assert!(first[0].1[12..].iter().any(|&b| b != 0xd5 && b != 0xff), "the prompt, not silence");
    ep.media_due(0);
    assert_eq!(played(&mut ep), 0, "80 samples to go");
    ep.media_due(0);
    assert_eq!(played(&mut ep), 1, "400 samples: three packets");
    ep.media_due(0);
    assert_eq!(played(&mut ep), 0, "once");
    // A stopped prompt does not report.
    assert!(ep.play(&graph_id, "op-3".into(), std::sync::Arc::new(vec![1; 1_000]), false));
    ep.media_due(0);
    ep.stop_playing(&graph_id, "op-3");
    for _ in 0..10 {
        ep.media_due(0);
    }
    assert_eq!(played(&mut ep), 0);
}

/// A recording keeps what the phone sends and ends on the first limit: silence after speech, no
/// speech at all, or a stop key.
#[test]
fn a_recording_captures_the_phones_audio_until_a_limit() {
    use switchboard_core::media::CompletionReason;
    use switchboard_sip::Event;
    use switchboard_sip::call::{CallEvent, RecordLimits};
    let limits = RecordLimits { initial_silence_ms: 1_000, max_silence_ms: 500, max_duration_ms: 5_000, stop_keys: vec!['#'] };
    let recorded = |ep: &mut Endpoint| -> Vec<(CompletionReason, usize, i16)> {
        ep.drain_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Call { event: CallEvent::Recorded { reason, samples, .. }, .. } => {
                    Some((reason, samples.len(), samples.iter().map(|s| s.saturating_abs()).max().unwrap_or(0)))
                }
                _ => None,
            })
            .collect()
    };
    let media: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    // Loud μ-law audio (0x80 is the loudest positive sample).
    let speech = |seq: u16| {
        let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0, 0, 1, 2, 3, 4];
        p.extend(std::iter::repeat_n(0x90u8, 160));
        p
    };
    let (mut ep, graph_id) = confirmed_call();
    assert!(ep.record(&graph_id, "rec-1".into(), limits.clone(), 0));
    for (i, t) in [100u64, 120, 140].into_iter().enumerate() {
        ep.media_received(media, &speech(i as u16), t);
    }
    ep.media_due(639);
    assert!(recorded(&mut ep).is_empty(), "heard at 140: silence until 640");
    ep.media_due(640);
    let r = recorded(&mut ep);
    assert_eq!((r[0].0, r[0].1), (CompletionReason::MaxSilenceTimeout, 640 * 8), "as long as it ran");
    assert!(r[0].2 > 5_000, "the speech is in it");
    // Nobody speaks: the initial silence ends it.
    assert!(ep.record(&graph_id, "rec-2".into(), limits.clone(), 1_000));
    ep.media_due(2_000);
    assert_eq!(recorded(&mut ep).iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), [(CompletionReason::InitialSilenceTimeout, 8_000)]);
    // A stop key (SIP INFO here) ends it at once.
    assert!(ep.record(&graph_id, "rec-3".into(), limits, 3_000));
    let info = format!(
        "INFO sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKi9\r\nFrom: <sip:heidi@sb.test>;tag=ph1\r\n\
         To: <sip:14255550100@sb.test>;tag=x\r\nCall-ID: call-1\r\nCSeq: 9 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 10\r\n\r\nSignal=#\r\n"
    );
    check(&mut ep, &info, 3_250, "200 OK", &[]);
    assert_eq!(recorded(&mut ep).iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), [(CompletionReason::StopToneDetected, 250 * 8)]);
}

/// Tones the bot sends go to the phone as RFC 4733 events: 100 ms a key (its end sent three times),
/// every packet of a key with the timestamp of its start, the marker on its first.
#[test]
fn tones_go_to_the_phone_as_telephone_events() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let (mut ep, graph_id) = answered_with_telephone_events();
    assert!(ep.send_tones(&graph_id, "dtmf-1".into(), &[1, 11], 40));
    let mut packets = Vec::new();
    let mut sent = 0;
    for _ in 0..20 {
        packets.extend(ep.media_due(0));
        sent += ep.drain_events().iter().filter(|e| matches!(e, Event::Call { event: CallEvent::TonesSent { .. }, .. })).count();
    }
    assert_eq!(sent, 1, "once, after the last packet");
    let events: Vec<(u8, u32, u8, bool, u16, bool)> = packets
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p[1] & 0x7f == 101)
        .map(|p| {
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            (p[12], ts, p[1] & 0x7f, p[13] & 0x80 != 0, u16::from_be_bytes([p[14], p[15]]), p[1] & 0x80 != 0)
        })
        .collect();
    assert_eq!(events.len(), 14, "7 packets a key");
    let (first, second) = events.split_at(7);
    for (key, packets) in [(1u8, first), (11, second)] {
        assert!(packets.iter().all(|e| e.0 == key && e.1 == packets[0].1), "one key, one timestamp: {packets:?}");
        assert_eq!(packets.iter().map(|e| e.3).collect::<Vec<_>>(), [false, false, false, false, true, true, true], "the end, three times");
        assert_eq!(packets.iter().map(|e| e.4).collect::<Vec<_>>(), [160, 320, 480, 640, 800, 800, 800]);
        assert_eq!(packets.iter().map(|e| e.5).collect::<Vec<_>>(), [true, false, false, false, false, false, false], "the marker");
    }
    assert_eq!(second[0].1.wrapping_sub(first[0].1), 5 * 160 + 2 * 160, "the second key starts after the first and the 40 ms pause");
    // A phone that did not agree to telephone-event gets none.
    let (mut ep, graph_id) = confirmed_call();
    assert!(!ep.send_tones(&graph_id, "dtmf-2".into(), &[1], 0));
}

/// Hold music loops under prompts: a prompt plays over it and ends, then the music goes on; two tone
/// requests in a row each end; keys from a host other than the phone's are not the phone's.
#[test]
fn hold_music_prompts_and_tones_share_the_media_fairly() {
    use switchboard_sip::Event;
    use switchboard_sip::call::CallEvent;
    let (mut ep, graph_id) = answered_with_telephone_events();
    let ends = |ep: &mut Endpoint| -> Vec<String> {
        ep.drain_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Call { event: CallEvent::Played { operation_id } | CallEvent::TonesSent { operation_id }, .. } => Some(operation_id),
                _ => None,
            })
            .collect()
    };
    assert!(ep.hold_music(&graph_id, Some(std::sync::Arc::new(vec![7_000; 320]))));
    assert!(ep.play(&graph_id, "prompt".into(), std::sync::Arc::new(vec![-7_000; 160]), false));
    let prompt = ep.media_due(0);
    assert_eq!(ends(&mut ep), ["prompt"], "the prompt plays over the music and ends");
    let music = ep.media_due(0);
    assert_ne!(prompt[0].1[12..], music[0].1[12..], "then the music again");
    assert!(ends(&mut ep).is_empty(), "music never ends by itself");
    // Two tone requests: the second waits for the first; each ends.
    assert!(ep.send_tones(&graph_id, "t1".into(), &[1], 0));
    assert!(ep.send_tones(&graph_id, "t2".into(), &[2], 0));
    let mut done = Vec::new();
    for _ in 0..20 {
        ep.media_due(0);
        done.extend(ends(&mut ep));
    }
    assert_eq!(done, ["t1", "t2"]);
    // A key from another host than the phone's is not the phone's.
    let event = |ts: u32| {
        let mut p = vec![0x80, 101, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3, 4, 5, 0x0a, 0, 160]);
        p
    };
    ep.media_received("127.0.0.9:4000".parse().unwrap(), &event(1), 5);
    ep.media_received("127.0.0.1:4000".parse().unwrap(), &event(2), 5);
    let keys: Vec<char> = ep
        .drain_events()
        .into_iter()
        .filter_map(|e| if let Event::Call { event: CallEvent::Dtmf(k), .. } = e { Some(k) } else { None })
        .collect();
    assert_eq!(keys, ['5'], "only the phone's own");
}

/// A call from a phone that offers telephone-event (RFC 4733), answered (not yet ACKed).
fn answered_with_telephone_events() -> (Endpoint, String) {
    use switchboard_sip::Event;
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let from: SocketAddr = PHONE.parse().unwrap();
    let sdp = "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let auth = invite_authorization(&Nonces::new(SECRET).mint(0, "127.0.0.1"));
    ep.receive(invite_offering("t", 1, "14255550100", &[&auth], sdp).as_bytes(), from, Transport::Udp, 0);
    let Some(Event::Invite { graph_id, .. }) = ep.drain_events().pop() else { panic!("no invite") };
    ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), 0);
    ep.drain_events();
    (ep, graph_id)
}

/// A phone that registers over TCP is called on that connection (its address, a TCP Via), not at its
/// contact over UDP; once the connection has closed, at its contact again.
#[test]
fn a_phone_registered_over_tcp_is_called_on_its_connection() {
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    // The connection's address: the phone's client port, not the port of its contact.
    let flow: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    let contact = "Contact: <sip:alex@127.0.0.1:5072;transport=tcp>";
    let register = |ep: &mut Endpoint, req: String, now: u64| {
        let (reply, _) = ep.receive(req.as_bytes(), flow, Transport::Tcp, now);
        let reply = reply.expect("an answer");
        assert_eq!(reply.to, flow, "answered on the connection");
        Message::parse(&reply.bytes, false).unwrap()
    };
    let challenge = register(&mut ep, request("REGISTER", "t1", 1, "alex", &[contact]), 0);
    let auth = authorization("alex", "pw-alex", &nonce_of(&challenge));
    let ok = register(&mut ep, request("REGISTER", "t2", 2, "alex", &[contact, &auth]), 1);
    assert!(matches!(ok.start, StartLine::Response { code: 200, .. }), "{ok}");

    let destination = ep.destination_of("alex", 2).expect("registered");
    assert_eq!((destination.peer, destination.transport), (flow, "TCP"));
    assert_eq!(destination.request_uri, "sip:alex@127.0.0.1:5072;transport=tcp");
    let id = switchboard_sip::endpoint::new_call_id();
    ep.place(&id, "\"Reception\" <sip:+14255550100@sb.test>", destination, "127.0.0.1:20000".parse().unwrap(), 2);
    let sent = ep.drain_outbox();
    assert_eq!(sent[0].to, flow, "the INVITE goes on the connection");
    let invite = Message::parse(&sent[0].bytes, false).unwrap();
    assert!(invite.headers.get("Via").unwrap().starts_with("SIP/2.0/TCP 127.0.0.1:5060;"), "{invite}");
    // Requests from that connection count as the registered phone's (it may use us as its proxy).
    assert!(ep.registrar.is_registered_source(flow, 3));

    ep.flow_closed("127.0.0.1:40999".parse().unwrap());
    assert_eq!(ep.destination_of("alex", 3).map(|d| d.peer), Some(flow), "another connection closing changes nothing");
    ep.flow_closed(flow);
    let after = ep.destination_of("alex", 3).expect("still registered");
    // Its contact asks for TCP (`;transport=tcp`): a connection of ours to it.
    assert_eq!((after.peer, after.transport), ("127.0.0.1:5072".parse().unwrap(), "TCP"), "at its contact again");
}

/// A conference: a group call's member dialogs (Heidi's call, and Alex's placed for the group) hear
/// each other. What one phone sends is in the next packet to the other, in that phone's codec (A-law
/// in from Heidi, μ-law out to Alex); nobody hears themselves; audio is wanted only while there is a
/// conference (or a recording).
#[test]
fn a_conferences_members_hear_each_other_and_not_themselves() {
    use switchboard_sip::rtp::{Stream, alaw_decode, header, payload, ulaw_decode};
    let (heidi_media, alex_media): (SocketAddr, SocketAddr) = ("127.0.0.1:4000".parse().unwrap(), "127.0.0.1:4002".parse().unwrap());
    let (mut ep, heidi) = confirmed_call();
    let (invite, alex) = call_alex(&mut ep);
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n";
    ep.receive(phone_response(&invite, 200, sdp).as_bytes(), "127.0.0.1:5072".parse().unwrap(), Transport::Udp, 10);
    ep.drain_outbox();
    ep.drain_events();
    assert!(ep.audio_sources().is_empty(), "no conference, no recording: audio packets are not wanted");
    ep.join_conference("group", &heidi);
    ep.join_conference("group", &alex);
    assert!(!ep.audio_sources().is_empty());
    let (mut heidi_says, mut alex_says) = (Stream::new(heidi_media, 8, 1), Stream::new(alex_media, 0, 2));
    let level = |packet: &[u8], decode: fn(u8) -> i16| -> Vec<i16> { payload(packet).unwrap().iter().map(|&b| decode(b)).collect() };
    let to = |due: &[(SocketAddr, Vec<u8>)], media: SocketAddr| due.iter().find(|(t, _)| *t == media).map(|(_, p)| p.clone()).unwrap();
    let near = |samples: &[i16], want: i16| samples.len() == 160 && samples.iter().all(|&s| (i32::from(s) - i32::from(want)).abs() < 300);

    // Heidi speaks: Alex hears her in μ-law; Heidi hears no one (comfort audio, not mixed).
    ep.media_received(heidi_media, &heidi_says.packet_of(&[4000; 160]), 20);
    let due = ep.media_due(20);
    let to_alex = to(&due, alex_media);
    assert_eq!(header(&to_alex).map(|h| h.0), Some(0), "PCMU, Alex's codec");
    assert!(near(&level(&to_alex, ulaw_decode), 4000), "{:?}", level(&to_alex, ulaw_decode));
    assert_eq!(ep.take_mixed_packets(), 1, "only Alex's packet carried someone's voice");

    // Both speak: each hears the other, in their own codec.
    ep.media_received(heidi_media, &heidi_says.packet_of(&[4000; 160]), 40);
    ep.media_received(alex_media, &alex_says.packet_of(&[-2000; 160]), 40);
    let due = ep.media_due(40);
    assert!(near(&level(&to(&due, alex_media), ulaw_decode), 4000));
    let to_heidi = to(&due, heidi_media);
    assert_eq!(header(&to_heidi).map(|h| h.0), Some(8), "PCMA, Heidi's codec");
    assert!(near(&level(&to_heidi, alaw_decode), -2000), "{:?}", level(&to_heidi, alaw_decode));
    assert_eq!(ep.take_mixed_packets(), 2);

    // Heidi sends 10 ms packets: two of them are one frame for Alex, whole.
    let short = |seq: u8, level: i16| {
        let mut p = vec![0x80, 8, 0, seq, 0, 0, 0, seq, 0, 0, 0, 9];
        p.extend(std::iter::repeat_n(switchboard_sip::rtp::alaw(level), 80));
        p
    };
    ep.media_received(heidi_media, &short(1, 4000), 50);
    ep.media_received(heidi_media, &short(2, 4000), 50);
    assert!(near(&level(&to(&ep.media_due(50), alex_media), ulaw_decode), 4000), "20 ms of her voice, not 10 and 10 of silence");
    ep.take_mixed_packets();

    // Heidi on hold (her hold music playing): what she sends is not in the conversation.
    assert!(ep.hold_music(&heidi, Some(std::sync::Arc::new(vec![0; 1600]))));
    ep.media_received(heidi_media, &heidi_says.packet_of(&[4000; 160]), 55);
    ep.media_due(55);
    assert_eq!(ep.take_mixed_packets(), 0, "nothing of Heidi's for Alex while she is held");
    ep.hold_music(&heidi, None);

    // Alex leaves: Heidi's audio is for nobody, and once she goes too the conference is over.
    ep.hang_up(&alex, 60);
    ep.media_received(heidi_media, &heidi_says.packet_of(&[4000; 160]), 60);
    ep.media_due(60);
    assert_eq!(ep.take_mixed_packets(), 0);
    ep.hang_up(&heidi, 80);
    ep.media_due(80);
    assert!(ep.audio_sources().is_empty(), "the conference ended with its last member");
}

/// A contact that asked for TCP where no connection can be opened: the call being placed there fails
/// at once (503, unreachable), and a transfer's leg fails its transfer, as the phone's refusal would.
#[test]
fn a_contact_no_connection_reaches_fails_the_calls_being_placed_there() {
    use switchboard_sip::call::{CallEvent, Progress};
    use switchboard_sip::endpoint::Event;
    let mut ep = endpoint();
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let dead: SocketAddr = "127.0.0.1:5099".parse().unwrap();
    let destination = switchboard_sip::endpoint::Destination {
        request_uri: "sip:alex@127.0.0.1:5099;transport=tcp".into(),
        to: "<sip:alex@sb.test>".into(),
        peer: dead,
        headers: vec![],
        transport: "TCP",
        connect: true,
    };
    ep.place("c1", "<sip:bot@sb.test>", destination.clone(), "127.0.0.1:20000".parse().unwrap(), 0);
    ep.transfer_foreign(
        "sim-call",
        "op-1",
        None,
        destination,
        "<sip:heidi@sb.test>",
        "sip:bot@sb.test",
        "127.0.0.1:20000".parse().unwrap(),
        0,
    );
    assert!(ep.dials_tcp(dead), "ours to open a connection to");
    ep.drain_outbox();
    ep.unreachable(dead, 5);
    let events = ep.drain_events();
    assert!(events.contains(&Event::Call { graph_id: "c1".into(), event: CallEvent::Refused(503) }), "{events:?}");
    let failed = Event::Call {
        graph_id: "sim-call".into(),
        event: CallEvent::Transfer { transfer_id: "op-1".into(), progress: Progress::Failed(503) },
    };
    assert!(events.contains(&failed), "the transfer's leg fails its transfer: {events:?}");
    assert!(!ep.dials_tcp("127.0.0.1:5098".parse().unwrap()));
}
