#!/usr/bin/env bash
# SIP throughput against an anchor measured in the same run (issue 11): SIPp places complete blind
# transfers (INVITE with Digest, the bot answers through Graph, hold re-INVITE, REFER, NOTIFY 100 and
# 200, BYE) at Switchboard on SQLite, durable, with the bot of scripts/bench_sip_bot.py answering and
# transferring through the Graph API; then Kamailio (../shared/sip/kamailio-baseline.cfg) proxies
# SIPp's built-in calls to a SIPp UAS. Both are charged the CPU time their processes used during the
# load. Writes target/bench-sip.json and the SIP section of docs/BENCHMARKS.md. Loopback only.
# QUICK=1 runs shorter loads. Installs sip-tester and kamailio from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=${QUICK:-0}
if [ "$quick" = 1 ]; then sb_rate=200; sb_calls=1000; k_rate=1000; k_calls=5000; else sb_rate=${SB_RATE:-1500}; sb_calls=${SB_CALLS:-15000}; k_rate=2000; k_calls=20000; fi
missing=""
command -v sipp >/dev/null 2>&1 || missing="$missing sip-tester"
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing="$missing kamailio"
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
export PATH="$PATH:/usr/sbin"
cargo build --release -p switchboard --locked -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU seconds (user + system) used so far by the processes given.
cpu() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk -v hz="$(getconf CLK_TCK)" '{s += $1} END {printf "%.2f", s / hz}'; }
# SIPp's count of successful and failed calls, and retransmissions, from its final screen.
tally() { python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
bad = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
retrans = sum(int(m) for m in re.findall(r"^\s+\S+ (?:-+>|<-+)\s+\d+\s+(\d+)", text, re.M))
print(ok[-1] if ok else 0, bad[-1] if bad else 0, retrans)
PY
}

echo "bench-sip: Switchboard, $sb_calls transfers offered at $sb_rate/s" >&2
http=$(free_port); sip=$(free_port); botport=$(free_port)
# Signalling against signalling: no comfort audio (SIPp, the load generator, would spend its one core
# taking 50 packets a second per call, and Kamailio carries no media either).
{ cat docs/switchboard.example.toml; printf '\n[sip]\ncomfort_audio = "off"\n'; } >"$work/switchboard.toml"
RUST_LOG=warn ./target/release/switchboard serve --config "$work/switchboard.toml" --data-dir "$work/data" --listen "127.0.0.1:$http" \
  --sip-listen "127.0.0.1:$sip" --demo-webhook "http://127.0.0.1:$botport/cb" >"$work/sb.log" 2>&1 & sb=$!; pids+=($sb)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.1; done
(cd scripts && exec python3 bench_sip_bot.py "$botport" "http://127.0.0.1:$http") & bot=$!; pids+=($bot)
sleep 1
tests=crates/switchboard/tests/sipp
(cd "$work" && sipp -sf "$root/$tests/register.xml" -i 127.0.0.1 -p 0 -s alex -au alex -ap switchboard-demo-sip -m 1 -nostdin -t u1 "127.0.0.1:$sip" >/dev/null)
sb0=$(cpu "$sb"); bot0=$(cpu "$bot"); t0=$(date +%s.%N)
(cd "$work" && sipp -sf "$root/$tests/phone_transferred.xml" -i 127.0.0.1 -p 0 -s 14255550100 -key caller heidi -au heidi \
  -ap switchboard-demo-sip -r "$sb_rate" -m "$sb_calls" -l "$sb_calls" -nostdin -t u1 "127.0.0.1:$sip" >"$work/sb-sipp.out" 2>&1) || true
t1=$(date +%s.%N); sb1=$(cpu "$sb"); bot1=$(cpu "$bot")
read -r sb_ok sb_failed sb_retrans < <(tally "$work/sb-sipp.out")
kill "$sb" "$bot" 2>/dev/null || true

echo "bench-sip: Kamailio, $k_calls calls offered at $k_rate/s" >&2
sed 's/^debug=1/debug=0/' ../shared/sip/kamailio-baseline.cfg >"$work/kamailio.cfg"
(cd "$work" && exec sipp -sn uas -i 127.0.0.1 -p 5092 -nostdin >"$work/uas.out" 2>&1) & uas=$!; pids+=($uas)
kamailio -f "$work/kamailio.cfg" -DD -E -Y "$work" -P "$work/k.pid" -m 2048 -M 32 >"$work/k.log" 2>&1 & kam=$!; pids+=($kam)
sleep 2
kpids=$(pgrep -x kamailio | tr '\n' ' ')
# shellcheck disable=SC2086
k0=$(cpu $kpids); u0=$(date +%s.%N)
(cd "$work" && sipp -sn uac -i 127.0.0.1 -p 0 -r "$k_rate" -m "$k_calls" -nostdin -t u1 127.0.0.1:5090 >"$work/k-sipp.out" 2>&1) || true
# shellcheck disable=SC2086
u1=$(date +%s.%N); k1=$(cpu $kpids)
read -r k_ok k_failed k_retrans < <(tally "$work/k-sipp.out")

