//! The decoders on their own: a table of bodies with what each decodes to or the field it names, then
//! arbitrary JSON built from Graph's own field names, which must never panic and must always name a
//! field when refused.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// The demo's callback policy: https anywhere public, http to 127.0.0.1 and localhost.
static CALLBACKS: std::sync::LazyLock<CallbackPolicy> =
    std::sync::LazyLock::new(|| CallbackPolicy::new(&crate::config::Config::demo().callbacks).unwrap());
static POLICY: std::sync::LazyLock<Policy<'static>> = std::sync::LazyLock::new(|| Policy { callbacks: &CALLBACKS });

/// Decodes `body` with every decoder and reports each outcome as JSON: the decoded command's debug
/// form, or `{"field", "problem"}`.
fn check(decoder: &str, body: Value) -> Value {
    let bytes = body.to_string().into_bytes();
    let out = match decoder {
        "create" => call::create_call(&bytes, &POLICY).map(|c| format!("{c:?}")),
        "answer" => action::answer(&bytes, &POLICY).map(|a| format!("{a:?}")),
        "reject" => action::reject(&bytes, &POLICY),
        "redirect" => action::redirect(&bytes, &POLICY).map(|r| format!("{r:?}")),
        "transfer" => transfer::transfer(&bytes).map(|t| format!("{t:?}")),
        other => panic!("no decoder {other}"),
    };
    match out {
        Ok(debug) => json!({"ok": debug}),
        Err(e) => json!({"field": e.field, "problem": e.problem}),
    }
}

fn refused(field: &str, problem: &str) -> Value {
    json!({"field": field, "problem": problem})
}

fn user(id: &str) -> Value {
    json!({"identity": {"user": {"id": id}}})
}

#[test]
fn bodies_decode_or_name_the_field() {
    let media = json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"});
    let create = |extra: Value| {
        let mut v = json!({"callbackUri": "https://bot.example/cb", "mediaConfig": media, "targets": [user("u1")]});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let cases: Vec<(&str, Value, Value)> = vec![
        ("create", json!([1]), refused("(body)", "expected a JSON object, found an array")),
        ("create", json!({}), refused("callbackUri", "is required")),
        (
            "create",
            create(json!({"callbackUri": "http://bot.example/cb"})),
            refused("callbackUri", "'http://bot.example/cb' uses http, which goes only to hosts named in [callbacks] allow; use https"),
        ),
        (
            "create",
            create(json!({"mediaConfig": {}})),
            refused(
                "mediaConfig.@odata.type",
                "is required to choose #microsoft.graph.serviceHostedMediaConfig or #microsoft.graph.appHostedMediaConfig",
            ),
        ),
        (
            "create",
            create(json!({"requestedModalities": ["audio", "smell"]})),
            refused("requestedModalities[1]", "'smell' is not a modality; use one of audio, video, videoBasedScreenSharing, data"),
        ),
        (
            "create",
            create(json!({"ringingTimeoutInSeconds": 116})),
            refused("ringingTimeoutInSeconds", "116 is out of range; use 1 to 115 seconds"),
        ),
        ("create", create(json!({"targets": []})), refused("targets", "must name 1 to 25 parties to call, not 0")),
        (
            "create",
            create(json!({"targets": [{"identity": {"phone": {"id": "555"}}}]})),
            refused("targets[0].identity.phone.id", "'555' is not an E.164 phone number (like +12345678901)"),
        ),
        ("create", create(json!({"targets": [{}]})), refused("targets[0].identity", "is required")),
        (
            "create",
            create(json!({"source": {"identity": {"applicationInstance": {}}}})),
            refused("source.identity.applicationInstance.id", "is required"),
        ),
        ("answer", json!({"mediaConfig": media}), refused("acceptedModalities", "is required")),
        (
            "answer",
            json!({"mediaConfig": media, "acceptedModalities": ["audio"], "participantCapacity": -1}),
            refused("participantCapacity", "must not be negative"),
        ),
        (
            "answer",
            json!({"mediaConfig": media, "acceptedModalities": ["audio"], "participantCapacity": 18446744073709551616u128 as f64}),
            refused("participantCapacity", "must be at most 2147483647 (an Int32)"),
        ),
        (
            "answer",
            json!({"mediaConfig": media, "acceptedModalities": ["audio"], "participantCapacity": 2147483648u64}),
            refused("participantCapacity", "must be at most 2147483647 (an Int32)"),
        ),
        ("reject", json!({"reason": "bored"}), refused("reason", "'bored' is not a rejectReason; use none, busy or forbidden")),
        ("reject", json!({"reason": "BUSY"}), json!({"ok": "busy"})),
        ("reject", json!({}), json!({"ok": "none"})),
        ("redirect", json!({"targets": [user("u1")], "timeout": 10}), refused("timeout", "10 is out of range; use 15 to 90 seconds")),
        (
            "redirect",
            json!({"targets": (0..26).map(|_| user("u")).collect::<Vec<_>>()}),
            refused("targets", "must name 1 to 25 targets, not 26"),
        ),
        ("transfer", json!({}), refused("transferTarget", "is required")),
        ("transfer", json!({"transferTarget": {}}), refused("transferTarget.identity", "is required")),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "clientContext": "x".repeat(257)}),
            refused("clientContext", "is 257 characters long; at most 256 are allowed"),
        ),
        ("transfer", json!({"transferTarget": user("u1"), "transferee": 5}), refused("transferee", "expected an object, found a number")),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"Ticket": "1"}}}),
            refused(
                "customCallingContext.sipHeaders.Ticket",
                "is not a custom header name: it must start with 'X-', then letters, digits and '-', 64 characters at most",
            ),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"aé": "v"}}}),
            refused(
                "customCallingContext.sipHeaders.aé",
                "is not a custom header name: it must start with 'X-', then letters, digits and '-', 64 characters at most",
            ),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"X-Bad": "a\r\nVia: x"}}}),
            refused("customCallingContext.sipHeaders.X-Bad", "contains a control character (a line break, a tab…)"),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"X-Long": "v".repeat(257)}}}),
            refused("customCallingContext.sipHeaders.X-Long", "is longer than 256 characters"),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"X-A": "1", "X-B": "2", "X-C": "3", "X-D": "4", "X-E": "5", "X-F": "6"}}}),
            refused("customCallingContext.sipHeaders", "has more than 5 headers"),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"X-A": 1}}}),
            refused("customCallingContext.sipHeaders.X-A", "expected a string"),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "customCallingContext": {"sipHeaders": {"X-Ticket": "4711", "X-Queue": "sales"}}}),
            json!({"ok": "Transfer { target: Named { path: \"transferTarget.identity\", who: User { id: \"u1\", tenant_id: None } }, replaces_call_id: None, client_context: None, transferee: None, sip_headers: [(\"X-Queue\", \"sales\"), (\"X-Ticket\", \"4711\")] }"}),
        ),
        (
            "transfer",
            json!({"transferTarget": user("u1"), "transferee": {"identity": {"phone": {"id": "x"}}}}),
            refused("transferee.identity.phone.id", "'x' is not an E.164 phone number (like +12345678901)"),
        ),
    ];
    for (decoder, body, want) in cases {
        assert_eq!(check(decoder, body.clone()), want, "{decoder} {body}");
    }
}

