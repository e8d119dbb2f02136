#!/usr/bin/env bash
# End-to-end benchmark: splitmx and Postfix side by side on the same split-delivery job.
#
#   benches/e2e-vs-postfix.sh [MESSAGES [SESSIONS [RUNS [SIZE]]]]     (as root)
#
# Each gateway is the single MX of example.com. 10,000 recipients are valid,
# 1user@example.com ... 10000user@example.com; odd ones are relayed to the "local" backend
# and even ones to the "suite" backend, two smtp-sink processes on 127.0.0.1; any other
# recipient gets 550 5.1.1 at RCPT. Both gateways fsync every accepted message before they
# answer 250 (Postfix: cleanup fsyncs the queue file; splitmx: the spool's group commit),
# and both queues live on the same file system (BENCH_DIR).
#
# Load: smtp-source sends MESSAGES messages with SIZE-byte bodies and one recipient each
# over SESSIONS concurrent sessions, split over SOURCES smtp-source processes so that the
# generator can use more than one core. `-N` numbers the recipients 1user@, 2user@, ... in
# each process, so every session alternates between the two backends and the expected
# split is known exactly (with the defaults, each process sends to 1user@ ... 5000user@:
# 5,000 messages per backend). Two modes: "conn", a new connection per message, and
# "reuse" (smtp-source -d), one connection per session for all of its messages.
# smtp-sink's counter (-c) counts messages, not recipients, so each sink also appends every
# transaction to a dump file (-D, on tmpfs) from which the recipients are counted; that
# costs the sinks about a third more CPU, in the ceiling run too.
#
# Per round and mode: the ceiling (smtp-source straight into an smtp-sink, same flags),
# then Postfix, then splitmx; RUNS rounds, so the gateways alternate. Per run: front-end
# accept rate (smtp-source start to exit), end-to-end rate (start until the sinks together
# hold every message), gateway CPU per message, peak memory, and the recipients each sink
# received, checked one by one against the map from the sinks' dumps (every recipient at
# the right sink, none missing, none twice). Prints the medians and splitmx/Postfix.
# For splitmx it also reports, from its metrics endpoint, the spool's messages per fsync
# and how long messages waited for their commit (median, and p90 in the log).
# Exits 1 if any run's split is not exact, 2 on a setup error or a run that cannot finish.
#
# Needs: Debian with `apt-get install postfix` (postfix, postmap, smtp-source, smtp-sink in
# /usr/sbin), perl, coreutils; cargo when target/release/splitmx is missing or stale.
#
# Settings (environment; the positional arguments override the first four):
#   MESSAGES=10000 SESSIONS=20 RUNS=3 SIZE=4096
#   MODES="conn reuse"          which load modes to run
#   GATEWAYS="postfix splitmx"  which gateways (GATEWAYS=postfix: Postfix and ceiling only)
#   SOURCES=2                   smtp-source processes per run (more if MESSAGES/SOURCES > 10000)
#   WARMUP=1000                 untimed messages through each gateway first (checked too)
#   STALL_TIMEOUT=30            a run fails after this many seconds without a new delivery
#   RUN_TIMEOUT=600             ... or after this many seconds in all
#   BENCH_DIR=target            where the scratch directory (queues, spool, logs) goes; a
#                               disk, not tmpfs, or fsync costs nothing
#   DUMP_DIR=/dev/shm           where the sinks' message dumps go (kept off the queue disk)
#   SPLITMX=path                a prebuilt binary (default target/release/splitmx, built
#                               with cargo when missing or older than the sources)
#   SPLITMX_LOG=info            splitmx's log level (its log goes to a file, as Postfix's)
#   KEEP=1                      keep the scratch directory (config, logs) after the run
#   QUIESCE=1                   seconds of rest after a `sync` before each run, so that no
#                               run pays for the previous one's disk writeback
set -uo pipefail
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=${1:-${MESSAGES:-10000}}
SESSIONS=${2:-${SESSIONS:-20}}
RUNS=${3:-${RUNS:-3}}
SIZE=${4:-${SIZE:-4096}}
MODES=${MODES:-conn reuse}
GATEWAYS=${GATEWAYS:-postfix splitmx}
SOURCES=${SOURCES:-2}
WARMUP=${WARMUP:-1000}
STALL_TIMEOUT=${STALL_TIMEOUT:-30}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
BENCH_DIR=${BENCH_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}
DUMP_DIR=${DUMP_DIR:-/dev/shm}
SPLITMX=${SPLITMX:-}
SPLITMX_LOG=${SPLITMX_LOG:-info}
KEEP=${KEEP:-0}

VALID=10000                  # 1user@ ... 10000user@example.com
SENDER=sender@example.net
SETTLE=1                     # seconds after the last delivery before CPU and dumps are read
QUIESCE=${QUIESCE:-1}        # seconds of rest after a sync before each run
HZ=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\\n\", $2 }"; }   # calc FORMAT EXPRESSION

# ------------------------------------------------------------------------ arguments
for v in MESSAGES SESSIONS RUNS SIZE SOURCES WARMUP STALL_TIMEOUT RUN_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
if [ "$MESSAGES" -lt 1 ] || [ "$RUNS" -lt 1 ] || [ "$SIZE" -lt 1 ] || [ "$SESSIONS" -lt 1 ]; then
    die "MESSAGES, SESSIONS, RUNS and SIZE must be at least 1"
