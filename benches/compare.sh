#!/usr/bin/env bash
# Compares rmox (each runtime) with Postfix and with Postfix's smtp-sink on this machine.
#
#   benches/compare.sh            # from the repository root; run as root (Postfix needs it)
#
# Environment: MSGS (messages per cell, default 3000), SECS (time bound per cell, default 6),
# IDLE (idle sessions for the memory test, default 5000), RUNTIMES (default
# "tokio smol glommio"), NO_BUILD=1 (reuse target/release), KEEP=1 (keep the temp dir),
# OUT (directory for JSON results and the table; default a temp dir).
#
# Servers, each on its own loopback address and fresh directory:
#   rmox localserve --runtime R  127.0.0.1x:1025   durable: message file + redb commit (fsync);
#                                                  restarted on a fresh directory per cell
#   Postfix 3.x (Debian)         127.0.0.4:2525    own config dir, virtual(8) delivery to a
#                                                  Maildir; Postfix fsyncs the queue file
#                                                  before its 250 and the Maildir file on delivery
#   smtp-sink                    127.0.0.5:2525    protocol only, nothing stored: the ceiling
# Workloads: 1 KiB and 64 KiB messages, 1/10/50 sessions, with and without PIPELINING,
# one recipient, sessions reused for many messages. Then server RSS per idle session (rmox
# only: Postfix runs one process per session) and connections accepted per second.
# Every server started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MSGS=${MSGS:-3000}
SECS=${SECS:-6}
IDLE=${IDLE:-5000}
RUNTIMES=${RUNTIMES:-"tokio smol glommio"}
RMOX=$ROOT/target/release/rmox
LOAD=$ROOT/target/release/rmox-load

for tool in postfix smtp-sink postconf jq; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (apt-get install postfix jq)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
    echo "compare.sh: run as root (Postfix drops privileges itself)" >&2
    exit 1
fi
if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p rmox --bin rmox -p rmox-benches --bin rmox-load)
fi