mkdir -p target
python3 - "$sb_rate" "$sb_calls" "$sb_ok" "$sb_failed" "$sb_retrans" "$t0" "$t1" "$sb0" "$sb1" "$bot0" "$bot1" \
  "$k_rate" "$k_calls" "$k_ok" "$k_failed" "$k_retrans" "$u0" "$u1" "$k0" "$k1" "$quick" <<'PY'
import json, os, platform, sys
a = sys.argv[1:]
f = lambda i: float(a[i])
sb = dict(offered_per_s=f(0), calls=int(a[1]), ok=int(a[2]), failed=int(a[3]), retransmissions=int(a[4]), seconds=round(f(6) - f(5), 2),
          cpu_s=round(f(8) - f(7), 2), bot_cpu_s=round(f(10) - f(9), 2))
k = dict(offered_per_s=f(11), calls=int(a[12]), ok=int(a[13]), failed=int(a[14]), retransmissions=int(a[15]), seconds=round(f(17) - f(16), 2),
         cpu_s=round(f(19) - f(18), 2))
for r in (sb, k):
    r["calls_per_s"] = round(r["ok"] / r["seconds"], 1)
    r["cpu_us_per_call"] = round(r["cpu_s"] * 1e6 / max(r["ok"], 1))
    r["calls_per_cpu_s"] = round(r["ok"] / max(r["cpu_s"], 0.01), 1)
ratio = round(sb["calls_per_cpu_s"] / k["calls_per_cpu_s"], 3)
json.dump({"switchboard": sb, "kamailio": k, "efficiency_ratio": ratio, "quick": a[20] == "1"}, open("target/bench-sip.json", "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
section = [
    "## SIP: complete blind transfers against Kamailio", "",
    f"Machine: {os.cpu_count()} cores ({cpu}). Everything on it at once: the server under test, SIPp, and for Switchboard "
    "the bot (`scripts/bench_sip_bot.py`, Python), which answers each call and transfers it through the Graph API.", "",
    "- **Switchboard** (SQLite, durable; `phone_transferred.xml`): the phone's INVITE with Digest (401, then INVITE), "
    "100/180/200/ACK once the bot answers, the hold re-INVITE, REFER/202, NOTIFY 100 and 200, Switchboard's BYE; on the "
    "Graph side the incoming notification, the answer, establishing/established, the transfer, transferring/"
    "transferAccepted/terminated, every notification signed and delivered.",
    "- **Kamailio** (`../shared/sip/kamailio-baseline.cfg`, a stateful record-routing proxy, 2 children): SIPp's "
    "built-in INVITE/100/180/200/ACK/BYE/200 relayed to a SIPp UAS. A proxy, not a B2BUA: the anchor for how much SIP "
    "this machine moves per CPU-second.", "",
    "CPU is what the server's processes used during the load (user + system, from /proc), the bot and SIPp excluded. "
    "Signalling only: Switchboard runs with `comfort_audio = \"off\"` (its RTP would load SIPp, the generator, and Kamailio "
    "carries no media).", "",
    "| server | offered /s | completed | failed | retransmissions | calls /s | CPU s | µs CPU per call | calls per CPU-s |",
    "|---|---|---|---|---|---|---|---|---|",
]
for name, r in (("Switchboard (full transfer, Graph and SIP)", sb), ("Kamailio (proxied call)", k)):
    section.append(f"| {name} | {r['offered_per_s']:.0f} | {r['ok']} of {r['calls']} | {r['failed']} | {r['retransmissions']} | "
                   f"{r['calls_per_s']} | {r['cpu_s']} | {r['cpu_us_per_call']} | {r['calls_per_cpu_s']} |")
section += ["", f"Switchboard's calls per CPU-second ÷ Kamailio's: **{ratio}** (the aim is at least 0.25). The bot used "
            f"{sb['bot_cpu_s']} CPU-s besides.", "",
            "Where Switchboard's time goes (perf, 2026-11-30): the SIP side (parsing, the endpoint, UDP send and "
            "receive) is some 150 µs per call, in Kamailio's range; the rest is the Graph pipeline every transfer pays "
            "without SIP too (commits, notifications, HTTP). Issue 10's work on that pipeline (group commit, network "
            "events applied per call side by side) took the ratio from 0.18 at 600 offered/s to 0.30 at 1,000/s and "
            "0.39 at 1,500/s; the cost per call falls as the load rises, since commits and POSTs are shared by more "
            "calls.", ""]
sys.path.insert(0, "scripts")
import benchlib
benchlib.splice("docs/BENCHMARKS.md", "sip", "scripts/bench_sip.sh", section)
print("\n".join(section))
print(f"bench-sip: sb_calls_per_s={sb['calls_per_s']} sb_failed={sb['failed']} sb_us_per_call={sb['cpu_us_per_call']} "
      f"kamailio_us_per_call={k['cpu_us_per_call']} ratio={ratio}")
PY