fi
for g in $GATEWAYS; do case $g in postfix | splitmx) ;; *) die "GATEWAYS: unknown gateway '$g'" ;; esac; done
for m in $MODES; do case $m in conn | reuse) ;; *) die "MODES: unknown mode '$m' (conn, reuse)" ;; esac; done
# Each smtp-source process numbers its recipients from 1, so it may send at most VALID.
P=$SOURCES
[ "$P" -ge 1 ] || P=1
while [ $(((MESSAGES + P - 1) / P)) -gt $VALID ]; do P=$((P + 1)); done
[ "$SESSIONS" -ge "$P" ] || P=$SESSIONS
[ $(((MESSAGES + P - 1) / P)) -le $VALID ] ||
    die "$MESSAGES messages need more than $SESSIONS sessions (at most $VALID per smtp-source process)"
if [ "$MESSAGES" -lt "$P" ] || { [ "$WARMUP" -gt 0 ] && [ "$WARMUP" -lt "$P" ]; }; then
    die "MESSAGES and WARMUP must be at least the number of smtp-source processes ($P)"
fi

# share N I: process I's part of N split over P processes
share() { echo $(($1 / P + ($2 < $1 % P ? 1 : 0))); }
parts() { local i out=""; for ((i = 0; i < P; i++)); do out="$out $(share "$1" $i)"; done; echo "${out# }"; }

# ------------------------------------------------------------------------ requirements
[ "$(id -u)" = 0 ] || die "run as root (Postfix's master and smtp-sink -u need it)"
for c in postfix postconf postmap postqueue smtp-source smtp-sink; do
    command -v $c >/dev/null || die "$c not found: install Postfix (apt-get install -y postfix)"
done
for c in perl awk timeout getconf find; do command -v $c >/dev/null || die "$c not found"; done
id postfix >/dev/null 2>&1 || die "no 'postfix' user: install Postfix (apt-get install -y postfix)"
mkdir -p "$BENCH_DIR" || die "cannot create BENCH_DIR $BENCH_DIR"
if [ ! -d "$DUMP_DIR" ] || [ ! -w "$DUMP_DIR" ]; then
    log "no $DUMP_DIR: the sinks' dumps go to $BENCH_DIR, on the queues' disk"
    DUMP_DIR=$BENCH_DIR
fi

# ------------------------------------------------------------------------ splitmx binary
case " $GATEWAYS " in *" splitmx "*)
    if [ -z "$SPLITMX" ]; then
        SPLITMX=${CARGO_TARGET_DIR:-$ROOT/target}/release/splitmx
        why=""
        if [ ! -x "$SPLITMX" ]; then
            why="missing"
        else
            newer=$(cd "$ROOT" && find src Cargo.toml Cargo.lock -newer "$SPLITMX" -print -quit 2>/dev/null)
            [ -n "$newer" ] && why="older than $newer"
        fi
        if [ -n "$why" ]; then
            command -v cargo >/dev/null || die "$SPLITMX is $why and cargo is not installed (or set SPLITMX=path)"
            log "building splitmx: cargo build --release --bin splitmx"
            (cd "$ROOT" && cargo build --release --bin splitmx) || die "cargo build --release failed"
        fi
    fi
    [ -x "$SPLITMX" ] || die "no splitmx binary at $SPLITMX"
    ;;
esac

# ------------------------------------------------------------------------ scratch + cleanup
WORK=""
DUMPS=""
declare -A SINK_PID SINK_PORT
SX_PID=""
PF_STARTED=0
BG=()    # smtp-source processes in flight
MON=""   # the memory monitor of the run in flight
POLL=""  # the sink poller in flight

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BG[@]}" "$MON" "$POLL"; do pid_alive "$p" && kill "$p" 2>/dev/null; done
    if pid_alive "$SX_PID"; then
        kill "$SX_PID" 2>/dev/null
        for _ in $(seq 50); do pid_alive "$SX_PID" || break; sleep 0.1; done
        pid_alive "$SX_PID" && kill -9 "$SX_PID" 2>/dev/null
    fi
    if [ "$PF_STARTED" = 1 ]; then
        postfix -c "$PF_ETC" stop >/dev/null 2>&1
        for _ in $(seq 100); do postfix -c "$PF_ETC" status >/dev/null 2>&1 || break; sleep 0.1; done
        if postfix -c "$PF_ETC" status >/dev/null 2>&1; then
            log "our postfix instance did not stop; aborting it"
            postfix -c "$PF_ETC" abort >/dev/null 2>&1
        fi
    fi
    for p in "${SINK_PID[@]}"; do pid_alive "$p" && kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$KEEP" = 1 ] && [ -n "$WORK" ]; then
        log "kept $WORK"
    else
        [ -n "$WORK" ] && rm -rf "$WORK"
    fi
    [ -n "$DUMPS" ] && rm -rf "$DUMPS"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d "$BENCH_DIR/e2e-vs-postfix.XXXXXX") || die "mktemp in $BENCH_DIR"
DUMPS=$(mktemp -d "$DUMP_DIR/e2e-vs-postfix-dumps.XXXXXX") || die "mktemp in $DUMP_DIR"
# Postfix's daemons and the sinks run as the postfix user: they must reach these.
chmod 755 "$WORK" "$DUMPS"
chown postfix: "$DUMPS"
PF=$WORK/postfix
PF_ETC=$PF/etc
SX=$WORK/splitmx
SINKS=$WORK/sinks
RUNDIR=$WORK/runs
mkdir -p "$PF_ETC" "$PF/queue" "$PF/data" "$PF/log" "$SX/routing" "$SINKS" "$RUNDIR"
chown postfix: "$PF/data"
chmod 700 "$PF/data"

# ------------------------------------------------------------------------ ports, processes
# N free TCP ports on 127.0.0.1, all different.
free_ports() {
    perl -MIO::Socket::INET -e '
        my @s = map { IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
                                            Listen => 1, ReuseAddr => 1) or die "bind: $!\n" } 1 .. $ARGV[0];
        print join(" ", map { $_->sockport } @s), "\n";' "$1"
}

