//! Any datagram or stream message, at any time, to an endpoint with accounts and a call in progress:
//! never a panic, and any answer parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_sip::message::Message;
use switchboard_sip::{Account, Endpoint, Settings, Transport};

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(Settings {
        domain: "127.0.0.1".into(),
        aliases: vec!["localhost".into()],
        accounts: vec![Account { username: "heidi".into(), password: "pw".into() }],
        nonce_secret: "fuzz".into(),
        trunks: vec!["127.0.0.1:5090".parse().unwrap()],
        hold_before_refer: true,
        bridge_when_refer_refused: true,
        blind_when_replaces_refused: true,
        comfort_audio: switchboard_sip::rtp::ComfortAudio::Tone,
    });
    ep.set_local("127.0.0.1:5060".parse().unwrap());
    let phone = "127.0.0.1:5071".parse().unwrap();
    // An outgoing call in flight, so that responses reach the UAC side too (its Call-ID is fixed).
    ep.place(
        "00000000-0000-3000-8000-000000000000",
        "<sip:app@127.0.0.1>",
        switchboard_sip::endpoint::Destination {
            request_uri: "sip:heidi@127.0.0.1:5071".into(),
            to: "<sip:heidi@127.0.0.1>".into(),
            peer: phone,
            headers: Vec::new(),
            transport: "UDP",
            connect: false,
        },
        "127.0.0.1:30000".parse().unwrap(),
        0,
    );
    // It and every call answered below are in one conference: their RTP is mixed.
    ep.join_conference("group", "00000000-0000-3000-8000-000000000000");
    // The input may hold several messages, split on a marker, so that sequences are explored too.
    for (i, part) in data.split(|b| *b == 0xff).enumerate().take(8) {
        let transport = if i % 2 == 0 { Transport::Udp } else { Transport::Tcp };
        // Every third message comes from the trunk, which is trusted without Digest.
        let from = if i % 3 == 2 { "127.0.0.1:5090".parse().unwrap() } else { phone };
        let (reply, _) = ep.receive(part, from, transport, i as u64 * 700);
        if let Some(r) = reply {
            Message::parse(&r.bytes, true).expect("every answer parses");
        }
        for r in ep.drain_outbox() {
            Message::parse(&r.bytes, true).expect("every queued message parses");
        }
        for event in ep.drain_events() {
            if let switchboard_sip::Event::Invite { graph_id, .. } = event {
                ep.ringing(&graph_id);
                ep.answer_call(&graph_id, "127.0.0.1:20000".parse().unwrap(), i as u64);
                ep.join_conference("group", &graph_id);
            }
        }
        // The same bytes as RTP from the phone's host: keys, recordings, the mix.
        ep.media_received("127.0.0.1:4000".parse().unwrap(), part, i as u64 * 700);
        ep.media_due(i as u64 * 700);
        ep.poll(i as u64 * 5_000);
    }
});
