"""Where Switchboard deliberately differs from Microsoft Graph, and why. Rendered into docs/CONFORMANCE.md."""

DEVIATIONS = [
    {
        "what": "The token authority is Switchboard itself, over HTTPS.",
        "why": "Bots point azure-identity's `authority` at the server (`disable_instance_discovery=True`) instead of "
        "login.microsoftonline.com. azure-identity refuses a plain-http authority, so `--tls` generates a self-signed "
        "certificate for localhost/127.0.0.1 that the bot must trust.",
    },
    {
        "what": "Notification signing keys are published by Switchboard.",
        "why": "At `/notifications/v1/.well-known/openid-configuration` (and its `jwks_uri`) instead of "
        "api.aps.skype.com; the bot's validator is configured with that URL. The claims (`iss` "
        "https://api.botframework.com, `aud`, `tid`, `iat`/`nbf`/`exp`, RS256 with `kid`) are Graph's.",
    },
    {
        "what": "The 2018 notification format is chosen per application, not by API path or date.",
        "why": "Graph switched every bot at once; a self-hosted server has to serve old and new bots side by side, "
        "so an app configured with `notification_format = \"beta-2018\"` (the demo's Legacy Bot) gets the 2018 "
        "envelope and operation-style transfer progress on every path, and modern apps get today's format on "
        "every path, including `/beta/app/calls` and `/beta/applications/{appId}/calls`.",
    },
    {
        "what": "Calls run on a simulated network, with its own control API.",
        "why": "`/sim/v1` (admin key) places incoming calls, hangs up far ends and scripts party behaviours; it is "
        "not part of Graph and the suite does not schema-check it.",
    },
    {
        "what": "Failure codes where Graph documents none.",
        "why": "Busy and declined callees end calls with the SIP status and subcode 0 (486/0, 603/0); failure "
        "messages are Switchboard's own text in Graph's `... DiagCode: {code}#{subcode}.@` form.",
    },
    {
        "what": "The replaced call of a consultative transfer ends with a documented reason.",
        "why": "Graph documents nothing for call B; Switchboard ends it with `deleted`, `terminationReason: "
        "AppTransferred` and `resultInfo` 200/7015 naming call A, so the bot can tell why B ended.",
    },
    {
        "what": "A transfer from a group call that others stay in returns the call to `established`.",
        "why": "Graph documents example 5's request but no notifications for it. The bot is still in the call, so "
        "Switchboard sends `transferring`, `transferAccepted` (no media change), `established` with `resultInfo` "
        "0/7015 GracefulTransferCompleted, then the roster without the transferee; transferring the last member "
        "ends the call as a peer-to-peer transfer does.",
    },
    {
        "what": "Group calls end with documented end reasons of Graph's table.",
        "why": "Nobody joined: 200/5013; the last member left: 200/5002. Rosters are always whole (no delta "
        "rosters), with the bot first and members in invitation order.",
    },
    {
        "what": "`callbackUri` may be plain http on loopback.",
        "why": "Graph requires HTTPS callbacks; Switchboard also accepts http://127.0.0.1, localhost and [::1], so a "
        "bot under test needs no certificate (http to any other host is still refused).",
    },
    {
        "what": "The placeholder `replacesCallId: \"replacesCallId-value\"` is refused.",
        "why": "Example 1 of the 2018 beta and 2021 v1.0 pages sends it while documenting a blind transfer. It names no "
        "call, and an unknown replacesCallId is refused (409 Conflict) like any other call that is not live; without it the example runs as "
        "documented (`crates/switchboard/tests/it/seeds.rs` sends both bodies).",
    },
    {
        "what": "The media-state change of a transfer always follows `transferAccepted`.",
        "why": "The pages allow either order (\"may happen after or before media state audio inactive\"); one fixed "
        "order keeps a bot's tests deterministic.",
    },
    {
        "what": "`subcode`, never `subCode`, on a call's `resultInfo`.",
        "why": "The pages' failure examples spell `subCode`; the schema and the success examples say `subcode`. The "
        "2018 operations keep their string `subCode`, as their page shows.",
    },
    {
        "what": "`replacesContext` exactly when the failed transfer was consultative.",
        "why": "The v1.0 page shows it on example 1 (blind, with the placeholder) and omits it on example 4 "
        "(consultative); Switchboard sends the replacesCallId the transfer was for, and nothing on a blind one.",
    },
    {
        "what": "A 2018 operation echoes the clientContext the bot sent.",
        "why": "The 2018 page's example 1 sends `clientContext-value` but shows another value in its notifications.",
    },
    {
        "what": "Timing is configurable.",
        "why": "The ring timeout (`--ring-timeout-ms`, 60 s by default as in Graph) and the notification retry "
        "schedule (`--retry-first-ms`) can be shortened for tests.",
    },
]
