#!/usr/bin/env bash
# Outbound delivery: rmox's queue (each runtime) against Postfix's own outbound delivery of
# the same messages to the same destination, in one run: Postfix's smtp-sink, then the
# harness Postfix (../shared/harness, mx2.example.org) when it is up.
#
#   benches/deliver.sh            # from the repository root; run as root (Postfix needs it)
#
# Environment: MSGS (messages per server, default 2000), SIZE (bytes per message, default
# 1024), INJECT_SESSIONS (SMTP sessions that queue the messages, default 10), WORKERS (rmox
# queue.workers, default 8 as in rmox's defaults), SECS (time bound per phase, default 120),
# RUNTIMES (default "tokio smol glommio"), DESTS (default "sink harness"), HARNESS_MSGS
# (messages per server to the harness Postfix, default MSGS), NO_BUILD=1 (reuse
# target/release), KEEP=1 (keep the temp dir), OUT (directory for logs, JSON and the table;
# default a temp dir).
#
# Every server on its own loopback address and fresh directory:
#   smtp-sink                 127.0.0.25:2525  the destination of every message (protocol
#                                              only, nothing stored), counts messages (-c)
#   harness Postfix           127.10.0.12:25   the second destination (the shared test
#                                              harness's mx2.example.org: smtpd, then virtual(8)
#                                              into its catchall Maildir; recipients
#                                              @pf.example.org). Not started or changed here.
#   rmox serve --runtime R    127.0.0.2x:1587  submission; a smarthost transport (tls none) to
#                                              the destination as the only route; outgoing
#                                              connections from 127.0.0.2x (queue.source_ipv4)
#   Postfix 3.x (Debian)      127.0.0.24:2525  smtpd; relayhost the destination, connections
#                                              from 127.0.0.24 (smtp_bind_address)
#
# The harness Postfix counts nothing itself: its log (HARNESS_DIR/logs/postfix.log) is
# followed from the start of the run, and its smtpd lines "connect from unknown[IP]" and
# "client=unknown[IP]" count the sessions and messages of each server by source address.
# After each server's phase the harness's own local delivery of those messages into the
# Maildir is awaited (not timed, bounded by SECS) so it does not run during the next phase,
# and at the end the messages this run delivered there (envelope sender bench-RUNTAG@bench.test,
# seen in their Return-Path) are removed from the Maildir again.
#
# Per destination and server: (1) queue MSGS messages (one recipient each) with delivery
# held: rmox with a hold rule matching everything, submitted with rmox-load over SMTP AUTH PLAIN; Postfix with
# an access action HOLD, sent with rmox-load to smtpd. (2) Release: rmox is stopped, the
# hold rule removed and each entry released with `rmox queue release` (not timed), then
# `rmox serve` is started; Postfix: `postsuper -H ALL` and `postqueue -f`. (3) The clock
# runs from that start until the destination has counted MSGS more messages and the server
# has finished: rmox logged MSGS "delivered" attempts (it logs before recording each result, so
# the last record is written a moment after the clock stops), Postfix's queue directories are
# empty. CPU is utime+stime of the server's process tree over the same interval (rmox: the
# whole process from its start, so it includes opening the store and starting listeners;
# Postfix: master, its children and reaped children; postsuper/postqueue themselves are not
# counted). After the clock, rmox is stopped and `rmox queue list` must be empty.
# Every process started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MSGS=${MSGS:-2000}
SIZE=${SIZE:-1024}
INJECT_SESSIONS=${INJECT_SESSIONS:-10}
WORKERS=${WORKERS:-8}
SECS=${SECS:-120}
RUNTIMES=${RUNTIMES:-"tokio smol glommio"}
RMOX=$ROOT/target/release/rmox
LOAD=$ROOT/target/release/rmox-load
SINK_IP=127.0.0.25
PFX_IP=127.0.0.24
DESTS=${DESTS:-"sink harness"}
HARNESS_MSGS=${HARNESS_MSGS:-$MSGS}
HARNESS_DIR=${HARNESS_DIR:-/tmp/harness/run}
HARNESS_IP=127.10.0.12
HARNESS_LOG=$HARNESS_DIR/logs/postfix.log
HARNESS_MAILDIR=$HARNESS_DIR/postfix/mail/catchall
# Every message of this run has this envelope sender (rmox's account address, Postfix's MAIL
# FROM): the harness Maildir's copies are found by it and removed at the end.
RUNTAG=$(date +%s)$$
SENDER=bench-$RUNTAG@bench.test

