#!/usr/bin/env bash
# Durable accept on PostgreSQL against redb and against Postfix in the same run, one node
# and two nodes (issue 20).
#
#   benches/pg_compare.sh         # from anywhere in the repository; run as root (Postfix needs it)
#
# Environment: MSGS (messages per cell, default 3000; the two loads of a two-node cell send
# half each), SECS (time bound per cell, default 6), RUNTIME (rmox serve --runtime, default
# tokio), LARGE=0 (skip the 64 KiB cell), NO_BUILD=1 (reuse target/release), KEEP=1 (keep
# the temp dir), OUT (directory for JSON results and the table; default a temp dir, the
# table is copied to /tmp/rmox-pg-compare-table.md when it goes).
#
# Servers, each on its own loopback address; every rmox cell starts from a fresh directory
# and, on PostgreSQL, a fresh database:
#   postfix  Postfix 3.x (Debian)  127.0.0.41:2525   as benches/compare.sh: own config dir,
#                                                    virtual(8) delivery to a Maildir
#   redb     rmox serve, redb      127.0.0.42:1025   message file + redb commit (fsync)
#   pg1      rmox serve, PostgreSQL, one node        127.0.0.43:1025
#   pg2      rmox serve, PostgreSQL, two nodes       127.0.0.44:1025 (node a) and
#            127.0.0.45:1025 (node b), one database, a data_dir each
# All rmox cells run `rmox serve --runtime $RUNTIME` with the same config but for [storage]
# (one plain SMTP listener, incoming checks off, a catchall account for @localhost).
# PostgreSQL is a throwaway cluster from storage-pg/pg-up.sh on 127.0.0.1:54343 (fsync on,
# synchronous_commit on: a commit is durable, like redb's), on the same file system as the
# other servers' data.
#
# Workloads: 1 KiB messages with 1, 10 and 50 sessions and 64 KiB with 10, no pipelining,
# one recipient, sessions reused. A two-node cell runs two rmox-load processes at the same
# moment, one per node, with half the sessions each; one session cannot be split, so that
# row runs 2 sessions (1 per node), and its PG-2/PG-1 ratio compares 2 sessions with 1.
# The two-node rate is the messages both acknowledged over the longer of the two runs.
#
# Per PostgreSQL cell, from the server's statistics (read after the rmox nodes stopped and
# their backends exited, so every backend has flushed them): commits per acknowledged
# message (pg_stat_database.xact_commit of the cell's database) and WAL fsyncs per message
# (pg_stat_wal.wal_sync, the whole cluster: the durability cost, below 1 when commits share
# a flush). The schema setup at start is not counted: an idle start and stop of the same
# topology is measured first and subtracted. Background work during the cell is counted.
# Server CPU per message counts the server's process tree; for PostgreSQL cells also the
# postmaster's (every backend, the WAL writer, the checkpointer).
#
# Everything started here is stopped by PID on exit; every load is bounded by SECS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MSGS=${MSGS:-3000}
SECS=${SECS:-6}
RUNTIME=${RUNTIME:-tokio}
LARGE=${LARGE:-1}
PG_PORT=54343
RMOX=$ROOT/target/release/rmox
LOAD=$ROOT/target/release/rmox-load
me=pg_compare.sh

for tool in postfix postconf psql jq; do
    command -v "$tool" >/dev/null || { echo "$me: $tool not found (apt-get install postfix postgresql jq)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
    echo "$me: run as root (Postfix drops privileges itself; pg-up.sh runs PostgreSQL as postgres)" >&2
    exit 1
fi
if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p rmox -p rmox-benches --bin rmox-load)
fi
for f in "$RMOX" "$LOAD"; do
    [ -x "$f" ] || { echo "$me: $f missing (run without NO_BUILD=1)" >&2; exit 1; }
done

declare -A ADDR=([postfix]=127.0.0.41:2525 [redb]=127.0.0.42:1025 [pg1]=127.0.0.43:1025
    [pg2a]=127.0.0.44:1025 [pg2b]=127.0.0.45:1025)
# Another server on one of our addresses would be measured instead of ours: refuse.
for a in "${ADDR[@]}" "127.0.0.1:$PG_PORT"; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
        echo "$me: something already listens on $a; stop it first" >&2
        exit 1
    fi
