#!/usr/bin/env bash
# Front-end throughput of splitmx: messages accepted per second (fsynced before 250) and
# CPU per message, with Postfix's smtp-source (no pipelining, one message per connection,
# and with connections reused) and with a pipelining client (examples/smtp_load.rs).
# Median of RUNS runs. Usage: benches/smtp-throughput.sh [MESSAGES] [SESSIONS] [RUNS]
# Needs: smtp-source (Debian package postfix). The spool goes under $SPOOL_BASE (default:
# target/bench-spool, i.e. on the project's disk, not tmpfs). JOURNAL=off turns the
# recipient journal off, to measure its cost.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-5000}
SESSIONS=${2:-20}
RUNS=${3:-3}
SIZE=4096
JOURNAL=${JOURNAL:-on}
case $JOURNAL in on) JOURNAL_ENABLED=true ;; off) JOURNAL_ENABLED=false ;; *) echo "JOURNAL must be on or off" >&2; exit 1 ;; esac
command -v smtp-source >/dev/null || PATH="$PATH:/usr/sbin"
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)" >&2; exit 1; }

cargo build --release --quiet --bin splitmx --example smtp_load --features server
BIN=target/release/splitmx
LOAD=target/release/examples/smtp_load
BASE=${SPOOL_BASE:-target/bench-spool}
rm -rf "$BASE"; mkdir -p "$BASE/routing"
cat > "$BASE/routing/example.com.yaml" <<'YAML'
routes:
  local: maildir:mail/{domain}/{user}
domains: [example.com]
default: local
YAML
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$BASE/splitmx.yaml" <<YAML
hostname: bench.example.net
listen: ["127.0.0.1:$PORT"]
spool: spool
smtp:
  max_connections_per_ip: 1000
journal:
  enabled: $JOURNAL_ENABLED
delivery:
  enabled: false   # the front end alone; benches/e2e-vs-postfix.sh measures delivery too
YAML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

start() {
    rm -rf "$BASE/spool"
    SPLITMX_LOG=warn "$BIN" serve --config "$BASE/splitmx.yaml" 2>"$BASE/serve.log" &
    PID=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "gateway did not start:" >&2; cat "$BASE/serve.log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

# One measurement: prints "msgs_per_s cpu_ms_per_msg"
measure() {
    local kind=$1
    start
    local t0 c0 t1 c1
    c0=$(cpu_ticks "$PID"); t0=$(date +%s.%N)
    case $kind in
        source-1) smtp-source -s "$SESSIONS" -m "$MESSAGES" -l $SIZE -f load@example.org -t user@example.com "127.0.0.1:$PORT" ;;
        source-reuse) smtp-source -d -s "$SESSIONS" -m "$MESSAGES" -l $SIZE -f load@example.org -t user@example.com "127.0.0.1:$PORT" ;;
        pipelined) "$LOAD" "127.0.0.1:$PORT" "$SESSIONS" "$MESSAGES" $SIZE 10 >"$BASE/load.out" ;;
    esac
    t1=$(date +%s.%N); c1=$(cpu_ticks "$PID")
    stop
    awk -v m="$MESSAGES" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$hz" \
        'BEGIN { printf "%.0f %.3f\n", m / (t1 - t0), c / hz * 1000 / m }'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "splitmx front-end throughput: $MESSAGES messages of $SIZE bytes, $SESSIONS sessions, median of $RUNS, journal $JOURNAL"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
printf '%-44s %12s %16s\n' "client" "msgs/s" "CPU ms/msg"
for kind in source-1 source-reuse pipelined; do
    rates=(); cpus=()
    for _ in $(seq "$RUNS"); do
        read -r rate cpu < <(measure "$kind")
        rates+=("$rate"); cpus+=("$cpu")
    done
    case $kind in
        source-1) label="smtp-source, 1 message per connection" ;;
        source-reuse) label="smtp-source -d, connection reused" ;;
        pipelined) label="pipelining client, 10 per connection" ;;
    esac
    printf '%-44s %12s %16s\n' "$label" \
        "$(printf '%s\n' "${rates[@]}" | median)" "$(printf '%s\n' "${cpus[@]}" | median)"
done
