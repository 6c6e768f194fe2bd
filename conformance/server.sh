# Sourced by the shell runners (js/, console/, schemathesis/ run.sh, examples/run.sh): a throwaway switchboard on a free
# loopback port with a temp data dir, stopped and removed when the runner exits.
# Needs $BIN. `start_switchboard [serve flags...]` sets BASE (empty if it did not start) and
# SERVER_PID; the server's stdout and stderr are in $WORK/server.out and $WORK/server.err.

WORK="$(mktemp -d)"
SERVER_PID=""

stop_switchboard() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap stop_switchboard EXIT

# npm ci in folder $1, only when its package-lock.json changed (the lock's hash is stamped inside
# node_modules).
npm_ci_when_lock_changes() {
  local want
  want="$(sha256sum "$1/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$1/node_modules/.lock.sha256" 2>/dev/null)" != "$want" ]; then
    echo "== npm ci ($1)"
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$1/node_modules/.lock.sha256"
  fi
}

# A free loopback port for a receiver the server's webhook must name before the server starts. Not the
# kernel's choice for port 0: the server, started next on port 0, could be given the same port once it
# is free again. Below the ephemeral range (32768 and up on Linux) no port-0 choice can collide with it.
free_port_below_ephemeral() {
  python3 -c 'import random, socket
while True:
    port, s = random.randint(20000, 32000), socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()'
}

start_switchboard() {
  # stdout goes to a file: the server keeps printing and must never block on a full pipe.
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" "$@" >"$WORK/server.out" 2>"$WORK/server.err" &
  SERVER_PID=$!
  BASE=""
  # Up to 60 s while the process is alive: a loaded machine can be slow to start it.
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    BASE="$(head -1 "$WORK/server.out" 2>/dev/null | sed -n 's/^Switchboard .* listening on \(http[^ ]*\).*/\1/p')"
    [ -n "$BASE" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || return 0
    sleep 0.1
  done
}