for tool in postfix postconf postsuper postqueue smtp-sink python3 jq; do
    command -v "$tool" >/dev/null || { echo "deliver.sh: $tool not found (apt-get install postfix jq python3)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
    echo "deliver.sh: run as root (Postfix drops privileges itself)" >&2
    exit 1
fi
if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p rmox --bin rmox -p rmox-benches --bin rmox-load)
fi

TMP=$(mktemp -d /var/tmp/rmox-deliver.XXXXXX)
chmod 755 "$TMP" # Postfix daemons run as user postfix
OUT=${OUT:-$TMP/results}
mkdir -p "$OUT"
PIDS=() # processes still running, stopped by cleanup
PFX=""

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    postfix_stop
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    # This run's messages in the harness Maildir (its envelope sender is ours alone).
    if [ -n "${HARNESS_UP:-}" ]; then
        grep -rlF "Return-Path: <$SENDER>" "$HARNESS_MAILDIR/new" "$HARNESS_MAILDIR/cur" 2>/dev/null |
            xargs -r rm -f
    fi
    if [ "${KEEP:-}" != 1 ]; then
        case "$OUT" in "$TMP"/*) cp "$OUT/table.txt" /tmp/rmox-deliver-table.txt 2>/dev/null ;; esac
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # ip port pid
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

forget_pid() { # pid
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

stop_pid() { # name pid
    kill -TERM "$2" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$2" 2>/dev/null; then
        echo "deliver.sh: $1 (pid $2) did not stop within 10 s of SIGTERM; killed" >&2
        kill -KILL "$2" 2>/dev/null || true
    fi
    wait "$2" 2>/dev/null || true
    forget_pid "$2"
}

# CPU seconds (utime+stime, and cutime+cstime of reaped children) of a process and all its
# live descendants.
tree_cpu() { # pid
    python3 - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1])
hz = os.sysconf("SC_CLK_TCK")
stat = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        with open(f"/proc/{d}/stat") as f:
            s = f.read()
    except OSError:
        continue
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is the state (field 3); ppid is field 4, utime..cstime fields 14..17.
    stat[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
total, todo = 0, [root]
while todo:
    p = todo.pop()
    if p not in stat:
        continue
    total += stat[p][1]
    todo.extend(c for c, (pp, _) in stat.items() if pp == p)
print(f"{total / hz:.3f}")
EOF
}

# The sink's counters: "msg sessions" so far (smtp-sink -c writes "sess=N quit=N mesg=N\r").
sink_counts() {
    local last
    last=$(tail -c 200 "$TMP/sink.out" 2>/dev/null | tr '\r' '\n' | grep 'mesg=' | tail -1 || true)
    local msg=${last##*mesg=} sess=${last#sess=}
    sess=${sess%% *}
    echo "${msg:-0} ${sess:-0}"
}

now() { date +%s.%N; }

# rmox's own view of a delivery run: seconds from its queue runner's start to its last
# delivery attempt, from the log's timestamps ("-" when either is missing).
log_span() { # log
    python3 - "$1" <<'EOF'
import datetime, sys
first = last = None
for line in open(sys.argv[1]):
    t = line.split(" ", 1)[0]
    if "queue runner started" in line and first is None:
        first = t
    elif "delivery attempt" in line:
        last = t
def secs(t):
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
print(f"{secs(last) - secs(first):.3f}" if first and last else "-")
EOF
}

# The harness Postfix's counters for source address `ip`: "messages sessions" so far in this
# run (from its smtpd log lines, followed into $TMP/harness.out).
harness_counts() { # ip
    local m s
    m=$(grep -cF "client=unknown[$1]" "$TMP/harness.out" 2>/dev/null || true)
    s=$(grep -cF ": connect from unknown[$1]" "$TMP/harness.out" 2>/dev/null || true)
    echo "${m:-0} ${s:-0}"
}

# Messages of this run the harness Postfix has put into its Maildir so far.
harness_stored() {
    grep -cF "to=<rcpt1-load@$RCPT_DOMAIN>, relay=virtual" "$TMP/harness.out" 2>/dev/null || true
}

# The destination's counters "messages sessions" for a server sending from `ip`.
dest_counts() { # ip
    case $DEST in
    sink) sink_counts ;;
    harness) harness_counts "$1" ;;
    esac
}

# Another server on one of our addresses would be measured instead of ours: refuse.
for a in "$SINK_IP/2525" "$PFX_IP/2525" 127.0.0.21/1587 127.0.0.22/1587 127.0.0.23/1587; do
    if (exec 3<>"/dev/tcp/$a") 2>/dev/null; then
        echo "deliver.sh: something already listens on ${a/\//:}; stop it first" >&2
        exit 1
    fi
done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)

# smtp-sink (-u: drop root; -c: count on stdout; backlog 1024).
smtp-sink -c -u postfix "$SINK_IP:2525" 1024 >"$TMP/sink.out" 2>"$TMP/sink.log" &
SINKPID=$!
PIDS+=("$SINKPID")
wait_port "$SINK_IP" 2525 "$SINKPID" || { echo "deliver.sh: smtp-sink did not start" >&2; exit 1; }
read -r base_msgs _ < <(sink_counts)
if [ "$base_msgs" != 0 ]; then
    echo "deliver.sh: smtp-sink counted $base_msgs messages before any delivery (the port probe?)" >&2
fi

# The harness Postfix: used only when it is up; its log is followed from now (tail stops by
# itself when this script ends).
HARNESS_UP=""
case " $DESTS " in *" harness "*)
    if [ -f "$HARNESS_LOG" ] && (exec 3<>"/dev/tcp/$HARNESS_IP/25") 2>/dev/null; then
        HARNESS_UP=1
        tail --pid=$$ -n0 -F "$HARNESS_LOG" 2>/dev/null |
            grep --line-buffered -E -e 'unknown\[127\.0\.0\.2[1-4]\]' -e 'relay=virtual.*status=sent' \
                >"$TMP/harness.out" &
        PIDS+=("$!")
    else
        echo "deliver.sh: the harness Postfix ($HARNESS_IP:25, log $HARNESS_LOG) is not up: no harness rows" >&2
    fi
    ;;
esac

# Results, one line per destination and server: dest name msgs seconds cpu_seconds
# dest_sessions inject_msgs_per_s left load own_span
RESULTS=$OUT/results.txt
: >"$RESULTS"

# Waits until the destination counted `want` messages from `ip` and `done_cmd` succeeds, at
# most SECS. Prints the elapsed seconds since `t0`, or fails.
wait_delivered() { # t0 ip want done_cmd...
    local t0=$1 ip=$2 want=$3 end=$((SECONDS + SECS)) msg
    shift 3
    while [ $SECONDS -lt $end ]; do
        read -r msg _ < <(dest_counts "$ip")
        if [ "$msg" -ge "$want" ] && "$@"; then
            awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# After a phase to the harness: its own delivery into the Maildir of the `want` messages of
# this run so far, so that it does not run during the next phase (not timed, at most SECS).
harness_settle() { # want
    [ "$DEST" = harness ] || return 0
    local end=$((SECONDS + SECS))
    while [ $SECONDS -lt $end ]; do
        [ "$(harness_stored)" -ge "$1" ] && return 0
        sleep 0.2
    done
    echo "deliver.sh: harness: only $(harness_stored) of $1 messages in its Maildir after ${SECS}s" >&2
}

inject() { # label target json [rmox-load args...]
    local label=$1 target=$2 json=$3
    shift 3
    "$LOAD" --target "$target" --sessions "$INJECT_SESSIONS" --messages "$N" --size "$SIZE" \
        --pipelining --rcpt-domain "$RCPT_DOMAIN" --max-seconds "$SECS" --label "$label inject" \
        --from "$SENDER" --json "$json" "$@" >&2
    local sent
    sent=$(jq -r '.messages_ok' "$json")
    if [ "$sent" != "$N" ]; then
        echo "deliver.sh: $label: only $sent of $N messages accepted; see $json" >&2
        return 1
    fi
}

# --- rmox, one runtime at a time --------------------------------------------------------
rmox_config() { # ip
    cat <<EOT
hostname = "rmox.bench.test"
data_dir = "data"
resolver = ["zonefile:zone"]

[[listener]]
name = "bench"
ip = "$1"
submission = { port = 1587 }
no_require_starttls = true

[domain."bench.test"]

[account.bench]
domain = "bench.test"
destinations = { "$SENDER" = {} }
max_outgoing_messages_per_day = 10000000
max_first_time_recipients_per_day = 10000000

[postmaster]
account = "bench"
mailbox = "Inbox"

[limits]
auth_failure_delay_secs = 0

[queue]
workers = $WORKERS
source_ipv4 = "$1"

[transport.dest]
kind = "smarthost"
host = "$DEST_IP"
port = $DEST_PORT
tls = "none"

[[route]]
transport = "dest"
EOT
}

delivered_lines() { # log
    grep -c 'delivery attempt.*delivered' "$1" 2>/dev/null || true
}

rmox_done() { # log
    [ "$(delivered_lines "$1")" -ge "$N" ]
}

run_rmox() { # runtime ip
    local rt=$1 ip=$2
    local name=rmox-$rt
    local dir=$TMP/$DEST-$name
    local cfg=$dir/rmox.toml log=$OUT/$DEST-$name.log rule pid ids id rel0 m0 s0 s1 t0 secs cpu load
    local span left inj
    mkdir -p "$dir"
    rmox_config "$ip" >"$cfg"
    echo "rmox.bench.test. A $ip" >"$dir/zone"
    if ! "$RMOX" config check --config "$cfg" >>"$log" 2>&1 ||
        ! echo benchpass | "$RMOX" account setpassword bench --config "$cfg" >>"$log" 2>&1 ||
        ! rule=$("$RMOX" queue holdrule add --config "$cfg" 2>>"$log"); then
        echo "deliver.sh: $DEST $name: setup failed; skipped:" >&2
        tail -3 "$log" >&2
        return 0
    fi
    # (1) Queue the messages, held.
    "$RMOX" serve --config "$cfg" --runtime "$rt" >>"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if ! wait_port "$ip" 1587 "$pid"; then
        echo "deliver.sh: $DEST $name did not start; skipped:" >&2
        tail -3 "$log" >&2
        stop_pid "$name" "$pid"
        return 0
    fi
    if ! inject "$DEST $name" "$ip:1587" "$OUT/inject-$DEST-$name.json" \
        --auth "$SENDER:benchpass"; then
        stop_pid "$name" "$pid"
        return 0
    fi
    stop_pid "$name" "$pid"
    # (2) Release, with the server stopped (not timed).
    rule=${rule#hold rule }
    "$RMOX" queue holdrule remove "${rule%% *}" --config "$cfg" >>"$log" 2>&1
    mapfile -t ids < <("$RMOX" queue list --held --config "$cfg" | awk '{print $1}')
    if [ "${#ids[@]}" != "$N" ]; then
        echo "deliver.sh: $DEST $name: ${#ids[@]} held entries, expected $N; skipped" >&2
        return 0
    fi
    rel0=$(now)
    for id in "${ids[@]}"; do
        "$RMOX" queue release "$id" --config "$cfg" >/dev/null
    done
    echo "deliver.sh: $DEST $name: released $N entries in $(awk -v a="$rel0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s (not timed)" >&2
    # (3) Deliver: the clock runs from the start of `rmox serve`.
    read -r m0 s0 < <(dest_counts "$ip")
    : >"$log.deliver"
    t0=$(now)
    "$RMOX" serve --config "$cfg" --runtime "$rt" >>"$log.deliver" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if ! secs=$(wait_delivered "$t0" "$ip" $((m0 + N)) rmox_done "$log.deliver"); then
        echo "deliver.sh: $DEST $name: not delivered within ${SECS}s ($(delivered_lines "$log.deliver") logged)" >&2
        stop_pid "$name" "$pid"
        cat "$log.deliver" >>"$log"
        return 0
    fi
    cpu=$(tree_cpu "$pid")
    load=$(cut -d' ' -f1 /proc/loadavg)
    stop_pid "$name" "$pid"
    sleep 0.5 # the sink counts a session when it ends
    read -r _ s1 < <(dest_counts "$ip")
    span=$(log_span "$log.deliver")
    cat "$log.deliver" >>"$log"
    left=$("$RMOX" queue list --config "$cfg" | wc -l)
    if [ "$left" != 0 ]; then
        echo "deliver.sh: $DEST $name: $left entries left in the queue after delivery" >&2
    fi
    inj=$(jq -r '.messages_per_second' "$OUT/inject-$DEST-$name.json")
    echo "$DEST $name $N $secs $cpu $((s1 - s0)) $inj $left $load $span" >>"$RESULTS"
    echo "deliver.sh: $DEST $name: $N messages in $secs s, CPU $cpu s, $((s1 - s0)) sessions" >&2
    rm -rf "$dir/data"
}

# --- Postfix --------------------------------------------------------------------------
postfix_queued() {
    find "$PFX/queue/maildrop" "$PFX/queue/incoming" "$PFX/queue/active" \
        "$PFX/queue/deferred" "$PFX/queue/hold" -type f 2>/dev/null | wc -l
}
postfix_empty() { [ "$(postfix_queued)" = 0 ]; }
postfix_held() { find "$PFX/queue/hold" -type f 2>/dev/null | wc -l; }

# Stops the Postfix instance in $PFX (by its master's PID).
postfix_stop() {
    [ -n "$PFX" ] && [ -f "$PFX/queue/pid/master.pid" ] || return 0
    local mp
    mp=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
    postfix -c "$PFX/etc" stop >/dev/null 2>&1 || true
    for _ in $(seq 100); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$mp" 2>/dev/null || true
    forget_pid "$mp"
}

run_postfix() {
    local m0 s0 cpu0 cpu1 t0 secs load s1 inj cpu PFXPID
    PFX=$TMP/$DEST-postfix
    mkdir -p "$PFX/etc" "$PFX/queue" "$PFX/data"
    chown postfix:postfix "$PFX/data"
    cat >"$PFX/etc/main.cf" <<EOT
compatibility_level = 3.6
queue_directory = $PFX/queue
data_directory = $PFX/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
# inet_interfaces must be an address on an interface; the listener itself is $PFX_IP
# (master.cf below).
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# Everything received goes to the hold queue until released.
smtpd_recipient_restrictions = check_client_access static:HOLD
relayhost = [$DEST_IP]:$DEST_PORT
smtp_bind_address = $PFX_IP
smtp_tls_security_level = none
maillog_file_prefixes = $TMP
maillog_file = $PFX/maillog
smtputf8_enable = no
biff = no
EOT
    awk -v l="$PFX_IP:2525 inet n - n - - smtpd" '/^smtp +inet/ {print l; next}
         /^[a-z]/ && NF >= 8 {$5 = "n"} {print}' /etc/postfix/master.cf >"$PFX/etc/master.cf"
    if ! postfix -c "$PFX/etc" start >"$TMP/postfix.log" 2>&1; then
        echo "deliver.sh: $DEST postfix did not start:" >&2
        tail -3 "$TMP/postfix.log" >&2
        return 0
    fi
    for _ in $(seq 50); do [ -s "$PFX/queue/pid/master.pid" ] && break; sleep 0.1; done
    PFXPID=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
    PIDS+=("$PFXPID")
    if wait_port "$PFX_IP" 2525 "$PFXPID" &&
        inject "$DEST postfix" "$PFX_IP:2525" "$OUT/inject-$DEST-postfix.json"; then
        for _ in $(seq $((SECS * 10))); do
            [ "$(postfix_held)" -ge "$N" ] && break
            sleep 0.1
        done
        if [ "$(postfix_held)" != "$N" ]; then
            echo "deliver.sh: $DEST postfix: $(postfix_held) held messages, expected $N" >&2
        fi
        read -r m0 s0 < <(dest_counts "$PFX_IP")
        cpu0=$(tree_cpu "$PFXPID")
        t0=$(now)
        postsuper -c "$PFX/etc" -H ALL 2>>"$TMP/postfix.log"
        postqueue -c "$PFX/etc" -f
        if secs=$(wait_delivered "$t0" "$PFX_IP" $((m0 + N)) postfix_empty); then
            cpu1=$(tree_cpu "$PFXPID")
            load=$(cut -d' ' -f1 /proc/loadavg)
            # Postfix keeps idle connections in its cache for 2 s; the sink counts a session
            # when it ends.
            sleep 3
            read -r _ s1 < <(dest_counts "$PFX_IP")
            inj=$(jq -r '.messages_per_second' "$OUT/inject-$DEST-postfix.json")
            cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }')
            echo "$DEST postfix $N $secs $cpu $((s1 - s0)) $inj 0 $load -" >>"$RESULTS"
            echo "deliver.sh: $DEST postfix: $N messages in $secs s, CPU $cpu s, $((s1 - s0)) sessions" >&2
        else
            echo "deliver.sh: $DEST postfix: not delivered within ${SECS}s ($(postfix_queued) queued)" >&2
        fi
    fi
    cp "$PFX/maillog" "$OUT/$DEST-postfix.maillog" 2>/dev/null || true
    postfix_stop
}

# --- Each destination: rmox per runtime, then Postfix -----------------------------------
for DEST in $DESTS; do
    case $DEST in
    sink) DEST_IP=$SINK_IP DEST_PORT=2525 RCPT_DOMAIN=sink.test N=$MSGS ;;
    harness)
        [ -n "$HARNESS_UP" ] || continue
        DEST_IP=$HARNESS_IP DEST_PORT=25 RCPT_DOMAIN=pf.example.org N=$HARNESS_MSGS
        ;;
    *)
        echo "deliver.sh: unknown destination $DEST (sink, harness)" >&2
        continue
        ;;
    esac
    i=21
    for rt in $RUNTIMES; do
        run_rmox "$rt" "127.0.0.$i"
        i=$((i + 1))
        if [ "$DEST" = harness ]; then
            harness_settle "$(grep -cF 'client=unknown[127.0.0.2' "$TMP/harness.out" || true)"
        fi
    done
    run_postfix
    if [ "$DEST" = harness ]; then
        harness_settle "$(grep -cF 'client=unknown[127.0.0.2' "$TMP/harness.out" || true)"
    fi
done

# --- The table ------------------------------------------------------------------------
{
    echo "$(date -u +%F) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))," \
        "kernel $(uname -r), data on $(findmnt -n -o FSTYPE -T "$TMP") ($(findmnt -n -o SOURCE -T "$TMP"))," \
        "load average at start $LOAD_START, run took $(($(date +%s) - T_START)) s"
    echo "outbound delivery of N queued messages of $SIZE bytes, one recipient each; rmox" \
        "queue.workers = $WORKERS; per destination, ranked by messages/s"
    awk '
        { dest[NR] = $1; name[NR] = $2; n[NR] = $3; secs[NR] = $4; rate[NR] = $3 / $4
          cpu[NR] = $5 * 1000 / $3; conns[NR] = $6 / $3; inj[NR] = $7; left[NR] = $8
          load[NR] = $9; own[NR] = ($10 == "-" ? "-" : sprintf("%.0f", $3 / $10))
          if ($2 == "postfix") { prate[$1] = rate[NR]; pcpu[$1] = cpu[NR] } }
        END {
            printf "%-7s %-4s %-13s %5s %7s %7s %6s %10s %6s %9s %4s %8s %8s %5s\n", "dest", "rank",
                "server", "N", "seconds", "msg/s", "x pfx", "CPU ms/msg", "x pfx", "conns/msg",
                "left", "own msg/s", "inject/s", "load"
            for (k = 1; k <= NR; k++) order[k] = k
            # Rows come grouped by destination; ranked by rate within each.
            for (a = 1; a <= NR; a++) for (b = a + 1; b <= NR; b++) {
                x = order[a]; y = order[b]
                if (dest[y] == dest[x] && rate[y] > rate[x]) { order[a] = y; order[b] = x }
            }
            rank = 0; prev = ""
            for (k = 1; k <= NR; k++) {
                m = order[k]
                if (dest[m] != prev) { rank = 0; prev = dest[m] }
                rank++
                pr = prate[dest[m]]; pc = pcpu[dest[m]]
                printf "%-7s %-4d %-13s %5d %7.2f %7.0f %6s %10.3f %6s %9.3f %4d %8s %8.0f %5.2f\n",
                    dest[m], rank, name[m], n[m], secs[m], rate[m],
                    (pr > 0 ? sprintf("%.2f", rate[m] / pr) : "-"), cpu[m],
                    (pc > 0 ? sprintf("%.2f", cpu[m] / pc) : "-"), conns[m], left[m], own[m],
                    inj[m], load[m]
            }
        }' "$RESULTS"
    echo "dest: sink = smtp-sink $SINK_IP:2525; harness = the harness Postfix $HARNESS_IP:25"
    echo "  (smtpd, then virtual(8) into a Maildir; its local delivery is not timed)."
    echo "seconds, msg/s: from the release (rmox: exec of \`rmox serve\`, so process start and store"
    echo "  opening count; Postfix: \`postsuper -H ALL\` then \`postqueue -f\`) until the destination"
    echo "  counted every message and the server finished (rmox logged every delivery; Postfix's"
    echo "  queue is empty); polled every 50 ms. x pfx: ratio to Postfix to the same destination"
    echo "  in this run (msg/s: higher is faster; CPU: lower is cheaper). CPU: utime+stime of the"
    echo "  server's process tree over that interval."
    echo "conns/msg: sessions the destination counted per message. left: entries still queued afterwards."
    echo "own msg/s: rmox's log, queue runner start to last delivery. inject/s: the held queueing phase"
    echo "  (rmox-load, $INJECT_SESSIONS sessions, pipelining; not part of the delivery figures)."
    echo "load: 1-minute load average at the end of the server's delivery."
} | tee "$OUT/table.txt"