# Is something listening on 127.0.0.1:PORT (or on any address at PORT)? Reads /proc, so
# checking does not open a session on the gateway.
listening() {
    awk -v p="$(printf ':%04X' "$1")" '
        FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p &&
        (substr($2, 1, 8) == "0100007F" || substr($2, 1, 8) == "00000000") { found = 1 }
        END { exit !found }' /proc/net/tcp
}

# wait_listening PORT PID WHAT LOGFILE
wait_listening() {
    for _ in $(seq 200); do
        listening "$1" && return 0
        [ -n "$2" ] && ! pid_alive "$2" && break
        sleep 0.05
    done
    die "$3 is not listening on 127.0.0.1:$1${4:+; last lines of $4:
$(tail -n 20 "$4" 2>/dev/null)}"
}

# start_sink NAME PORT: an smtp-sink that counts messages (-c, on its stdout) and appends
# every transaction, envelope included, to $DUMPS/NAME.dump (-D).
start_sink() {
    local name=$1 port=$2
    listening "$port" && die "127.0.0.1:$port is already taken"
    smtp-sink -c -u postfix -D "$DUMPS/$name.dump" "127.0.0.1:$port" 4096 >"$SINKS/$name.out" 2>&1 &
    SINK_PID[$name]=$!
    SINK_PORT[$name]=$port
    wait_listening "$port" "${SINK_PID[$name]}" "smtp-sink $name" "$SINKS/$name.out"
}

# Messages the sink NAME has received since it started (its -c counter).
sink_count() {
    local n
    n=$(tail -c 300 "$SINKS/$1.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1)
    echo "${n#mesg=}" | grep . || echo 0
}

# wait_delivered TARGET FILE BASE [FILE BASE ...]: poll the sinks' counters every 20 ms
# until they have received TARGET messages more than BASE in all. Sets GOT to the number
# received; fails after STALL_TIMEOUT s without progress or RUN_TIMEOUT s in all. The
# poller runs in the background so that a signal to this script is handled at once.
wait_delivered() {
    local rc
    poll_sinks "$@" >"$RUNDIR/poll.out" &
    POLL=$!
    wait "$POLL"
    rc=$?
    POLL=""
    GOT=$(cat "$RUNDIR/poll.out")
    return $rc
}
# poll_sinks and monitor run only in the background: `exec` makes $! the perl process
# itself (killing a backgrounded function's subshell would orphan its perl), and both
# stop by themselves if this script goes away.
poll_sinks() {
    exec perl -e '
        my ($target, $stall, $total, @fb) = @ARGV;
        my $start = time; my $last = -1; my $progress = time; my $parent = getppid();
        while (getppid() == $parent) {
            my $sum = 0;
            for (my $i = 0; $i < @fb; $i += 2) {
                open(my $fh, "<", $fb[$i]) or next;
                my $size = -s $fh; seek($fh, $size > 300 ? $size - 300 : 0, 0);
                local $/; my $t = <$fh> // ""; close $fh;
                my @m = ($t =~ /mesg=(\d+)\r/g);
                $sum += (@m ? $m[-1] : 0) - $fb[$i + 1];
            }
            if ($sum >= $target) { print "$sum\n"; exit 0 }
            if ($sum != $last) { $last = $sum; $progress = time }
            if (time - $progress > $stall || time - $start > $total) { print "$sum\n"; exit 1 }
            select(undef, undef, undef, 0.02);
        }
        exit 1;' "$1" "$STALL_TIMEOUT" "$RUN_TIMEOUT" "${@:2}"
}

# CPU ticks (user + system, plus those of reaped children) of the process trees under PIDS.
tree_ticks() {
    perl -e '
        my (%parent, %ticks);
        opendir(my $d, "/proc") or die "/proc: $!\n";
        for my $p (grep { /^\d+$/ } readdir $d) {
            open(my $f, "<", "/proc/$p/stat") or next; my $s = <$f>; close $f;
            next unless defined $s; $s =~ s/^.*\)\s+//s; my @f = split " ", $s;
            $parent{$p} = $f[1]; $ticks{$p} = $f[11] + $f[12] + $f[13] + $f[14];
        }
        my %in = map { $_ => 1 } grep { exists $ticks{$_} } @ARGV;
        for (my $more = 1; $more;) { $more = 0;
            for my $p (keys %parent) { if (!$in{$p} && $in{$parent{$p}}) { $in{$p} = 1; $more = 1 } } }
        my $sum = 0; $sum += $ticks{$_} for keys %in; print "$sum\n";' "$@"
}

# monitor OUTFILE PID...: every 0.5 s, sum VmRSS and Pss over the process trees under
# PIDS; keeps the largest sums (kB) in OUTFILE as "rss pss processes". Runs until killed.
monitor() {
    exec perl -e '
        my ($out, @roots) = @ARGV; my ($max_rss, $max_pss, $max_n) = (0, 0, 0);
        sub field { my ($file, $key) = @_; open(my $f, "<", $file) or return 0;
            while (<$f>) { return $1 if /^\Q$key\E:\s+(\d+)/ } return 0 }
        my $parent = getppid();
        while (getppid() == $parent) {
            my %parent;
            opendir(my $d, "/proc") or die; for my $p (grep { /^\d+$/ } readdir $d) {
                open(my $f, "<", "/proc/$p/stat") or next; my $s = <$f>; close $f;
                next unless defined $s; $s =~ s/^.*\)\s+//s; $parent{$p} = (split " ", $s)[1] }
            my %in = map { $_ => 1 } grep { exists $parent{$_} } @roots;
            for (my $more = 1; $more;) { $more = 0;
                for my $p (keys %parent) { if (!$in{$p} && $in{$parent{$p}}) { $in{$p} = 1; $more = 1 } } }
            my ($rss, $pss) = (0, 0);
            for my $p (keys %in) { $rss += field("/proc/$p/status", "VmRSS");
                                   $pss += field("/proc/$p/smaps_rollup", "Pss") }
            $max_rss = $rss if $rss > $max_rss; $max_pss = $pss if $pss > $max_pss;
            $max_n = keys %in if keys %in > $max_n;
            if (open(my $o, ">", "$out.tmp")) { print $o "$max_rss $max_pss $max_n\n"; close $o; rename "$out.tmp", $out }
            select(undef, undef, undef, 0.5);
        }' "$@"
}

