#!/usr/bin/env bash
# Backlog drain: how fast splitmx empties its queue when a next hop that was down comes
# back, the moment a mail administrator waits for after an outage.
#
#   benches/drain.sh [MESSAGES [WORKERS [RUNS]]]     (as root: smtp-sink -u nobody)
#
# Per run: a fresh gateway whose only route is smtp:[127.0.0.1]:PORT with nothing
# listening there; smtp-source sends MESSAGES 4 KiB messages (20 sessions, connections
# reused), each first attempt fails (connection refused) and the messages are deferred.
# Then an smtp-sink starts on PORT and `splitmx queue retry --all` is timed until the
# sink holds every message. Prints, per run and as medians: messages/s, gateway CPU per
# message, and the gateway's sendto/recvfrom per message while draining (perf stat,
# when perf is installed). WORKERS is delivery.max_per_next_hop.
#
# Settings (environment): SPLITMX=path (default target/release/splitmx, built when
# missing), BENCH_DIR=target (the spool's disk), KEEP=1 keeps the scratch directory.
set -uo pipefail
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=${1:-${MESSAGES:-10000}}
WORKERS=${2:-${WORKERS:-20}}
RUNS=${3:-${RUNS:-3}}
SPLITMX=${SPLITMX:-$ROOT/target/release/splitmx}
BENCH_DIR=${BENCH_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}
HZ=$(getconf CLK_TCK)

die() { echo "ERROR: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (smtp-sink -u nobody)"
for c in smtp-source smtp-sink python3; do command -v $c >/dev/null || die "$c not found"; done
if [ ! -x "$SPLITMX" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin splitmx) || die "cargo build failed"
fi
PERF=$(command -v perf || true)

WORK=$(mktemp -d -p "$BENCH_DIR" drain.XXXXXX) || die "cannot create a scratch directory"
GW_PID="" SINK_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    wait 2>/dev/null
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_until() { # SECONDS COMMAND...: poll every 20 ms
    local end=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.02; done
}
sink_count() {
    tail -c 300 "$WORK/sink.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2
}
sink_has_all() { [ "$(sink_count)" = "$MESSAGES" ]; }
all_deferred() { [ "$(grep -c 'result="\?deferred' "$WORK/serve.log")" -ge "$MESSAGES" ]; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { sort -g | awk '{v[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.4g\n", (v[NR/2]+v[NR/2+1])/2 }'; }

run() {
    local port sink_port t0 t1 c0 c1 rate cpu sends recvs
    rm -rf "$WORK/spool" "$WORK/routing" "$WORK"/*.log "$WORK/sink.out" "$WORK/perf.txt"
    mkdir -p "$WORK/routing"
    port=$(free_port); sink_port=$(free_port)
    cat >"$WORK/splitmx.yaml" <<EOF
hostname: gw.drain.test
listen: ["127.0.0.1:$port"]
routing: { dir: routing }
spool: spool
smtp:
  max_connections_per_ip: 50
delivery:
  max_per_next_hop: $WORKERS
  retry_min: 1h        # no retry but the one this script asks for
  retry_max: 2h
EOF
    printf 'domains: [example.com]\nroutes:\n  suite: "smtp:[127.0.0.1]:%s"\ndefault: suite\n' \
        "$sink_port" >"$WORK/routing/example.com.yaml"
    (cd "$WORK" && SPLITMX_LOG=info exec "$SPLITMX" serve --config splitmx.yaml 2>serve.log) &
    GW_PID=$!
    wait_until 30 listening "$port" || die "splitmx did not start: $(tail -n 5 "$WORK/serve.log")"
    smtp-source -m "$MESSAGES" -s 20 -d -N -l 4096 -f sender@example.net \
        -t user@example.com "127.0.0.1:$port" || die "smtp-source failed"
    wait_until 120 all_deferred || die "the first attempts did not all fail"
    smtp-sink -c -u nobody "127.0.0.1:$sink_port" 256 >"$WORK/sink.out" 2>&1 &
    SINK_PID=$!
    wait_until 30 listening "$sink_port" || die "smtp-sink did not start"
    [ -n "$PERF" ] && {
        "$PERF" stat -x, -e syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom \
            -p "$GW_PID" -o "$WORK/perf.txt" &
        PERF_PID=$!
        sleep 0.2
    }
    c0=$(cpu_ticks "$GW_PID"); t0=$(date +%s.%N)
    (cd "$WORK" && "$SPLITMX" queue retry --all --config splitmx.yaml >/dev/null) ||
        die "queue retry --all failed"
    wait_until 600 sink_has_all || die "the sink got $(sink_count) of $MESSAGES"
    t1=$(date +%s.%N); c1=$(cpu_ticks "$GW_PID")
    [ -n "$PERF" ] && { kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null; }
    rate=$(awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    cpu=$(awk -v n="$MESSAGES" -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) * 1000 / hz / n }')
    sends=$(awk -F, -v n="$MESSAGES" '/sendto/ { printf "%.2f", $1 / n }' "$WORK/perf.txt" 2>/dev/null)
    recvs=$(awk -F, -v n="$MESSAGES" '/recvfrom/ { printf "%.2f", $1 / n }' "$WORK/perf.txt" 2>/dev/null)
    printf '%-4s %8s %8s %8s %8s\n' "$1" "$rate" "$cpu" "${sends:--}" "${recvs:--}"
    echo "$rate $cpu ${sends:--} ${recvs:--}" >>"$WORK/rows"
    kill "$GW_PID" "$SINK_PID"; wait "$GW_PID" "$SINK_PID" 2>/dev/null; GW_PID="" SINK_PID=""
}

echo "drain of $MESSAGES messages, max_per_next_hop $WORKERS, $RUNS runs ($SPLITMX)"
printf '%-4s %8s %8s %8s %8s\n' run msg/s cpu_ms sendto recvfrom
for r in $(seq 1 "$RUNS"); do run "$r"; done
printf '%-4s %8s %8s %8s %8s\n' median \
    "$(cut -d' ' -f1 "$WORK/rows" | median)" "$(cut -d' ' -f2 "$WORK/rows" | median)" \
    "$(cut -d' ' -f3 "$WORK/rows" | grep -v - | median)" "$(cut -d' ' -f4 "$WORK/rows" | grep -v - | median)"
echo "msg/s: messages / time from \`queue retry --all\` until the sink had them all;"
echo "cpu_ms: gateway CPU per message over that time; sendto, recvfrom: gateway system calls"
echo "per message over that time (front end idle: delivery only)."
