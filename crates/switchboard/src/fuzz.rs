//! Fuzz targets for every parser of outside input on the HTTP side (issue 15), as plain functions of
//! bytes. The cargo-fuzz binaries in `fuzz/` call them for coverage-guided runs (`scripts/fuzz.sh`);
//! on stable Rust, [`tests`] runs each over its committed seeds and a bounded number of seeded
//! mutations of them, in the test command. Each one panics only on a broken property.
//!
//! The core's `Call::handle` is fuzzed by the property test in `switchboard-core` (arbitrary input
//! sequences against the invariants); SIP and SDP by the targets of `switchboard-sip`.

use std::sync::{Arc, LazyLock};

use crate::callback::CallbackPolicy;
use crate::config::Config;
use crate::graph::decode::{self, Policy};
use crate::identity::SigningKey;

/// The demo's callback policy, with a server of its own on 127.0.0.1:8080.
static CALLBACKS: LazyLock<CallbackPolicy> = LazyLock::new(|| {
    CallbackPolicy::new(&Config::demo().callbacks)
        .unwrap_or_else(|(f, p)| panic!("the demo's callback policy: {f}: {p}"))
        .with_own(["127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"))])
});

/// Every Graph body decoder. A refusal names a field and says what is wrong.
pub fn graph_bodies(data: &[u8]) {
    let policy = Policy { callbacks: &CALLBACKS };
    let refusals = [
        decode::call::create_call(data, &policy).err(),
        decode::action::answer(data, &policy).err(),
        decode::action::reject(data, &policy).err(),
        decode::action::redirect(data, &policy).err(),
        decode::transfer::transfer(data).err(),
    ];
    let media = decode::media::ACTIONS.iter().map(|a| decode::media::media(a, data).err());
    let participants = [decode::participants::invite(data).err(), decode::participants::participant(data, true).err()];
    for e in refusals.into_iter().chain(media).chain(participants).flatten() {
        assert!(!e.problem.is_empty(), "a refusal without a reason: {e:?}");
        // A body that is not a JSON object is refused as a whole (field ""); anything else names one.
        let whole = serde_json::from_slice::<serde_json::Value>(data).map_or(true, |v| !v.is_object());
        assert!(whole || !e.field.is_empty(), "a refusal of an object that names no field: {e:?}");
    }
}

/// A callback URL as a body may give it: accepted ones are absolute, short enough, and free of
/// control characters and credentials.
pub fn callback_uri(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(url) = CALLBACKS.check(&text) {
        // The demo allows 127.0.0.1 and localhost; any other address taken must be public.
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = ip {
            let public = crate::callback::classify(ip) == crate::callback::Class::Public;
            assert!(public || ip == std::net::IpAddr::from([127, 0, 0, 1]), "{text:?} reaches {ip}");
            assert!(!(url.port_or_known_default() == Some(8080) && ip.is_loopback()), "{text:?}: the server itself");
        }
        assert!(text.chars().count() <= CALLBACKS.max_length, "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(url.username().is_empty() && url.password().is_none(), "{text:?}");
        assert!(matches!(url.scheme(), "https" | "http"), "{text:?}");
    }
}

static KEY: LazyLock<Arc<SigningKey>> = LazyLock::new(|| {
    let pem = SigningKey::generate_pem().unwrap_or_else(|e| panic!("a key: {e}"));
    Arc::new(SigningKey::from_pem(&pem).unwrap_or_else(|e| panic!("a key: {e}")))
});

/// A bearer token, header and claims: arbitrary text is never taken for a valid token.
pub fn access_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let taken = crate::identity::validate_access_token(&KEY, "http://127.0.0.1:8080", &text, 1_800_000_000);
    assert!(taken.is_err(), "an unsigned token was accepted: {text:?}");
}

/// The token endpoint's form, with an `Authorization` header: the first line of `data`, if it
/// starts with "Basic " or "Bearer ", is the header; the rest is the body.
pub fn token_form(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) if data.starts_with(b"Basic ") || data.starts_with(b"Bearer ") => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        _ => (None, data),
    };
    match crate::api::identity::read_token_request(body, header) {
        Ok(req) => assert!(!req.client_id.is_empty() || header.is_some(), "{req:?}"),
        Err(r) => {
            assert!((400..500).contains(&r.status.as_u16()), "{r:?}");
            assert!(!r.description.is_empty(), "{r:?}");
        }
    }
}