# CPU ticks the whole machine spent: "busy" (user, nice, system, irq, softirq, steal) and
# "procs" (user, nice, system: what processes are charged with).
machine_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4; exit }' /proc/stat; }
# CPU ticks of everything this script started: itself and its children (smtp-source, the
# sinks, splitmx, exited helpers) and our Postfix instance. The rest is other tenants'.
our_ticks() {
    local master=""
    [ "$PF_STARTED" = 1 ] && master=$(pf_master_pid 2>/dev/null)
    tree_ticks "$$" "$master"
}

# ------------------------------------------------------------------------ the job
# Expected recipients of a run of M messages: process I sends 1user@ .. M_Iuser@.
# verify_dumps "M_0 M_1 ..." split LOCAL_DUMP SUITE_DUMP | all DUMP
# Prints "RCPTS_AT_FIRST RCPTS_AT_SECOND STATUS"; STATUS is "exact" or what is wrong.
verify_dumps() {
    perl -e '
        my ($parts, $mode, @files) = @ARGV;
        my %want; for my $m (split " ", $parts) { $want{$_}++ for 1 .. $m }
        my (%got, @count, $wrong_sink, $foreign);
        for my $k (0 .. $#files) {
            $count[$k] = 0;
            open(my $fh, "<", $files[$k]) or next;
            while (<$fh>) {
                next unless /^X-Rcpt-Args: /;
                $count[$k]++;
                if (/<(\d+)user\@example\.com>/i) {
                    $got{$1}++;
                    # split: odd numbers belong at the first sink (local), even at the second
                    $wrong_sink++ if $mode eq "split" && ($1 % 2 ? 0 : 1) != $k;
                } else { $foreign++ }
            }
        }
        my ($missing, $extra) = (0, 0);
        for my $n (keys %want) { my $d = ($got{$n} // 0) - $want{$n};
                                 $missing -= $d if $d < 0; $extra += $d if $d > 0 }
        for my $n (keys %got) { $extra += $got{$n} unless exists $want{$n} }
        my @bad;
        push @bad, "missing=$missing" if $missing; push @bad, "duplicate=$extra" if $extra;
        push @bad, "wrong-sink=$wrong_sink" if $wrong_sink; push @bad, "unknown-rcpt=$foreign" if $foreign;
        push @count, 0 while @count < 2;
        print "$count[0] $count[1] ", (@bad ? join(",", @bad) : "exact"), "\n";' "$@"
}

# The expected split of M messages: "local suite" (odd and even recipient numbers).
expected_split() {
    local lo=0 su=0 mi
    for mi in $(parts "$1"); do lo=$((lo + (mi + 1) / 2)); su=$((su + mi / 2)); done
    echo "$lo $su"
}

# blast PORT M TAG MODE: P smtp-source processes in parallel against 127.0.0.1:PORT.
blast() {
    local port=$1 m=$2 tag=$3 mode=$4 i rc=0 pids=() flags=()
    [ "$mode" = reuse ] && flags=(-d)
    for ((i = 0; i < P; i++)); do
        timeout "$RUN_TIMEOUT" smtp-source "${flags[@]}" -s "$(share "$SESSIONS" $i)" \
            -m "$(share "$m" $i)" -l "$SIZE" -N -f "$SENDER" -t user@example.com \
            "127.0.0.1:$port" >"$RUNDIR/$tag.src$i.log" 2>&1 &
        pids+=($!)
    done
    BG=("${pids[@]}")
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    BG=()
    return $rc
}

# ------------------------------------------------------------------------ Postfix
setup_postfix() {
    local port=$1 local_port=$2 suite_port=$3
    cat >"$PF_ETC/main.cf" <<EOF
# Postfix instance of benches/e2e-vs-postfix.sh: the single MX of example.com, relaying
# every valid recipient to its backend. What is not set here is the Postfix default; in
# particular cleanup fsyncs each queue file before smtpd answers 250.
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_banner = \$myhostname ESMTP

# A pure gateway: no local delivery, no aliases, no notices to a local biff.
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no

# 127.0.0.1 is an untrusted Internet client here, as the sender of an MX is: relaying is
# allowed only to relay_domains, and only for the recipients listed in relay_recipient_maps
# (others get "550 5.1.1 ... User unknown in relay recipient table" at RCPT).
mynetworks =
relay_domains = example.com
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_recipient_maps = hash:$PF_ETC/relay_recipients
# The split: every recipient has its bracketed next hop (no MX lookup).
transport_maps = hash:$PF_ETC/transport

# No DNS, no TLS: the backends are IP addresses and the sinks offer no STARTTLS.
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_tls_security_level =
smtp_tls_security_level =

# One log line per event, as in production, to a file (no syslog needed).
maillog_file = $PF/log/maillog
maillog_file_prefixes = $PF/log
EOF
    # Debian's master.cf services, none chrooted (5th column), smtpd on 127.0.0.1:port only.
    {
        echo "# service type  private unpriv  chroot  wakeup  maxproc command + args"
        echo "127.0.0.1:$port inet n - n - - smtpd"
        cat <<'EOF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    } >"$PF_ETC/master.cf"
    awk -v n=$VALID 'BEGIN { for (i = 1; i <= n; i++) printf "%duser@example.com\tOK\n", i }' \
        >"$PF_ETC/relay_recipients"
    awk -v n=$VALID -v lo="$local_port" -v su="$suite_port" 'BEGIN {
        for (i = 1; i <= n; i++) printf "%duser@example.com\tsmtp:[127.0.0.1]:%d\n", i, (i % 2 ? lo : su) }' \
        >"$PF_ETC/transport"
    postmap -c "$PF_ETC" "hash:$PF_ETC/relay_recipients" || die "postmap relay_recipients failed"
    postmap -c "$PF_ETC" "hash:$PF_ETC/transport" || die "postmap transport failed"
    postfix -c "$PF_ETC" check || die "postfix check of $PF_ETC failed"
    listening "$port" && die "127.0.0.1:$port is already taken"
    postfix -c "$PF_ETC" start >"$PF/log/start.log" 2>&1 ||
        die "postfix -c $PF_ETC start failed: $(cat "$PF/log/start.log")"
    PF_STARTED=1
    wait_listening "$port" "" "postfix smtpd" "$PF/log/maillog"
}

pf_master_pid() { tr -d ' \n' <"$PF/queue/pid/master.pid"; }

pf_queue_empty() {
    local q
    for _ in $(seq 50); do
        q=$(postqueue -c "$PF_ETC" -p 2>&1 | tail -n 1)
        case $q in *"Mail queue is empty"*) return 0 ;; esac
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------------ splitmx
setup_splitmx() {
    local port=$1 local_port=$2 suite_port=$3
    cat >"$SX/splitmx.yaml" <<EOF
# splitmx instance of benches/e2e-vs-postfix.sh: the single MX of example.com.
hostname: gw.bench.test
listen: ["127.0.0.1:$port"]
routing: { dir: routing }
spool: spool
metrics: { listen: "127.0.0.1:$SX_METRICS_PORT" }   # read after each run (spool_figures)
smtp:
  max_connections_per_ip: 50   # Postfix's smtpd_client_connection_count_limit
delivery:
  max_per_next_hop: 20         # Postfix's default_destination_concurrency_limit
EOF
    {
        echo "# The split: every valid recipient listed with its backend; no default, so"
        echo "# anyone else at example.com gets 550 5.1.1."
        echo "domains: [example.com]"
        echo "routes:"
        echo "  local: \"smtp:[127.0.0.1]:$local_port\""
        echo "  suite: \"smtp:[127.0.0.1]:$suite_port\""
        echo "recipients:"
        awk -v n=$VALID 'BEGIN { for (i = 1; i <= n; i++) printf "  %duser@example.com: %s\n", i, (i % 2 ? "local" : "suite") }'
    } >"$SX/routing/example.com.yaml"
    "$SPLITMX" check --config "$SX/splitmx.yaml" >"$SX/check.log" 2>&1 ||
        die "splitmx check of $SX/splitmx.yaml failed: $(cat "$SX/check.log")"
    listening "$port" && die "127.0.0.1:$port is already taken"
    SPLITMX_LOG=$SPLITMX_LOG "$SPLITMX" serve --config "$SX/splitmx.yaml" 2>"$SX/serve.log" &
    SX_PID=$!
    wait_listening "$port" "$SX_PID" "splitmx serve" "$SX/serve.log"
}

# ------------------------------------------------------------------------ checks
# expect_refusal NAME PORT RCPT CODE: a single message to RCPT must be refused at RCPT with CODE.
expect_refusal() {
    local out
    out=$(timeout 30 smtp-source -m 1 -f "$SENDER" -t "$3" "127.0.0.1:$2" 2>&1)
    case $out in
        *"recipient rejected: $4"*) log "$1: RCPT TO:<$3> -> ${out##*recipient rejected: }" ;;
        *) die "$1: RCPT TO:<$3> should get $4, got: ${out:-250 (accepted)}" ;;
    esac
}