# Idle sessions need a descriptor each in the server and in the load generator.
need=$((IDLE + 1000))
if [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" -lt "$need" ]; then
    echo "compare.sh: ulimit -n is $(ulimit -n); idle sessions limited" >&2
    IDLE=$(($(ulimit -n) - 1000))
fi

TMP=$(mktemp -d /var/tmp/rmox-compare.XXXXXX)
chmod 755 "$TMP" # Postfix daemons run as user postfix
OUT=${OUT:-$TMP/results}
mkdir -p "$OUT"
PIDS=() # servers still running, stopped by cleanup
PFX=""

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    if [ -n "$PFX" ] && [ -f "$PFX/queue/pid/master.pid" ]; then
        mp=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
        kill -TERM "$mp" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
    fi
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [ "${KEEP:-}" != 1 ]; then
        case "$OUT" in "$TMP"/*) cp "$OUT/table.txt" /tmp/rmox-compare-table.txt 2>/dev/null ;; esac
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

declare -A ADDR PIDOF
SERVERS=()

# Another server on one of our addresses would be measured instead of ours: refuse.
for a in 127.0.0.4/2525 127.0.0.5/2525 127.0.0.11/1025 127.0.0.12/1025 127.0.0.13/1025; do
    if (exec 3<>"/dev/tcp/$a") 2>/dev/null; then
        echo "compare.sh: something already listens on ${a/\//:}; stop it first" >&2
        exit 1
    fi
done

# rmox runs on a fresh data directory for every cell (so the disk never holds more than one
# cell's messages); start_rmox/stop_rmox keep ADDR and PIDOF current.
declare -A IPOF
start_rmox() { # name
    local rt=${1#rmox-} ip=${IPOF[$1]}
    rm -rf "$TMP/$1"
    "$RMOX" localserve --dir "$TMP/$1" --ip "$ip" --runtime "$rt" >>"$TMP/$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    PIDOF[$1]=$pid
    ADDR[$1]=$ip:1025
    wait_port "$ip" 1025 "$pid"
}
stop_rmox() { # name
    local pid=${PIDOF[$1]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "compare.sh: $1 (pid $pid) did not stop within 10 s of SIGTERM; killed" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    rm -rf "$TMP/$1"
}

i=11
for rt in $RUNTIMES; do
    IPOF[rmox-$rt]=127.0.0.$i
    i=$((i + 1))
    if start_rmox "rmox-$rt"; then
        SERVERS+=("rmox-$rt")
        stop_rmox "rmox-$rt"
    else
        echo "compare.sh: rmox --runtime $rt did not start; skipped:" >&2
        tail -3 "$TMP/rmox-$rt.log" >&2
    fi
done

# Postfix: its own config, queue and mail directories under $TMP.
PFX=$TMP/postfix
mkdir -p "$PFX/etc" "$PFX/queue" "$PFX/data" "$PFX/mail"
chown postfix:postfix "$PFX/data" "$PFX/mail"
cat >"$PFX/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PFX/queue
data_directory = $PFX/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
# inet_interfaces must be an address on an interface; the listener itself is 127.0.0.4
# (master.cf below).
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = localhost
virtual_mailbox_base = $PFX/mail
virtual_mailbox_maps = static:rmox/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
maillog_file_prefixes = $TMP
maillog_file = $PFX/maillog
smtputf8_enable = no
biff = no
EOF
awk '/^smtp +inet/ {print "127.0.0.4:2525 inet n - n - - smtpd"; next}
     /^[a-z]/ && NF >= 8 {$5 = "n"} {print}' /etc/postfix/master.cf >"$PFX/etc/master.cf"
postfix -c "$PFX/etc" start >"$TMP/postfix.log" 2>&1 || {
    echo "compare.sh: Postfix did not start:" >&2
    tail -3 "$PFX/maillog" >&2
    exit 1
}
for _ in $(seq 50); do [ -s "$PFX/queue/pid/master.pid" ] && break; sleep 0.1; done
PFXPID=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
PIDS+=("$PFXPID")
wait_port 127.0.0.4 2525 "$PFXPID" || { echo "compare.sh: Postfix did not start" >&2; exit 1; }
SERVERS+=(postfix)
ADDR[postfix]=127.0.0.4:2525
PIDOF[postfix]=$PFXPID

# smtp-sink (-u: drop root; -c: count; backlog 1024).
smtp-sink -u postfix 127.0.0.5:2525 1024 >/dev/null 2>"$TMP/sink.log" &
SINKPID=$!
PIDS+=("$SINKPID")
wait_port 127.0.0.5 2525 "$SINKPID" || { echo "compare.sh: smtp-sink did not start" >&2; exit 1; }
SERVERS+=(smtp-sink)
ADDR[smtp-sink]=127.0.0.5:2525
PIDOF[smtp-sink]=$SINKPID

# Waits until Postfix has delivered everything queued, so one cell's backlog does not load
# the next cell (at most 60 s).
postfix_drain() {
    for _ in $(seq 600); do
        n=$(find "$PFX/queue/incoming" "$PFX/queue/active" "$PFX/queue/deferred" -type f 2>/dev/null | wc -l)
        [ "$n" = 0 ] && return 0
        sleep 0.1
    done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "compare.sh: servers ${SERVERS[*]}; $MSGS messages or ${SECS}s per cell; results in $OUT" >&2
for size in 1024 65536; do
    for sess in 1 10 50; do
        for pipe in no yes; do
            for s in "${SERVERS[@]}"; do
                case $s in rmox-*) start_rmox "$s" ;; esac
                flag=()
                [ "$pipe" = yes ] && flag=(--pipelining)
                f="$OUT/send-$s-$size-$sess-$pipe.json"
                "$LOAD" --target "${ADDR[$s]}" --sessions "$sess" --messages "$MSGS" --size "$size" \
                    "${flag[@]}" --max-seconds "$SECS" --pid "${PIDOF[$s]}" --label "$s $size/$sess/$pipe" \
                    --json "$f" >&2
                case $s in
                    rmox-*) stop_rmox "$s" ;;
                    postfix) postfix_drain && find "$PFX/mail" -type f -path '*/new/*' -delete ;;
                esac
            done
        done
    done
done

for s in "${SERVERS[@]}"; do
    case $s in rmox-*) start_rmox "$s" ;; esac
    "$LOAD" --mode accept --target "${ADDR[$s]}" --sessions 10 --messages 20000 --max-seconds 5 \
        --pid "${PIDOF[$s]}" --label "$s accept" --json "$OUT/accept-$s.json" >&2
    case $s in rmox-*) stop_rmox "$s" ;; esac
done
for s in "${SERVERS[@]}"; do
    case $s in rmox-*) ;; *) continue ;; esac
    start_rmox "$s"
    "$LOAD" --mode idle --target "${ADDR[$s]}" --sessions "$IDLE" --max-seconds 60 \
        --pid "${PIDOF[$s]}" --label "$s idle" --json "$OUT/idle-$s.json" >&2
    stop_rmox "$s"
done

# The table.
{
    echo "$(date -u +%F) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))," \
        "kernel $(uname -r), data on $(findmnt -n -o FSTYPE -T "$TMP") ($(findmnt -n -o SOURCE -T "$TMP"))," \
        "load average at start $LOAD_START"
    echo "msg/s per server; ratios rmox/postfix and rmox/smtp-sink for each runtime"
    printf "%-6s %4s %4s" size sess pipe
    for s in "${SERVERS[@]}"; do printf " %11s" "$s"; done
    for s in "${SERVERS[@]}"; do
        case $s in rmox-*) printf " %9s %9s" "${s#rmox-}/pfx" "${s#rmox-}/sink" ;; esac
    done
    echo
    for size in 1024 65536; do
        for sess in 1 10 50; do
            for pipe in no yes; do
                printf "%-6s %4s %4s" "$((size / 1024))KiB" "$sess" "$pipe"
                declare -A r=()
                for s in "${SERVERS[@]}"; do
                    f="$OUT/send-$s-$size-$sess-$pipe.json"
                    v=$(jq -r '.messages_per_second' "$f")
                    e=$(jq -r '[.errors[]] | add // 0' "$f")
                    r[$s]=$v
                    mark=""
                    [ "$e" != 0 ] && mark="*"
                    printf " %11s" "$(printf '%.0f%s' "$v" "$mark")"
                done
                for s in "${SERVERS[@]}"; do
                    case $s in
                        rmox-*)
                            awk -v a="${r[$s]}" -v p="${r[postfix]}" -v k="${r[smtp-sink]}" \
                                'BEGIN { printf " %9.2f %9.2f", (p > 0 ? a / p : 0), (k > 0 ? a / k : 0) }'
                            ;;
                    esac
                done
                echo
                unset r
            done
        done
    done
    echo "(* = some messages failed; see the JSON)"
    echo "1-minute load average after each cell: min $(jq -s 'map(.loadavg_1min_at_end) | min' "$OUT"/send-*.json)," \
        "max $(jq -s 'map(.loadavg_1min_at_end) | max' "$OUT"/send-*.json) (above 2 on this machine means other work competed)"
    echo
    echo "p99 final-dot latency (ms) / server CPU s per 1000 messages"
    printf "%-6s %4s %4s" size sess pipe
    for s in "${SERVERS[@]}"; do printf " %15s" "$s"; done
    echo
    for size in 1024 65536; do
        for sess in 1 10 50; do
            for pipe in no yes; do
                printf "%-6s %4s %4s" "$((size / 1024))KiB" "$sess" "$pipe"
                for s in "${SERVERS[@]}"; do
                    f="$OUT/send-$s-$size-$sess-$pipe.json"
                    printf " %15s" "$(jq -r '"\(.latency_us.p99 / 1000 * 10 | round / 10) / \(.server_cpu_seconds_per_1000_msgs * 100 | round / 100)"' "$f")"
                done
                echo
            done
        done
    done
    echo
    echo "connections accepted per second (10 clients: connect, greeting, QUIT)"
    for s in "${SERVERS[@]}"; do
        printf "  %-12s %8.0f\n" "$s" "$(jq -r '.connections_per_second' "$OUT/accept-$s.json")"
    done
    echo
    echo "server memory per idle session (after EHLO): RSS delta / sessions"
    for s in "${SERVERS[@]}"; do
        f="$OUT/idle-$s.json"
        [ -f "$f" ] || continue
        printf "  %-12s %6s sessions %8.0f bytes/session\n" "$s" "$(jq -r '.idle_sessions' "$f")" \
            "$(jq -r '.idle_bytes_per_session' "$f")"
    done
} | tee "$OUT/table.txt"