/// A configuration file: parsed whole, or refused with the field and the problem.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::from_toml(&text, "fuzz.toml") {
        assert!(!e.field.is_empty() && !e.problem.is_empty(), "{e:?}");
    }
}

/// A sim behaviour (`PUT /sim/v1/behaviours/{key}`), as that endpoint reads it.
pub fn sim_behaviour(data: &[u8]) {
    if let Ok(b) = serde_json::from_slice::<crate::config::Behaviour>(data)
        && let Err(p) = b.validate()
    {
        assert!(!p.is_empty());
    }
}

/// Every target by name, for the fuzz binaries and the stable run.
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("graph_bodies", graph_bodies),
    ("callback_uri", callback_uri),
    ("access_token", access_token),
    ("token_form", token_form),
    ("config", config),
    ("sim_behaviour", sim_behaviour),
];

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::TARGETS;

    /// Mutations of each seed per target: bounded, so the test command stays short; the seed is
    /// printed, and `SWITCHBOARD_FUZZ_SEED` / `SWITCHBOARD_FUZZ_RUNS` replay or lengthen a run.
    const RUNS: usize = 10_000;

    fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
        for _ in 0..rng.usize(1..5) {
            match rng.u8(0..6) {
                0 if !input.is_empty() => {
                    let i = rng.usize(..input.len());
                    input[i] ^= 1 << rng.u8(0..8);
                }
                1 => {
                    let at = rng.usize(..=input.len());
                    let b = *rng.choice(b"{}[]\":,0123456789.-eE\\ntrufalsn \r\n\t\x00\xff=&%+/@:?#[]".iter()).unwrap_or(&b'x');
                    input.insert(at, b);
                }
                2 if !input.is_empty() => {
                    let at = rng.usize(..input.len());
                    let end = (at + rng.usize(1..16)).min(input.len());
                    input.drain(at..end);
                }
                3 if !seeds.is_empty() => {
                    // Splice in a piece of another seed.
                    let other = &seeds[rng.usize(..seeds.len())];
                    if !other.is_empty() {
                        let from = rng.usize(..other.len());
                        let piece = &other[from..(from + rng.usize(1..64)).min(other.len())];
                        let at = rng.usize(..=input.len());
                        input.splice(at..at, piece.iter().copied());
                    }
                }
                4 if !input.is_empty() => {
                    // Repeat a piece (deep nesting, long values).
                    let at = rng.usize(..input.len());
                    let piece: Vec<u8> = input[at..(at + rng.usize(1..8)).min(input.len())].to_vec();
                    for _ in 0..rng.usize(1..64) {
                        input.splice(at..at, piece.iter().copied());
                    }
                }
                _ => {
                    let at = rng.usize(..=input.len());
                    input.insert(at, rng.u8(..));
                }
            }
        }
    }

    #[test]
    fn every_target_survives_its_seeds_and_their_mutations() {
        let seed: u64 = std::env::var("SWITCHBOARD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
        let runs: usize = std::env::var("SWITCHBOARD_FUZZ_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(RUNS);
        eprintln!("fuzz (stable): seed {seed} (SWITCHBOARD_FUZZ_SEED={seed} replays it), {runs} mutations per target");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
        for (name, target) in TARGETS {
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir.join(name))
                .unwrap_or_else(|e| panic!("fuzz/seeds/{name}: {e}"))
                .filter_map(|f| std::fs::read(f.ok()?.path()).ok())
                .collect();
            seeds.sort();
            assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seeds");
            for s in &seeds {
                target(s);
            }
            let mut rng = fastrand::Rng::with_seed(seed ^ name.len() as u64);
            for _ in 0..runs {
                let mut input = seeds[rng.usize(..seeds.len())].clone();
                mutate(&mut rng, &seeds, &mut input);
                let shown = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
                let run = std::panic::catch_unwind(|| target(&input));
                assert!(run.is_ok(), "{name} failed on {shown:?} (seed {seed})");
            }
        }
    }
}