# ------------------------------------------------------------------------ spool figures
# scrape_spool: splitmx's spool metrics as "syncs spooled b1 c1 b2 c2 ..." (histogram
# bucket bounds and cumulative counts of splitmx_spool_commit_wait_seconds).
scrape_spool() {
    local reply
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$SX_METRICS_PORT" &&
        printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n' >&3 && cat <&3) || return 1
    awk '$1 == "splitmx_spool_syncs_total" { s = $2 }
         $1 == "splitmx_messages_spooled_total" { m = $2 }
         $1 ~ /^splitmx_spool_commit_wait_seconds_bucket/ {
             le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); b = b " " le " " $2 }
         END { print s + 0, m + 0 b }' <<<"$reply"
}

# spool_figures BEFORE AFTER: "MSGS_PER_FSYNC P50_MS P90_MS" between two scrapes ("- - -"
# without figures); the percentiles are interpolated inside the histogram's buckets as
# Prometheus's histogram_quantile does.
spool_figures() {
    awk -v a="$1" -v b="$2" '
    function q(f,    i, lo, prev, c) {
        lo = 0; prev = 0
        for (i = 3; i < nb; i += 2) {
            c = y[i + 1] - x[i + 1]
            if (c >= f * n) {
                if (y[i] == "+Inf") return lo * 1000
                return (lo + (y[i] - lo) * (f * n - prev) / (c - prev)) * 1000
            }
            lo = y[i]; prev = c
        }
    }
    BEGIN {
        na = split(a, x, " "); nb = split(b, y, " ")
        syncs = y[1] - x[1]; msgs = y[2] - x[2]; n = y[nb] - x[na]
        if (syncs <= 0 || msgs <= 0 || n <= 0 || na != nb) { print "- - -"; exit }
        printf "%.1f %.2f %.2f\n", msgs / syncs, q(0.5), q(0.9)
    }'
}