#[test]
fn every_shape_of_transfer_decodes_to_the_same_command() {
    let today =
        transfer::transfer(br#"{"transferTarget": {"identity": {"user": {"id": "u1"}}, "replacesCallId": "c2"}, "clientContext": "ctx"}"#)
            .unwrap();
    assert_eq!(today.target.path, "transferTarget.identity");
    assert_eq!(today.replaces_call_id, Some(("c2".to_owned(), "transferTarget.replacesCallId")));
    // The 2018 beta's shape: a bare identitySet as `target`, the rest at the top level.
    let beta = transfer::transfer(br#"{"target": {"user": {"id": "u1"}}, "replacesCallId": "c2", "clientContext": "ctx"}"#).unwrap();
    assert_eq!(
        (beta.target.who, beta.replaces_call_id, beta.client_context),
        (today.target.who, Some(("c2".to_owned(), "replacesCallId")), today.client_context)
    );
}

/// JSON built from the names the decoders look for, nested a few levels: the paths they take.
fn graphish() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "callbackUri",
        "mediaConfig",
        "@odata.type",
        "targets",
        "identity",
        "user",
        "phone",
        "application",
        "applicationInstance",
        "id",
        "tenantId",
        "source",
        "subject",
        "ringingTimeoutInSeconds",
        "requestedModalities",
        "acceptedModalities",
        "participantCapacity",
        "reason",
        "timeout",
        "transferTarget",
        "target",
        "replacesCallId",
        "clientContext",
        "transferee",
        "participantId",
        "meetingInfo",
        "guest",
        "customCallingContext",
        "sipHeaders",
        "X-Ticket",
        "x-é",
        "é",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "https://bot.example/cb",
            "http://127.0.0.1/cb",
            "#microsoft.graph.serviceHostedMediaConfig",
            "#microsoft.graph.appHostedMediaConfig",
            "+12345678901",
            "audio",
            "busy",
            "",
            "u1",
            "ünïcødé",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]
    #[test]
    fn decoders_never_panic_and_always_name_the_field(body in graphish()) {
        for decoder in ["create", "answer", "reject", "redirect", "transfer"] {
            let out = check(decoder, body.clone());
            if out.get("ok").is_none() {
                prop_assert!(out["field"].as_str().is_some_and(|f| !f.is_empty()), "{decoder}: {out}");
                prop_assert!(out["problem"].as_str().is_some_and(|p| !p.is_empty()), "{decoder}: {out}");
            }
        }
        for action in media::ACTIONS {
            if let Err(e) = media::media(action, body.to_string().as_bytes()) {
                prop_assert!(!e.field.is_empty() && !e.problem.is_empty(), "{action}: {e:?}");
            }
        }
    }

    #[test]
    fn decoders_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = call::create_call(&bytes, &POLICY);
        let _ = action::answer(&bytes, &POLICY);
        let _ = action::reject(&bytes, &POLICY);
        let _ = action::redirect(&bytes, &POLICY);
        let _ = transfer::transfer(&bytes);
        for action in media::ACTIONS {
            let _ = media::media(action, &bytes);
        }
    }
}
