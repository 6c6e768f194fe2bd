#!/usr/bin/env bash
# Fuzzes Switchboard against its own OpenAPI document (/openapi.json) with Schemathesis.
#
# Starts a throwaway server (free port, temp data dir), fetches a token, runs every Schemathesis
# check with positive and negative data and a fixed seed, and writes
# target/conformance/schemathesis.json ({"cases": N, "ok": bool, "failures": [...]}).
# Exits non-zero on any failed check (5xx, undocumented status, response not matching its schema, ...),
# a Schemathesis error, a server that does not start, or a run over the time bound.
#
# Env: SWITCHBOARD_BIN (default $ROOT/target/debug/switchboard), PYTHON (default python3),
#      ST_MAX_EXAMPLES (default 100 per operation), ST_SEED (default 20261122), ST_TIMEOUT (default 300 s).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/debug/switchboard}"
PYTHON="${PYTHON:-python3}"
OUT_DIR="$ROOT/target/conformance"
OUT="$OUT_DIR/schemathesis.json"
TENANT=aaaaaaaa-0000-4000-8000-000000000001
ADMIN_KEY=switchboard-demo-admin
[ -x "$BIN" ] || { echo "switchboard binary not found at $BIN (build it or set SWITCHBOARD_BIN)" >&2; exit 2; }
mkdir -p "$OUT_DIR"

# --- venv: rebuilt only when requirements.txt changes (its hash is stamped inside the venv).
VENV="$HERE/.venv"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "== installing Schemathesis into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$VENV/.requirements.sha256"
fi

# --- server on a free port with a temp data dir; stopped and removed on exit.
source "$HERE/../server.sh"
fail_early() { # still write the report, so a broken run is visible as one
  printf '{"cases": 0, "ok": false, "failures": [], "errors": [%s]}\n' "$("$PYTHON" -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$1")" > "$OUT"
  echo "schemathesis: $1" >&2; exit 1
}

# Fuzzed bodies carry arbitrary callbackUris (https to any host is valid), so the server would POST
# notifications to wherever the fuzzer points. Every outbound request goes through a proxy address
# on loopback where nothing listens: nothing leaves the machine. The webhooks point there too
# (nothing in this run needs notifications, and they must not reach another suite's receiver on 3978).
DEAD=http://127.0.0.1:9
HTTP_PROXY=$DEAD HTTPS_PROXY=$DEAD ALL_PROXY=$DEAD http_proxy=$DEAD https_proxy=$DEAD all_proxy=$DEAD NO_PROXY= no_proxy= \
  start_switchboard --demo-webhook "$DEAD/api/calls" --legacy-webhook "$DEAD/api/calls"
[ -n "$BASE" ] || { cat "$WORK/server.err" >&2; fail_early "the server did not start"; }
echo "== server $BASE ($("$BIN" --version 2>/dev/null || echo switchboard))"

SB_TOKEN="$(curl -sf "$BASE/$TENANT/oauth2/v2.0/token" -d grant_type=client_credentials \
  -d client_id=cccccccc-0000-4000-8000-000000000003 -d client_secret=switchboard-demo-secret \
  --data-urlencode scope=https://graph.microsoft.com/.default \
  | "$PYTHON" -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')" || fail_early "no token from $BASE"
export SB_TOKEN SB_ADMIN_KEY="$ADMIN_KEY"

# --- the run. Run from $WORK so Schemathesis' caches (.hypothesis, .schemathesis) stay out of the repo.
#  --checks all              every check, including negative_data_rejection and ignored_auth, but
#                            ensure_resource_availability (ST302: "created resource not found"), which
#                            assumes what was created stays: a call placed to a busy or declining party
#                            ends at once, and the next step on it is rightly a 404, as on Graph
#  --mode all                positive and negative data
#  -n / --seed               bounded and reproducible (about 1 min on 2 cores at -n 100)
#  --continue-on-failure     report every failing case, not the first per operation
#  --generation-database none  no example database carried between runs: same seed, same cases
#  -w 1                      one worker: the server shares 2 cores, and order stays reproducible
# Nothing is excluded: every route runs against this throwaway server, whose state (calls hung up,
# behaviours changed, tokens issued) dies with it.
cd "$WORK"
set +e
timeout --kill-after=10 "${ST_TIMEOUT:-300}" "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "$BASE/openapi.json" \
  --checks all --exclude-checks ensure_resource_availability --mode all \
  -n "${ST_MAX_EXAMPLES:-100}" --seed "${ST_SEED:-20261122}" \
  --continue-on-failure --generation-database none -w 1 \
  --request-timeout 10 --no-color \
  --report json,junit --report-dir "$WORK/report" >"$WORK/schemathesis.log" 2>&1
status=$?
set -e
cat "$WORK/schemathesis.log"
if [ $status -eq 124 ] || [ $status -eq 137 ]; then echo "schemathesis: over the ${ST_TIMEOUT:-300} s bound" >&2; fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis: the server died during the run" >&2; tail -20 "$WORK/server.err" >&2; status=3
fi
"$VENV/bin/python" "$HERE/summarize.py" "$WORK/report" "$status" "$OUT"
# ok in the report is false on any failure, error, or non-zero Schemathesis exit.
"$VENV/bin/python" -c 'import json,sys;sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$OUT"