# ------------------------------------------------------------------------ one run
# run_one KIND MODE M TAG; KIND is ceiling, postfix or splitmx. Sets R_* (see the end).
run_one() {
    local kind=$1 mode=$2 m=$3 tag=$4
    local port root="" sinks s base=() c0=0 c1=0 bz0 bz1 t0 t1 t2 got rc memf=$RUNDIR/$tag.mem
    local rss=0 pss=0 v status o0 o1 pr0 pr1 spool0=""
    # Start each run on a quiet disk: the previous run's dirty pages and deleted queue
    # files (Postfix: one file per message) are written back now, not during this run.
    sync
    sleep "$QUIESCE"
    case $kind in
        ceiling) port=${SINK_PORT[ceiling]}; sinks="ceiling" ;;
        postfix) port=$PF_PORT; root=$(pf_master_pid); sinks="local suite" ;;
        splitmx)
            port=$SX_PORT; root=$SX_PID; sinks="local suite"
            # peak RSS of this run only: reset the high-water mark
            echo 5 >"/proc/$SX_PID/clear_refs" 2>/dev/null || true
            ;;
    esac
    for s in $sinks; do base+=("$SINKS/$s.out" "$(sink_count "$s")"); done
    if [ -n "$root" ]; then
        c0=$(tree_ticks "$root")
        monitor "$memf" "$root" &
        MON=$!
    fi
    [ "$kind" = splitmx ] && spool0=$(scrape_spool)
    read -r bz0 pr0 <<<"$(machine_ticks)"
    o0=$(our_ticks)
    t0=$(now)
    if ! blast "$port" "$m" "$tag" "$mode"; then
        die "$kind: smtp-source failed: $(cat "$RUNDIR/$tag".src*.log | sort | uniq -c | head -n 5)"
    fi
    t1=$(now)
    wait_delivered "$m" "${base[@]}"
    rc=$?
    got=$GOT
    t2=$(now)
    # Before the settle time: cores busy while the run ran, not diluted by the idle second.
    read -r bz1 pr1 <<<"$(machine_ticks)"
    o1=$(our_ticks)
    if [ $rc -ne 0 ]; then
        log "$kind: only $got of $m delivered after $(calc %.0f "$t2 - $t0") s; the front end had accepted all $m after $(calc %.1f "$t1 - $t0") s (limits: STALL_TIMEOUT=$STALL_TIMEOUT s without a new delivery, RUN_TIMEOUT=$RUN_TIMEOUT s in all)"
        [ "$kind" = splitmx ] && ! pid_alive "$SX_PID" && log "splitmx is no longer running"
        [ "$kind" = splitmx ] && [ "$got" -eq 0 ] &&
            log "splitmx delivered nothing at all: does this build deliver from its spool yet? ($SPLITMX)"
        case $kind in
            postfix) log "last lines of the Postfix log:"; tail -n 15 "$PF/log/maillog" >&2 ;;
            splitmx) log "last lines of the splitmx log:"; tail -n 15 "$SX/serve.log" >&2 ;;
        esac
        die "$kind: only $got of $m delivered after $(calc %.0f "$t2 - $t0") s"
    fi
    sleep "$SETTLE"
    R_FSYNC=- R_WAIT=-
    if [ "$kind" = splitmx ]; then
        read -r R_FSYNC R_WAIT v <<<"$(spool_figures "$spool0" "$(scrape_spool)")"
        log "splitmx spool, $tag: $R_FSYNC messages per fsync; commit wait p50 $R_WAIT ms, p90 $v ms"
    fi
    if [ -n "$root" ]; then
        c1=$(tree_ticks "$root")
        kill "$MON" 2>/dev/null
        wait "$MON" 2>/dev/null
        MON=""
        [ -f "$memf" ] && read -r rss pss _ <"$memf"
        if [ "$kind" = splitmx ]; then
            v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SX_PID/status")
            [ -n "$v" ] && rss=$v
        fi
    fi
    # Take this run's dumps away from the sinks, then check them recipient by recipient.
    local files=()
    for s in $sinks; do
        [ -f "$DUMPS/$s.dump" ] && mv "$DUMPS/$s.dump" "$DUMPS/$s.$tag"
        files+=("$DUMPS/$s.$tag")
    done
    if [ "$kind" = ceiling ]; then
        read -r R_LOCAL R_SUITE status <<<"$(verify_dumps "$(parts "$m")" all "${files[@]}")"
    else
        read -r R_LOCAL R_SUITE status <<<"$(verify_dumps "$(parts "$m")" split "${files[@]}")"
    fi
    rm -f "${files[@]}"
    if [ "$kind" = postfix ] && ! pf_queue_empty; then status="$status,queue-not-empty"; fi
    [ "$status" = exact ] && R_EXACT=1 || R_EXACT=0
    R_STATUS=$status
    R_FRONT=$(calc %.0f "$m / ($t1 - $t0)")
    R_E2E=$(calc %.0f "$m / ($t2 - $t0)")
    R_SECS=$(calc %.2f "$t2 - $t0")
    R_CPU=$(calc %.3f "($c1 - $c0) * 1000 / $HZ / $m")
    R_RSS=$(calc %.1f "$rss / 1024")
    R_PSS=$(calc %.1f "$pss / 1024")
    R_BUSY=$(calc %.2f "($bz1 - $bz0) / $HZ / ($t2 - $t0)")
    R_OTHERS=$(calc %.2f "($pr1 - $pr0 - ($o1 - $o0)) / $HZ / ($t2 - $t0)")
    case $R_OTHERS in -*) R_OTHERS=0.00 ;; esac
}

