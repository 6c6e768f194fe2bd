#!/usr/bin/env bash
# The README's curl examples, end to end, against a running `switchboard serve` on the demo directory:
# a call step by step, then a blind, a consultative and a PSTN transfer, and the 2018 body. Each step
# checks its HTTP status and waits for the state it leads to; the script stops at the first surprise.
#
#   switchboard serve                # in another terminal
#   examples/curl-walkthrough.sh     # B=http://127.0.0.1:8080 by default
#
# No bot is needed: the notifications for the Demo Bot's webhook (127.0.0.1:3978) are retried while
# nothing listens there, and the calls go on. Open http://127.0.0.1:8080/console to watch them.
set -euo pipefail
B=${B:-http://127.0.0.1:8080}
T=aaaaaaaa-0000-4000-8000-000000000001
ADMIN='X-Sim-Admin-Key: switchboard-demo-admin'
DEMO_BOT=cccccccc-0000-4000-8000-000000000003
LEGACY_BOT=cccccccc-0000-4000-8000-000000000006
RECEPTION=dddddddd-0000-4000-8000-000000000004
HEIDI=550fae72-d251-43ec-868c-373732c2704f
ALEX=751f6800-3180-414d-bd94-333364659951

# A field of the JSON on stdin, e.g. `field id`.
field() { python3 -c 'import json,sys;print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# expect STATUS METHOD PATH [curl args...]: prints the body; any other status stops the script.
expect() {
  local want=$1 method=$2 path=$3; shift 3
  local body status
  body=$(curl -s -w '\n%{http_code}' -X "$method" "$B$path" "$@")
  status=${body##*$'\n'}
  body=${body%$'\n'*}
  if [ "$status" != "$want" ]; then
    echo "FAIL $method $path: expected $want, got $status: $body" >&2
    exit 1
  fi
  printf '%s' "$body"
}

# wait_for CALL STATE: until the call's story says STATE (up to 5 s).
wait_for() {
  local state=""
  for _ in $(seq 50); do
    state=$(curl -s "$B/sim/v1/calls/$1/history" -H "$ADMIN" | field state)
    [ "$state" = "$2" ] && { echo "   call ${1:0:8}… is $2"; return 0; }
    sleep 0.1
  done
  echo "FAIL call $1 did not become $2 (it is $state)" >&2
  exit 1
}

# The Demo Bot's token.
TOKEN=$(expect 200 POST "/$T/oauth2/v2.0/token" -d grant_type=client_credentials -d client_id=$DEMO_BOT \
  -d client_secret=switchboard-demo-secret --data-urlencode scope=https://graph.microsoft.com/.default | field access_token)
AUTH="Authorization: Bearer $TOKEN"
JSON='content-type: application/json'
ANSWER='{"callbackUri":"http://127.0.0.1:3978/api/calls","acceptedModalities":["audio"],
         "mediaConfig":{"@odata.type":"#microsoft.graph.serviceHostedMediaConfig"}}'

# answered FROM TO: FROM calls TO (a bot, an instance or its number), the bot answers; prints the call id.
answered() {
  local call
  call=$(expect 201 POST /sim/v1/calls -H "$ADMIN" -H "$JSON" -d "{\"from\":\"$1\",\"to\":\"$2\"}" | field callId)
  expect 202 POST "/v1.0/communications/calls/$call/answer" -H "$AUTH" -H "$JSON" -d "$ANSWER" >/dev/null
  wait_for "$call" established >&2
  echo "$call"
}

echo "== A call, step by step: Heidi calls the bot, the bot answers, reads the call, hangs up"
CALL=$(answered $HEIDI $DEMO_BOT)
expect 200 GET "/v1.0/communications/calls/$CALL" -H "$AUTH" | field state
expect 204 DELETE "/v1.0/communications/calls/$CALL" -H "$AUTH"
wait_for "$CALL" terminated

echo "== Blind transfer: Alex calls the bot, the bot answers, then hands Alex to Heidi"
CALL=$(answered $ALEX $DEMO_BOT)
expect 202 POST "/v1.0/communications/calls/$CALL/transfer" -H "$AUTH" -H "$JSON" \
  -d '{"transferTarget":{"endpointType":"default","identity":{"user":{"id":"550fae72-d251-43ec-868c-373732c2704f","displayName":"Heidi Steen"}}}}'
wait_for "$CALL" terminated
# Alex's leg is now connected to Heidi's:
curl -s "$B/sim/v1/world" -H "$ADMIN" | python3 -c 'import json,sys
for l in json.load(sys.stdin)["legs"]: print("  ", l["party"].get("displayName"), l["state"], "with", l["peer"].get("legId"))'
expect 200 POST /sim/v1/reset -H "$ADMIN" >/dev/null; echo

echo "== Consultative transfer: with Alex on call A, the bot calls Heidi (call B), then hands Alex to her in B's place"
A=$(answered $ALEX $DEMO_BOT)
B_CALL=$(expect 201 POST /v1.0/communications/calls -H "$AUTH" -H "$JSON" -d '{
  "callbackUri": "http://127.0.0.1:3978/api/calls", "requestedModalities": ["audio"],
  "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
  "targets": [{"identity": {"user": {"id": "550fae72-d251-43ec-868c-373732c2704f"}}}],
  "tenantId": "aaaaaaaa-0000-4000-8000-000000000001"}' | field id)
wait_for "$B_CALL" established        # Heidi answers after 200 ms
expect 202 POST "/v1.0/communications/calls/$A/transfer" -H "$AUTH" -H "$JSON" \
  -d "{\"transferTarget\":{\"endpointType\":\"default\",\"identity\":{\"user\":{\"id\":\"$HEIDI\"}},\"replacesCallId\":\"$B_CALL\"}}"
wait_for "$A" terminated              # AppTransferred
wait_for "$B_CALL" terminated         # 200/7015: handed over to A's caller
expect 200 POST /sim/v1/reset -H "$ADMIN" >/dev/null; echo

echo "== To PSTN: Alex calls the Contoso Reception instance (a PSTN target needs a call of an instance), then goes to +12345678901"
CALL=$(answered $ALEX $RECEPTION)
expect 202 POST "/v1.0/communications/calls/$CALL/transfer" -H "$AUTH" -H "$JSON" \
  -d '{"transferTarget":{"endpointType":"default","identity":{"phone":{"id":"+12345678901"}}}}'
wait_for "$CALL" terminated
expect 200 POST /sim/v1/reset -H "$ADMIN" >/dev/null; echo

echo "== The 2018 body on /beta/app/calls: top-level \`target\` is a bare identitySet (no \`identity\` wrapper)"
LEGACY=$(expect 200 POST "/$T/oauth2/v2.0/token" -d grant_type=client_credentials -d client_id=$LEGACY_BOT \
  -d client_secret=switchboard-demo-secret --data-urlencode scope=https://graph.microsoft.com/.default | field access_token)
CALL=$(expect 201 POST /sim/v1/calls -H "$ADMIN" -H "$JSON" -d "{\"from\":\"$ALEX\",\"to\":\"$LEGACY_BOT\"}" | field callId)
expect 202 POST "/beta/app/calls/$CALL/answer" -H "Authorization: Bearer $LEGACY" -H "$JSON" \
  -d '{"callbackUri":"http://127.0.0.1:3980/api/calls","acceptedModalities":["audio"],
       "mediaConfig":{"@odata.type":"#microsoft.graph.serviceHostedMediaConfig"}}' >/dev/null
wait_for "$CALL" established
expect 202 POST "/beta/app/calls/$CALL/transfer" -H "Authorization: Bearer $LEGACY" -H "$JSON" \
  -d '{"target":{"user":{"id":"550fae72-d251-43ec-868c-373732c2704f","displayName":"Heidi Steen"}},"clientContext":"walkthrough"}'
wait_for "$CALL" terminated
expect 200 POST /sim/v1/reset -H "$ADMIN" >/dev/null; echo

echo "curl-walkthrough: every step as documented"