done

TMP=$(mktemp -d /var/tmp/rmox-pg-compare.XXXXXX)
chmod 755 "$TMP" # Postfix daemons run as user postfix
OUT=${OUT:-$TMP/results}
mkdir -p "$OUT"
# Copies, so that a build in the work tree during the run does not change the binaries.
mkdir "$TMP/bin"
cp "$RMOX" "$LOAD" "$TMP/bin/"
RMOX=$TMP/bin/rmox
LOAD=$TMP/bin/rmox-load
PIDS=() # servers and loads still running, stopped by cleanup
PFX=""
PGDIR=""

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    if [ -n "$PFX" ] && [ -f "$PFX/queue/pid/master.pid" ]; then
        mp=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
        kill -TERM "$mp" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
    fi
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    [ -n "$PGDIR" ] && "$ROOT/storage-pg/pg-up.sh" stop "$PGDIR"
    if [ "${KEEP:-}" != 1 ]; then
        case "$OUT" in "$TMP"/*) cp "$OUT/table.md" /tmp/rmox-pg-compare-table.md 2>/dev/null ;; esac
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # ip:port pid
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
forget_pid() { # pid
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# PostgreSQL.
pg_env=$(RMOX_PG_PORT=$PG_PORT "$ROOT/storage-pg/pg-up.sh")
eval "$pg_env"
PGDIR=$RMOX_TEST_PG_DIR
PG_URL=$RMOX_TEST_PG_URL
PG_MASTER=$(head -1 "$PGDIR/data/postmaster.pid")
psql_q() { # sql: one value, from the maintenance database
    psql "$PG_URL" -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"
}
DBN=0
DB=""
new_db() {
    DBN=$((DBN + 1))
    DB=bench$DBN
    psql_q "CREATE DATABASE $DB" >/dev/null
}
drop_db() {
    psql_q "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}
# "xact_commit wal_sync": the cell database's commits and the cluster's WAL fsyncs so far.
# Waits (at most 10 s) for the database's backends to exit, which flushes their statistics,
# and 1.5 s more for the WAL writer's (it reports at most once a second).
pg_counts() {
    for _ in $(seq 100); do
        [ "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")" = 0 ] && break
        sleep 0.1
    done
    sleep 1.5
    psql_q "SELECT coalesce((SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'), 0)
        || ' ' || (SELECT wal_sync FROM pg_stat_wal)"
}

# rmox: a config directory per node; [storage] is the only difference between servers.
rmox_dir() { # dir ip storage-kind [node]
    local storage='kind = "redb"'
    if [ "$3" = postgres ]; then
        storage="kind = \"postgres\"
url = \"$PG_URL dbname=$DB\"
node = \"$4\""
    fi
    rm -rf "$1"
    mkdir -p "$1"
    : >"$1/zone"
    cat >"$1/rmox.toml" <<EOF
hostname = "bench.rmox.test"
data_dir = "data"
resolver = ["zonefile:zone"]

[storage]
$storage

[[listener]]
name = "bench"
ip = "$2"
smtp = { port = 1025 }

[domain."localhost"]

[account.load]
domain = "localhost"
destinations = { "@localhost" = {} }

[postmaster]
account = "load"
mailbox = "Inbox"

[incoming]
checks = false
EOF
}
declare -A PIDOF
start_rmox() { # name kind [node]
    local ip=${ADDR[$1]%:*} dir=$TMP/$1
    rmox_dir "$dir" "$ip" "$2" "${3:-}"
    "$RMOX" serve --config "$dir/rmox.toml" --runtime "$RUNTIME" >>"$TMP/$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    PIDOF[$1]=$pid
    wait_port "${ADDR[$1]}" "$pid" || {
        echo "$me: rmox $1 did not start:" >&2
        tail -5 "$TMP/$1.log" >&2
        stop_rmox "$1"
        return 1
    }
}
stop_rmox() { # name
    local pid=${PIDOF[$1]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$me: $1 (pid $pid) did not stop within 10 s of SIGTERM; killed" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    rm -rf "${TMP:?}/$1"
}

# Postfix, as benches/compare.sh: its own config, queue and mail directories under $TMP.
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
# inet_interfaces must be an address on an interface; the listener itself is in master.cf.
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
awk -v listen="${ADDR[postfix]}" '/^smtp +inet/ {print listen " inet n - n - - smtpd"; next}
     /^[a-z]/ && NF >= 8 {$5 = "n"} {print}' /etc/postfix/master.cf >"$PFX/etc/master.cf"
postfix -c "$PFX/etc" start >"$TMP/postfix.log" 2>&1 || {
    echo "$me: Postfix did not start:" >&2
    tail -3 "$PFX/maillog" >&2
    exit 1
}
for _ in $(seq 50); do [ -s "$PFX/queue/pid/master.pid" ] && break; sleep 0.1; done
PFXPID=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
PIDS+=("$PFXPID")
PIDOF[postfix]=$PFXPID
wait_port "${ADDR[postfix]}" "$PFXPID" || { echo "$me: Postfix did not start" >&2; exit 1; }

# Waits until Postfix has delivered everything queued (at most 60 s), then empties the
# Maildir, so one cell's backlog does not load the next.
postfix_drain() {
    for _ in $(seq 600); do
        n=$(find "$PFX/queue/incoming" "$PFX/queue/active" "$PFX/queue/deferred" -type f 2>/dev/null | wc -l)
        [ "$n" = 0 ] && break
        sleep 0.1
    done
    find "$PFX/mail" -type f -path '*/new/*' -delete
}

# The commits and WAL fsyncs of an idle start and stop of each topology (the schema
# setup), subtracted from each cell's.
declare -A IDLE_COMMITS IDLE_WAL
for topo in pg1 pg2; do
    new_db
    read -r _ w0 <<<"$(pg_counts)"
    if [ "$topo" = pg1 ]; then
        start_rmox pg1 postgres a
        stop_rmox pg1
    else
        start_rmox pg2a postgres a
        start_rmox pg2b postgres b
        stop_rmox pg2a
        stop_rmox pg2b
    fi
    read -r c w1 <<<"$(pg_counts)"
    IDLE_COMMITS[$topo]=$c
    IDLE_WAL[$topo]=$((w1 - w0))
    drop_db
done

# One load: rmox-load against ADDR[$1], bounded in time, JSON to $5.
load() { # server size sessions messages json [pid...]
    local s=$1 size=$2 sess=$3 n=$4 f=$5
    shift 5
    local pids=() p
    for p in "$@"; do pids+=(--pid "$p"); done
    timeout $((SECS + 60)) "$LOAD" --target "${ADDR[$s]}" --sessions "$sess" --messages "$n" \
        --size "$size" --max-seconds "$SECS" "${pids[@]}" --label "$s $size/$sess" --json "$f" >&2 ||
        echo "$me: rmox-load against $s ($size/$sess) failed" >&2
}

# Writes $OUT/pg-$1-$2-$3.json: commits and WAL fsyncs of the cell minus the idle start's,
# per acknowledged message.
pg_stats() { # topo size sess start-wal acknowledged
    local c w
    read -r c w <<<"$(pg_counts)"
    jq -n --argjson c "$c" --argjson cb "${IDLE_COMMITS[$1]}" --argjson w "$((w - $4))" \
        --argjson wb "${IDLE_WAL[$1]}" --argjson n "$5" '
        {commits: ($c - $cb), wal_syncs: ($w - $wb), messages_ok: $n,
         commits_per_message: (if $n > 0 then ($c - $cb) / $n else null end),
         wal_syncs_per_message: (if $n > 0 then ($w - $wb) / $n else null end)}' \
        >"$OUT/pg-$1-$2-$3.json"
}

CELLS=("1024 1" "1024 10" "1024 50")
[ "$LARGE" = 1 ] && CELLS+=("65536 10")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
echo "$me: $MSGS messages or ${SECS}s per cell, rmox --runtime $RUNTIME; results in $OUT" >&2
for cell in "${CELLS[@]}"; do
    read -r size sess <<<"$cell"
    # Postfix
    load postfix "$size" "$sess" "$MSGS" "$OUT/send-postfix-$size-$sess.json" "$PFXPID"
    postfix_drain
    # redb, one node
    if start_rmox redb redb; then
        load redb "$size" "$sess" "$MSGS" "$OUT/send-redb-$size-$sess.json" "${PIDOF[redb]}"
        stop_rmox redb
    fi
    # PostgreSQL, one node
    new_db
    read -r _ w0 <<<"$(pg_counts)"
    if start_rmox pg1 postgres a; then
        f=$OUT/send-pg1-$size-$sess.json
        load pg1 "$size" "$sess" "$MSGS" "$f" "${PIDOF[pg1]}" "$PG_MASTER"
        stop_rmox pg1
        pg_stats pg1 "$size" "$sess" "$w0" "$(jq -r '.messages_ok // 0' "$f" 2>/dev/null || echo 0)"
    fi
    drop_db
    # PostgreSQL, two nodes, one database: a load per node at the same moment.
    new_db
    read -r _ w0 <<<"$(pg_counts)"
    half=$(((sess + 1) / 2))
    if start_rmox pg2a postgres a && start_rmox pg2b postgres b; then
        load pg2a "$size" "$half" "$((MSGS / 2))" "$OUT/send-pg2a-$size-$sess.json" \
            "${PIDOF[pg2a]}" "$PG_MASTER" &
        la=$!
        load pg2b "$size" "$half" "$((MSGS / 2))" "$OUT/send-pg2b-$size-$sess.json" "${PIDOF[pg2b]}" &
        lb=$!
        PIDS+=("$la" "$lb")
        wait "$la" || true
        wait "$lb" || true
        forget_pid "$la"
        forget_pid "$lb"
        stop_rmox pg2a
        stop_rmox pg2b
        # The two-node cell as one result: both loads' messages over the longer run.
        jq -s '{messages_ok: (map(.messages_ok) | add), seconds: (map(.seconds) | max),
                sessions: (map(.sessions) | add),
                messages_per_second: ((map(.messages_ok) | add) / (map(.seconds) | max)),
                latency_us: {p50: map(.latency_us.p50)},
                errors: (map(.errors | to_entries) | add | group_by(.key)
                    | map({(.[0].key): (map(.value) | add)}) | add // {}),
                server_cpu_seconds: (map(.server_cpu_seconds // 0) | add),
                server_cpu_seconds_per_1000_msgs:
                    ((map(.server_cpu_seconds // 0) | add) * 1000 / ([(map(.messages_ok) | add), 1] | max))}' \
            "$OUT/send-pg2a-$size-$sess.json" "$OUT/send-pg2b-$size-$sess.json" \
            >"$OUT/send-pg2-$size-$sess.json" 2>/dev/null || echo "$me: two-node result $size/$sess missing" >&2
        pg_stats pg2 "$size" "$sess" "$w0" "$(jq -r '.messages_ok // 0' "$OUT/send-pg2-$size-$sess.json" 2>/dev/null || echo 0)"
    elif [ -n "${PIDOF[pg2a]:-}" ] && kill -0 "${PIDOF[pg2a]}" 2>/dev/null; then
        stop_rmox pg2a
    fi
    drop_db
done
ELAPSED=$(($(date +%s) - START))

# A value from a JSON result, empty when the file or the value is missing.
val() { # file jq-filter
    [ -s "$1" ] && jq -r "$2 // empty" "$1" 2>/dev/null || true
}
rate() { # server size sess: msg/s, with * when some messages failed
    local f=$OUT/send-$1-$2-$3.json v e
    v=$(val "$f" .messages_per_second)
    [ -n "$v" ] || { echo n/a; return; }
    e=$(val "$f" '[.errors[]] | add')
    printf '%.0f%s' "$v" "$([ -n "$e" ] && [ "$e" != 0 ] && echo '*')"
}
ratio() { # server-a server-b size sess
    awk -v a="$(val "$OUT/send-$1-$3-$4.json" .messages_per_second)" \
        -v b="$(val "$OUT/send-$2-$3-$4.json" .messages_per_second)" \
        'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b; else printf "n/a" }'
}
p50() { # server size sess: ms, both nodes' for pg2
    local v
    v=$(val "$OUT/send-$1-$2-$3.json" '[.latency_us.p50] | flatten | map(. / 1000 * 100 | round / 100) | join(",")')
    echo "${v:-n/a}"
}
cpu() { # server size sess: server CPU ms per message
    local v
    v=$(val "$OUT/send-$1-$2-$3.json" .server_cpu_seconds_per_1000_msgs)
    [ -n "$v" ] && printf '%.2f' "$v" || echo n/a
}
pgper() { # topo size sess field
    local v
    v=$(val "$OUT/pg-$1-$2-$3.json" ".$4")
    [ -n "$v" ] && printf '%.2f' "$v" || echo n/a
}

{
    echo "$(date -u +%F) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))," \
        "kernel $(uname -r), data on $(findmnt -n -o FSTYPE -T "$TMP") ($(findmnt -n -o SOURCE -T "$TMP"))," \
        "PostgreSQL on $(findmnt -n -o FSTYPE -T "$PGDIR") ($(findmnt -n -o SOURCE -T "$PGDIR"))," \
        "$($(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/postgres --version)," \
        "load average at start $LOAD_START"
    echo "MSGS=$MSGS SECS=$SECS, rmox serve --runtime $RUNTIME, no pipelining, one recipient;" \
        "cells took ${ELAPSED}s"
    echo
    echo "| cell | Postfix msg/s | redb msg/s | PG-1 msg/s | PG-2 msg/s | PG-1/redb | PG-1/Postfix" \
        "| PG-2/PG-1 | PG-2/Postfix | p50 final-dot ms Postfix / redb / PG-1 / PG-2 (a,b)" \
        "| PG commits/msg PG-1 / PG-2 | PG WAL fsyncs/msg PG-1 / PG-2" \
        "| server CPU ms/msg Postfix / redb / PG-1 / PG-2 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for cell in "${CELLS[@]}"; do
        read -r size sess <<<"$cell"
        two=$(val "$OUT/send-pg2-$size-$sess.json" .sessions)
        label="$((size / 1024)) KiB, $sess session$([ "$sess" = 1 ] || echo s)"
        [ -n "$two" ] && [ "$two" != "$sess" ] && label+=" (PG-2: $two)"
        echo "| $label | $(rate postfix "$size" "$sess") | $(rate redb "$size" "$sess")" \
            "| $(rate pg1 "$size" "$sess") | $(rate pg2 "$size" "$sess")" \
            "| $(ratio pg1 redb "$size" "$sess") | $(ratio pg1 postfix "$size" "$sess")" \
            "| $(ratio pg2 pg1 "$size" "$sess") | $(ratio pg2 postfix "$size" "$sess")" \
            "| $(p50 postfix "$size" "$sess") / $(p50 redb "$size" "$sess") / $(p50 pg1 "$size" "$sess") / $(p50 pg2 "$size" "$sess")" \
            "| $(pgper pg1 "$size" "$sess" commits_per_message) / $(pgper pg2 "$size" "$sess" commits_per_message)" \
            "| $(pgper pg1 "$size" "$sess" wal_syncs_per_message) / $(pgper pg2 "$size" "$sess" wal_syncs_per_message)" \
            "| $(cpu postfix "$size" "$sess") / $(cpu redb "$size" "$sess") / $(cpu pg1 "$size" "$sess") / $(cpu pg2 "$size" "$sess") |"
    done
    echo
    echo "\* = some messages failed (see the JSON). PG-2: two nodes on one database, a load per node" \
        "with half the sessions at the same moment; msg/s = messages both acknowledged / the longer run." \
        "PG figures exclude an idle start's schema setup (idle start: ${IDLE_COMMITS[pg1]}" \
        "commits, ${IDLE_WAL[pg1]} WAL fsyncs on one node; ${IDLE_COMMITS[pg2]} and ${IDLE_WAL[pg2]} on two)." \
        "1-minute load average after each load: min $(jq -s 'map(.loadavg_1min_at_end // empty) | min' "$OUT"/send-*.json)," \
        "max $(jq -s 'map(.loadavg_1min_at_end // empty) | max' "$OUT"/send-*.json) (above 2 on this machine: other work competed)."
} | tee "$OUT/table.md"