# ------------------------------------------------------------------------ main
read -r PF_PORT SX_PORT LOCAL_PORT SUITE_PORT CEIL_PORT SX_METRICS_PORT <<<"$(free_ports 6)" || die "no free ports"
log "scratch directory $WORK; sink dumps in $DUMPS"
start_sink local "$LOCAL_PORT"
start_sink suite "$SUITE_PORT"
start_sink ceiling "$CEIL_PORT"
log "sinks: local 127.0.0.1:$LOCAL_PORT (odd users), suite 127.0.0.1:$SUITE_PORT (even users), ceiling 127.0.0.1:$CEIL_PORT"
QUEUE_FS=$(df --output=fstype "$WORK" | tail -n 1)
case $QUEUE_FS in tmpfs | ramfs) log "WARNING: $WORK is on $QUEUE_FS: fsync costs nothing there; set BENCH_DIR to a disk" ;; esac

for g in $GATEWAYS; do
    case $g in
        postfix)
            log "postfix: starting postfix -c $PF_ETC (smtpd on 127.0.0.1:$PF_PORT)"
            setup_postfix "$PF_PORT" "$LOCAL_PORT" "$SUITE_PORT"
            ;;
        splitmx)
            log "splitmx: starting $SPLITMX serve (127.0.0.1:$SX_PORT)"
            setup_splitmx "$SX_PORT" "$LOCAL_PORT" "$SUITE_PORT"
            ;;
    esac
done
for g in $GATEWAYS; do
    case $g in postfix) port=$PF_PORT ;; splitmx) port=$SX_PORT ;; esac
    expect_refusal "$g" "$port" nosuchuser@example.com "550 5.1.1"
    expect_refusal "$g" "$port" 1user@example.org "554 5.7.1"
done
if [ "$WARMUP" -gt 0 ]; then
    for g in $GATEWAYS; do
        log "$g: warm-up, $WARMUP messages (not timed)"
        run_one "$g" conn "$WARMUP" "warmup-$g"
        [ "$R_EXACT" = 1 ] || die "$g: warm-up delivered local=$R_LOCAL suite=$R_SUITE, expected $(expected_split "$WARMUP"): $R_STATUS"
    done
fi

echo "# e2e-vs-postfix $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname): $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
echo "# postfix $(postconf -c "$PF_ETC" -h mail_version 2>/dev/null || postconf -h mail_version)$(case " $GATEWAYS " in *" splitmx "*) echo "; splitmx $("$SPLITMX" --version 2>/dev/null | head -n 1) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" ;; esac)"
echo "# queues on $QUEUE_FS ($(df --output=source "$WORK" | tail -n 1)); load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $MESSAGES messages per run, $SIZE-byte bodies, 1 recipient each, $SESSIONS sessions from $P smtp-source processes; $RUNS rounds"
printf '%-8s %-5s %-3s %8s %8s %7s %7s %8s %8s %6s %6s %5s %6s  %s\n' \
    gateway mode run front/s e2e/s e2e_s cpu_ms rss_MiB pss_MiB local suite busy others check
ROWS=$RUNDIR/rows
: >"$ROWS"
FAILED=0
read -r EXP_LOCAL EXP_SUITE <<<"$(expected_split "$MESSAGES")"
for ((r = 1; r <= RUNS; r++)); do
    for mode in $MODES; do
        for kind in ceiling $GATEWAYS; do
            log "round $r/$RUNS, $mode: $kind"
            run_one "$kind" "$mode" "$MESSAGES" "$kind-$mode-$r"
            if [ "$kind" = ceiling ]; then
                [ "$R_LOCAL" -eq "$MESSAGES" ] || R_EXACT=0
                rss=- pss=- cpu=- R_SUITE=-
            else
                [ "$R_LOCAL" -eq "$EXP_LOCAL" ] && [ "$R_SUITE" -eq "$EXP_SUITE" ] || R_EXACT=0
                rss=$R_RSS pss=$R_PSS cpu=$R_CPU
            fi
            [ "$R_EXACT" = 1 ] || FAILED=1
            printf '%-8s %-5s %-3s %8s %8s %7s %7s %8s %8s %6s %6s %5s %6s  %s\n' "$kind" "$mode" "$r" \
                "$R_FRONT" "$R_E2E" "$R_SECS" "$cpu" "$rss" "$pss" "$R_LOCAL" "$R_SUITE" "$R_BUSY" "$R_OTHERS" "$R_STATUS"
            echo "$kind $mode $r $R_FRONT $R_E2E $R_CPU $R_RSS $R_PSS $R_LOCAL $R_SUITE $R_EXACT $R_OTHERS $R_FSYNC $R_WAIT $R_BUSY" >>"$ROWS"
        done
    done
done

# ------------------------------------------------------------------------ summary
# med KIND MODE COLUMN: the median of COLUMN over the runs of KIND in MODE ("-" if none).
med() {
    awk -v k="$1" -v m="$2" -v c="$3" '$1 == k && $2 == m { print $c }' "$ROWS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { [ "$1" = - ] || [ "$2" = - ] && { echo -; return; }; calc %.2f "$2 == 0 ? 0 : $1 / $2"; }
# split_of KIND MODE: "local/suite" of its last run, and "exact runs/runs".
split_of() {
    awk -v k="$1" -v m="$2" '$1 == k && $2 == m { n++; ok += $11; lo = $9; su = $10 }
        END { if (n == 0) print "- -"; else printf "%d/%d %d/%d\n", lo, su, ok, n }' "$ROWS"
}
# round_pct KIND MODE: the median over rounds of KIND's end-to-end rate as a share of the
# ceiling of the same round, and its range. The machine's speed drifts between rounds;
# both runs of a round see about the same machine.
round_pct() {
    awk -v k="$1" -v m="$2" '$2 == m && $1 == "ceiling" && $4 + 0 > 0 { c[$3] = $4 }
        $2 == m && $1 == k && $5 + 0 > 0 { e[$3] = $5 }
        END { for (r in e) if (r in c) print 100 * e[r] / c[r] }' "$ROWS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
              md = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.0f%% (%.0f-%.0f)\n", md, v[1], v[NR] }'
}
fmt() { if [ "$1" = - ]; then echo -; else calc "$2" "$1"; fi; }
pct() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else calc '%.0f%%' "100 * $1 / $2"; fi; }
echo
for mode in $MODES; do
    case $mode in
        conn) what="new connection per message" ;;
        reuse) what="one connection per session (smtp-source -d)" ;;
    esac
    echo "== $mode: $what; medians of $RUNS runs of $MESSAGES messages =="
    printf '%-36s %14s %14s %16s\n' "" Postfix splitmx splitmx/Postfix
    for row in "front-end accept, msg/s:4:%.0f" "end-to-end, msg/s:5:%.0f" \
        "CPU per message, ms:6:%.3f" "peak RSS, MiB:7:%.1f" "peak PSS, MiB:8:%.1f"; do
        IFS=: read -r label col f <<<"$row"
        a=$(med postfix "$mode" "$col")
        b=$(med splitmx "$mode" "$col")
        printf '%-36s %14s %14s %16s\n' "$label" "$(fmt "$a" "$f")" "$(fmt "$b" "$f")" "$(ratio "$b" "$a")"
    done
    read -r pf_split pf_exact <<<"$(split_of postfix "$mode")"
    read -r sx_split sx_exact <<<"$(split_of splitmx "$mode")"
    printf '%-36s %14s %14s\n' "recipients local/suite (want $EXP_LOCAL/$EXP_SUITE)" "$pf_split" "$sx_split"
    printf '%-36s %14s %14s\n' "runs with every recipient exact" "$pf_exact" "$sx_exact"
    c=$(med ceiling "$mode" 4)
    pe=$(med postfix "$mode" 5)
    se=$(med splitmx "$mode" 5)
    printf '%-36s %14s msg/s; end-to-end is %s (Postfix) and %s (splitmx) of it\n' \
        "ceiling, smtp-source -> smtp-sink" "$(fmt "$c" %.0f)" \
        "$(pct "$pe" "$c")" "$(pct "$se" "$c")"
    printf '%-36s %14s %14s\n' "end-to-end / its round's ceiling" \
        "$(round_pct postfix "$mode")" "$(round_pct splitmx "$mode")"
    printf '%-36s %14s %14s   (ceiling %s; the machine has %s)\n' "cores busy, whole machine" \
        "$(fmt "$(med postfix "$mode" 15)" %.2f)" "$(fmt "$(med splitmx "$mode" 15)" %.2f)" \
        "$(fmt "$(med ceiling "$mode" 15)" %.2f)" "$(nproc)"
    printf '%-36s %14s %14s\n' "spool: messages per fsync" - "$(fmt "$(med splitmx "$mode" 13)" %.1f)"
    printf '%-36s %14s %14s\n' "spool: commit wait p50, ms" - "$(fmt "$(med splitmx "$mode" 14)" %.2f)"
    echo
done
cat <<EOF
front-end: messages / time from smtp-source's start until every smtp-source exited (all 250s).
end-to-end: messages / time from the same start until the two sinks had received them all.
CPU: user+system time of the gateway per message, start to end-to-end + ${SETTLE} s (Postfix: all
  processes under its master, exited ones included; splitmx: its process).
peak RSS: splitmx: VmHWM of its process during the run; Postfix: the largest sum of VmRSS over
  its processes, sampled every 0.5 s (shared pages count once per process). peak PSS: the
  largest sum of Pss (shared pages divided among their users), sampled every 0.5 s, for both.
end-to-end / its round's ceiling: each run's end-to-end rate over the ceiling measured just
  before it in the same round; median over the rounds (lowest-highest).
spool: splitmx's metrics over the run: messages per group commit (fsync), and the median
  wait of a message at the end of DATA for its write and fsync (before its 250).
recipients: counted one by one in the sinks' dumps; "exact" means each recipient arrived once,
  at the sink the map names, and no other recipient arrived.
busy: cores busy machine-wide from the run's start until the sinks held every message (all
  the machine's cores busy: the run was bound by CPU, not by waiting); others: of those, cores
  used by processes this script did not start (other tenants). Compare figures only from runs
  where others is ~0.
EOF
others=$(awk '$1 != "ceiling" { print $12 }' "$ROWS" | sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }')
if awk -v o="$others" 'BEGIN { exit !(o > 0.2) }'; then
    echo "# WARNING: other processes used a median $others cores during the gateway runs: the machine was"
    echo "# not quiet, and these figures are lower than it can do (the ratio is still measured alike)."
fi
echo "# load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$FAILED" = 1 ]; then
    log "FAILED: some run did not deliver exactly the expected recipients to each sink (see the check column)"
    exit 1
fi
exit 0
