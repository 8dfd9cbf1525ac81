#!/usr/bin/env bash
# Compares rmox (each runtime) with Postfix and with Postfix's smtp-sink on this machine.
#
#   benches/compare.sh            # from the repository root; run as root (Postfix needs it)
#
# Environment: MSGS (messages per cell, default 3000), SECS (time bound per cell, default 6),
# ROUNDS (timed runs of every cell and server, default 3: the tables and targets use each
# server's median round),
# IDLE (idle sessions for the memory test, default 5000), NOOPS (round trips for the
# runtime floor, default 30000; see below), FSYNC_SECS (seconds per phase of the physical
# limit, default 2), RUNTIMES (default
# "tokio smol glommio"), NO_BUILD=1 (reuse target/release), KEEP=1 (keep the temp dir),
# OUT (directory for JSON results and the table; default a temp dir), RMOX_BIN, LOAD_BIN,
# FLOOR_BIN and FSYNC_BENCH_BIN (the binaries to run instead of target/release's; with
# NO_BUILD=1, as benches/tests/compare_smoke.rs runs it on the test build's binaries).
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
#
# The physical limit: target/release/fsync_bench (benches/src/bin/fsync_bench.rs) appends
# 1 KiB records to a file in $TMP (the file system every server writes to) for FSYNC_SECS (2) s per
# phase: one fdatasync per record (append+fdatasync per second, p50 latency), and 8 records
# per fdatasync (records per second). It runs before the first message cell and after the
# last; the latency target uses the lower of the two p50s (a busy disk would loosen it).
# Two of its phases write the acceptance log's pattern (one record per fdatasync, in a
# preallocated file) through io_uring: linked write+fdatasync in one submission, as
# storage's log does, and glommio's direct-I/O file (DmaFile, O_DIRECT) awaited on a glommio
# executor; the table shows which is faster on this disk (issue 18 asked for the latter in
# the glommio build).
#
# fdatasyncs per acknowledged message: in a pass of its own after the timed cells (the same
# cells, at most 1000 messages each; counting slows a server, one with many threads most),
# `perf stat` counts the calls the server's process tree (the server and every process or thread it starts, for Postfix all
# its daemons) makes to fdatasync, fsync, syncfs, msync, sync, plus io_uring FSYNC requests
# (io_uring:io_uring_submit_req with opcode 3, which is how glommio syncs), from syscall
# tracepoints counted in the kernel; the sum is divided by the messages the load generator
# saw acknowledged.
# Also counted, not summed: sync_file_range (it does not flush the disk's cache) and files
# opened with O_DSYNC/O_SYNC by openat(2) (each write to such a file is a sync the sum
# misses; the table flags them). Not seen: O_DSYNC files opened through io_uring, RWF_DSYNC
# writes. The window is the load plus about 0.3 s either side; work a server defers past
# the cell (Postfix's delivery, a background index) is counted only as far as it happens
# within it. Where perf cannot count tracepoints (not installed, perf_event_paranoid, a
# container), strace -c -f counts the same system calls in that pass (1 KiB cells without
# pipelining only); strace sees no io_uring requests. Neither: the column says n/a.
#
# Rounds: a short cell (3000 messages at several thousand a second) lasts under a second,
# and one run of it varies by up to 30 % from the next on a small, shared machine. So every
# timed cell runs ROUNDS times, each round with the servers in a rotated order (each server
# runs at a different point in the machine's drift), one after the other for the same cell;
# the round with the median msg/s is the cell's result (send-SERVER-SIZE-SESSIONS-PIPE.json),
# and every round is kept (...-rN.json). The table of rounds shows each cell's spread, and
# glommio's table its range against the other runtime's, so a verdict within the noise shows
# as one.
#
# The runtime floor: after the message cells, every server answers NOOP round trips (one
# command, one reply; nothing parsed beyond the verb, nothing stored) from 1 and from 10
# sessions, NOOPS in all from one session (default 30000) and three times as many from ten
# (they go three to five times faster; the CPU figures come in 10 ms ticks), bounded by SECS, ROUNDS rounds rotated as above,
# then a counted pass (perf, at most 5000) for the wake-up calls per round trip. A round trip
# wakes the server once: its CPU per round trip is what one wake-up costs each runtime with
# the same rmox code on top. The glommio line compares glommio's extra CPU per round trip
# with its extra CPU per 1 KiB message at one session. Beside the servers, the floor has one
# row per runtime without rmox's code: target/release/rmox-floor (127.0.0.2x:1025) runs the
# runtime crate's accept loop, executors and threads as rmox does, but answers every line
# with a fixed 250 (no SMTP machine, no answerer, no timers). rmox's row minus its runtime's
# floor row is what rmox's own code costs per round trip; the floor rows against each other
# are what the runtimes cost, with nothing of rmox's session code in them.
#
# Targets (issue 18) are judged from this run's JSON and printed last (also targets.md):
# rates as ratios against Postfix or smtp-sink in the same run, for each rmox runtime.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MSGS=${MSGS:-3000}
SECS=${SECS:-6}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-5000}
NOOPS=${NOOPS:-30000}
# Seconds per phase of the physical limit (fsync_bench; a decimal number).
FSYNC_SECS=${FSYNC_SECS:-2}
for v in ROUNDS NOOPS; do
    case ${!v} in '' | *[!0-9]* | 0*)
        echo "compare.sh: $v must be a whole number from 1 up, not '${!v}'" >&2
        exit 2
        ;;
    esac
done
RUNTIMES=${RUNTIMES:-"tokio smol glommio"}
RMOX=${RMOX_BIN:-$ROOT/target/release/rmox}
# shellcheck source=benches/compare-lib.sh
. "$ROOT/benches/compare-lib.sh"
LOAD=${LOAD_BIN:-$ROOT/target/release/rmox-load}
FLOOR=${FLOOR_BIN:-$ROOT/target/release/rmox-floor}
FSYNC_BENCH=${FSYNC_BENCH_BIN:-$ROOT/target/release/fsync_bench}

for tool in postfix smtp-sink postconf jq; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (apt-get install postfix jq)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
    echo "compare.sh: run as root (Postfix drops privileges itself)" >&2
    exit 1
fi
# How fdatasyncs are counted (see the header): perf if it can count syscall tracepoints,
# else strace on a separate pass, else not at all.
SYNC_METHOD=none
if perf stat -e syscalls:sys_enter_fdatasync -o /dev/null -- true >/dev/null 2>&1; then
    SYNC_METHOD=perf
elif command -v strace >/dev/null; then
    SYNC_METHOD=strace
    echo "compare.sh: perf cannot count syscall tracepoints here; counting fdatasyncs with strace on a separate pass" >&2
else
    echo "compare.sh: neither perf (apt-get install linux-perf) nor strace (apt-get install strace) can count fdatasyncs; that column will say n/a" >&2
fi
if [ "${NO_BUILD:-}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p rmox --bin rmox -p rmox-benches --bin rmox-load --bin rmox-floor --bin fsync_bench)
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
# Each server's directory (made in $TMP) goes to a block group of its own on ext2/3/4 (the
# "top of a directory hierarchy" flag): a server's file creations then do not pass over
# the inodes another server just freed (Postfix frees a queue file per message), which
# costs CPU on ext4 without a journal (see start_rmox). Elsewhere chattr fails harmlessly.
chattr +T "$TMP" 2>/dev/null || true
OUT=${OUT:-$TMP/results}
mkdir -p "$OUT"
PIDS=() # servers still running, stopped by cleanup
PFX=""
COUNTER="" # a running perf or strace (sync_start), stopped by sync_stop or cleanup

cleanup() {
    set +e
    [ -n "$COUNTER" ] && kill -INT "$COUNTER" 2>/dev/null && wait "$COUNTER" 2>/dev/null
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
        case "$OUT" in "$TMP"/*)
            cp "$OUT/table.txt" /tmp/rmox-compare-table.txt 2>/dev/null
            cp "$OUT/targets.md" /tmp/rmox-compare-targets.md 2>/dev/null ;;
        esac
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
for a in 127.0.0.4/2525 127.0.0.5/2525 127.0.0.11/1025 127.0.0.12/1025 127.0.0.13/1025 \
    127.0.0.21/1025 127.0.0.22/1025 127.0.0.23/1025; do
    if (exec 3<>"/dev/tcp/$a") 2>/dev/null; then
        echo "compare.sh: something already listens on ${a/\//:}; stop it first" >&2
        exit 1
    fi
done

# rmox runs on a fresh data directory for every cell; start_rmox/stop_rmox keep ADDR and
# PIDOF current. A finished cell's files (rmox's data directory, the messages Postfix
# delivered) are removed only when the run ends, where the disk has room for all of them:
# removing thousands of files makes the next cell's file creations slow on ext4 without a
# journal (its inode allocator passes over every inode freed in the last minute, reading
# its inode table entry), which would charge one server's cell for the cleanup of another's.
# Without that room (estimate: every 64 KiB cell storing all its messages, twice over)
# they are removed after each cell and the run says so.
declare -A IPOF
RETIRED="$TMP/retired"
mkdir -p "$RETIRED"
n_rt=$(wc -w <<<"$RUNTIMES")
room_kib=$(df -Pk "$TMP" | awk 'NR == 2 { print $4 }')
need_kib=$((MSGS * 64 * 6 * (n_rt + 1) * 2 * ROUNDS))
if [ "${room_kib:-0}" -ge "$need_kib" ]; then
    DEFER_RM=1
else
    DEFER_RM=0
    echo "compare.sh: $((room_kib / 1024)) MiB free in $TMP, $((need_kib / 1024)) MiB wanted to keep every cell's files until the end: removing them after each cell (on ext4 without a journal that slows the next cell's file creations)" >&2
fi
retired=0
# Removes a finished cell's directory now, or moves it aside for removal at the end.
retire() { # dir
    [ -e "$1" ] || return 0
    if [ "$DEFER_RM" = 1 ]; then
        retired=$((retired + 1))
        mv "$1" "$RETIRED/$retired"
    else
        rm -rf "$1"
    fi
}
# Postfix's delivered messages, after its cell.
postfix_retire() {
    [ "$DEFER_RM" = 1 ] || find "$PFX/mail" -type f -path '*/new/*' -delete
}
# rmox's data directory for each cell is made inside a directory of that server's own, made
# once at the start ($TMP/NAME.d): on ext4 a subdirectory stays in its parent's (flex) block
# group, so all of a server's files stay in the groups that were its own from the start,
# apart from Postfix's queue. Were each cell's directory a new directory of $TMP, ext4
# could place it (Orlov: a group with many free inodes) where Postfix had just created and
# deleted thousands of queue files. Without a journal, ext4 checks and skips every inode
# freed in a group in the last 1 to 6 minutes on each file creation there: in a profile of
# rmox taken after 3,000 files were deleted beside its directory, inode allocation was 39 %
# of its CPU at 64 KiB per message (1 KiB messages create no file).
start_rmox() { # name
    local rt=${1#rmox-} ip=${IPOF[$1]}
    mkdir -p "$TMP/$1.d"
    rm -rf "$TMP/$1.d/data"
    "$RMOX" localserve --dir "$TMP/$1.d/data" --ip "$ip" --runtime "$rt" >>"$TMP/$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    PIDOF[$1]=$pid
    ADDR[$1]=$ip:1025
    wait_port "$ip" 1025 "$pid"
}
# Stops a server started here (SIGTERM, then SIGKILL after 10 s) and forgets its PID.
stop_server() { # name
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
}
stop_rmox() { # name
    stop_server "$1"
    retire "$TMP/$1.d/data"
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
# The runtime floor sends NOOPs: by default, after 100 of them Postfix counts each as an
# error, then sleeps before its replies and disconnects (smtpd_junk_command_limit).
smtpd_junk_command_limit = 1000000000
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

# The server's process tree: PID and its descendants, comma-separated.
proc_tree() { # pid
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            out = root; seen[root] = 1; n = 1
            while (n) {
                n = 0
                for (p in parent) if (!(p in seen) && (parent[p] in seen)) { seen[p] = 1; out = out "," p; n++ }
            }
            print out
        }'
}

# Starts counting the sync calls of server $1's process tree; sync_stop ends it.
sync_start() { # server
    local pids p args=()
    pids=$(proc_tree "${PIDOF[$1]}")
    rm -f "$TMP/counter.txt"
    case $SYNC_METHOD in
        perf)
            perf stat -x, -o "$TMP/counter.txt" -p "$pids" \
                -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync,syscalls:sys_enter_syncfs \
                -e syscalls:sys_enter_msync,syscalls:sys_enter_sync,syscalls:sys_enter_sync_file_range \
                "${WAKE_EV[@]}" \
                -e syscalls:sys_enter_openat --filter 'flags & 0x1000' \
                "${IOURING_EV[@]}" 2>"$TMP/counter.err" &
            ;;
        strace)
            for p in ${pids//,/ }; do args+=(-p "$p"); done
            strace -c -f -q -o "$TMP/counter.txt" \
                -e trace=fdatasync,fsync,syncfs,msync,sync,sync_file_range "${args[@]}" 2>"$TMP/counter.err" &
            ;;
        *) return 0 ;;
    esac
    COUNTER=$!
    # perf (like strace) writes its file only when it stops: it has attached once it holds
    # perf_event descriptors (it opens every counter before it enables any). Waiting for the
    # file instead, as this did before, always waited the full 3 s.
    if [ "$SYNC_METHOD" = perf ]; then
        for _ in $(seq 30); do
            find "/proc/$COUNTER/fd" -lname 'anon_inode:*perf_event*' 2>/dev/null | grep -q . && break
            sleep 0.1
        done
    fi
    sleep 0.3
}

# Stops the count and writes JSON to $1: counts per call, their sum, the messages
# acknowledged (from the load generator's JSON $2) and the sum per message (null when the
# counter failed).
sync_stop() { # out.json load.json
    if [ -n "$COUNTER" ]; then
        sleep 0.2
        kill -INT "$COUNTER" 2>/dev/null || true
        wait "$COUNTER" 2>/dev/null || true
        COUNTER=""
    fi
    local counts=""
    case $SYNC_METHOD in
        perf) # count,unit,event,... ; io_uring FSYNC requests come in as io_uring_submit_req
            counts=$(awk -F, '$1 ~ /^[0-9]+$/ {
                    e = $3; sub(/.*:/, "", e); sub(/^sys_enter_/, "", e)
                    if (e == "io_uring_submit_req") e = "io_uring_fsync"
                    if (e == "openat") e = "dsync_opens"
                    print e, $1 }' "$TMP/counter.txt" 2>/dev/null) ;;
        strace) # % time, seconds, usecs/call, calls, [errors,] syscall
            counts=$(awk '$1 ~ /^[0-9.]+$/ && $NF ~ /^[a-z_]+$/ && $NF != "total" { print $NF, $4 }' \
                "$TMP/counter.txt" 2>/dev/null) ;;
    esac
    # strace -c lists only the calls that were made: a parsed file with no line is zero.
    if [ "$SYNC_METHOD" = strace ] && [ -s "$TMP/counter.txt" ] && [ -z "$counts" ]; then counts="fdatasync 0"; fi
    jq -n --arg method "$SYNC_METHOD" --arg counts "$counts" --slurpfile load "$2" '
        ($counts | split("\n") | map(select(length > 0) | split(" ") | {(.[0]): (.[1] | tonumber)})
            | add // {}) as $c
        | ($load[0].messages_ok) as $n
        | ([$c.fdatasync, $c.fsync, $c.syncfs, $c.msync, $c.sync, $c.io_uring_fsync] | map(. // 0) | add) as $t
        | {method: $method, counts: $c, syncs: (if $c.fdatasync == null then null else $t end),
           messages_ok: $n,
           syncs_per_message: (if $c.fdatasync == null or $n == 0 then null else $t / $n end)}' >"$1"
}

# Where the CPU goes besides the work itself (counted with the syncs, perf only): context
# switches and the calls that wait for or hand off work (epoll_wait, io_uring_enter, futex),
# and membarrier (glommio calls it each time its executor goes to sleep: the kernel
# interrupts every other CPU running one of the process's threads), each where the kernel
# can count it; the "wake-ups" table shows them per message.
WAKE_EV=()
if [ "$SYNC_METHOD" = perf ]; then
    for ev in context-switches syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_pwait \
        syscalls:sys_enter_io_uring_enter syscalls:sys_enter_futex syscalls:sys_enter_membarrier; do
        perf stat -e "$ev" -o /dev/null -- true >/dev/null 2>&1 && WAKE_EV+=(-e "$ev")
    done
fi

# io_uring FSYNC requests (IORING_OP_FSYNC = 3), where the kernel has the tracepoint.
IOURING_EV=()
if [ "$SYNC_METHOD" = perf ] &&
    perf stat -e io_uring:io_uring_submit_req --filter 'opcode == 3' -o /dev/null -- true >/dev/null 2>&1; then
    IOURING_EV=(-e io_uring:io_uring_submit_req --filter 'opcode == 3')
fi

# The file system the servers write to, as "TYPE on SOURCE"; ext4 also says whether it has a
# journal (a journal's jbd2 thread is listed under /proc/fs/jbd2 as DEVICE-INODE). Without
# one, ext4 skips recently deleted inodes when it allocates one, which makes creating files
# cost more CPU after many were deleted (README, "Why 64 KiB messages cost twice as much
# CPU on some runs").
fs_desc() {
    local type src
    type=$(findmnt -n -o FSTYPE -T "$TMP")
    src=$(findmnt -n -o SOURCE -T "$TMP")
    if [ "$type" = ext4 ]; then
        if compgen -G "/proc/fs/jbd2/$(basename "$src")-*" >/dev/null; then
            type="ext4 (journal)"
        else
            type="ext4 (no journal)"
        fi
    fi
    echo "$type on $src"
}

# The physical limit of the file system the servers write to.
fsync_limit() { # out.json
    "$FSYNC_BENCH" "$TMP" --seconds "$FSYNC_SECS" --record 1024 --batch 8 >"$1" ||
        echo "compare.sh: fsync_bench failed" >&2
}
fsync_limit "$OUT/fsync-start.json"

# One cell: server $1 gets messages of $2 bytes over $3 sessions, pipelining $4, $5 messages
# (bounded by SECS). timed: the rate and CPU go to send-*.json; counted: the server's syncs
# and wake-ups go to syncs-*.json (see the counting pass).
run_cell() { # server size sessions pipe messages timed|counted [round]
    local s=$1 size=$2 sess=$3 pipe=$4 n=$5 flag=() json=$OUT/send-$1-$2-$3-$4.json
    [ -n "${7:-}" ] && json=$OUT/send-$1-$2-$3-$4-r$7.json
    case $s in rmox-*) start_rmox "$s" ;; esac
    [ "$pipe" = yes ] && flag=(--pipelining)
    if [ "$6" = timed ]; then
        "$LOAD" --target "${ADDR[$s]}" --sessions "$sess" --messages "$n" --size "$size" \
            "${flag[@]}" --max-seconds "$SECS" --pid "${PIDOF[$s]}" \
            --label "$s $size/$sess/$pipe${7:+ round $7}" --json "$json" >&2
    else
        sync_start "$s"
        "$LOAD" --target "${ADDR[$s]}" --sessions "$sess" --messages "$n" --size "$size" \
            "${flag[@]}" --max-seconds "$SECS" --label "$s $size/$sess/$pipe (counted)" \
            --json "$TMP/count-load.json" >&2
        sync_stop "$OUT/syncs-$s-$size-$sess-$pipe.json" "$TMP/count-load.json"
    fi
    case $s in
        rmox-*) stop_rmox "$s" ;;
        postfix) postfix_drain && postfix_retire ;;
    esac
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "compare.sh: servers ${SERVERS[*]}; $MSGS messages or ${SECS}s per cell, $ROUNDS rounds; results in $OUT" >&2
for size in 1024 65536; do
    for sess in 1 10 50; do
        for pipe in no yes; do
            for ((round = 1; round <= ROUNDS; round++)); do
                for s in $(rotated "$round" "${SERVERS[@]}"); do
                    run_cell "$s" "$size" "$sess" "$pipe" "$MSGS" timed "$round"
                done
            done
            for s in "${SERVERS[@]}"; do
                keep_median "$s" "$size" "$sess" "$pipe"
            done
        done
    done
done

fsync_limit "$OUT/fsync-end.json"

# Counting slows the server it counts (strace stops it at every system call it sees; perf's
# per-thread counters add work to every context switch and traced call), and a server with
# more threads and switches pays more: the counts get a pass of their own, after the timed
# cells, with at most 1000 messages per cell. perf: every cell; strace: 1 KiB, no
# pipelining.
if [ "$SYNC_METHOD" != none ]; then
    CMSGS=$((MSGS < 1000 ? MSGS : 1000))
    csizes=(1024 65536) cpipes=(no yes)
    [ "$SYNC_METHOD" = strace ] && csizes=(1024) cpipes=(no)
    for size in "${csizes[@]}"; do
        for sess in 1 10 50; do
            for pipe in "${cpipes[@]}"; do
                for s in "${SERVERS[@]}"; do
                    run_cell "$s" "$size" "$sess" "$pipe" "$CMSGS" counted
                done
            done
        done
    done
fi

for s in "${SERVERS[@]}"; do
    case $s in rmox-*) start_rmox "$s" ;; esac
    "$LOAD" --mode accept --target "${ADDR[$s]}" --sessions 10 --messages 20000 \
        --max-seconds "$((SECS < 5 ? SECS : 5))" \
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

# The runtime floor (see the header). Its results are named as cells of size "noop" without
# pipelining (send-SERVER-noop-SESSIONS-no[-rN].json), so that the median helpers apply;
# the message tables and targets read only the 1024 and 65536 cells.
noop_cell() { # server sessions timed|counted [round]
    local s=$1 sess=$2 n=$NOOPS json=$OUT/send-$1-noop-$2-no.json
    [ "$sess" = 1 ] || n=$((NOOPS * 3))
    [ -n "${4:-}" ] && json=$OUT/send-$1-noop-$2-no-r$4.json
    case $s in rmox-*) start_rmox "$s" ;; esac
    if [ "$3" = timed ]; then
        "$LOAD" --mode noop --target "${ADDR[$s]}" --sessions "$sess" --messages "$n" \
            --max-seconds "$SECS" --pid "${PIDOF[$s]}" \
            --label "$s noop/$sess${4:+ round $4}" --json "$json" >&2
    else
        sync_start "$s"
        "$LOAD" --mode noop --target "${ADDR[$s]}" --sessions "$sess" \
            --messages $((n < 5000 ? n : 5000)) --max-seconds "$SECS" \
            --label "$s noop/$sess (counted)" --json "$TMP/count-load.json" >&2
        sync_stop "$OUT/wakes-$s-noop-$sess.json" "$TMP/count-load.json"
    fi
    case $s in rmox-*) stop_rmox "$s" ;; esac
}
# The floor of each runtime without rmox's code (see the header): one rmox-floor per runtime
# rmox started on, running through the phase (it keeps no state between cells).
FLOORS=()
i=21
for s in "${SERVERS[@]}"; do
    case $s in rmox-*) ;; *) continue ;; esac
    f=floor-${s#rmox-}
    "$FLOOR" --runtime "${s#rmox-}" --listen "127.0.0.$i:1025" --max-seconds 3600 >"$TMP/$f.log" 2>&1 &
    PIDS+=("$!")
    PIDOF[$f]=$!
    ADDR[$f]=127.0.0.$i:1025
    if wait_port "127.0.0.$i" 1025 "${PIDOF[$f]}"; then
        FLOORS+=("$f")
    else
        echo "compare.sh: $f did not start; its row is left out:" >&2
        tail -3 "$TMP/$f.log" >&2
        stop_server "$f"
    fi
    i=$((i + 1))
done
for sess in 1 10; do
    for ((round = 1; round <= ROUNDS; round++)); do
        for s in $(rotated "$round" "${SERVERS[@]}" "${FLOORS[@]}"); do
            noop_cell "$s" "$sess" timed "$round"
        done
    done
    for s in "${SERVERS[@]}" "${FLOORS[@]}"; do
        keep_median "$s" noop "$sess" no
    done
done
if [ "${#WAKE_EV[@]}" -gt 0 ]; then
    for sess in 1 10; do
        for s in "${SERVERS[@]}" "${FLOORS[@]}"; do
            noop_cell "$s" "$sess" counted
        done
    done
fi
for f in "${FLOORS[@]}"; do stop_server "$f"; done

# The median append+fdatasync latency in microseconds: the lower of the runs before and
# after the cells (other work on the disk only ever makes it slower, and a slower fdatasync
# would loosen the latency target).
fsync_p50_us() {
    { val "$OUT/fsync-start.json" .single.latency_us.p50; val "$OUT/fsync-end.json" .single.latency_us.p50; } |
        awk 'NF { if (n++ == 0 || $1 < m) m = $1 } END { if (n) printf "%.0f", m }'
}

physical_limit() {
    local a b
    printf "%-70s %9s %9s\n" "physical limit of $(fs_desc) (fsync_bench, 1 KiB records)" \
        "before" "after"
    for row in "append+fdatasync per second|.single.fdatasyncs_per_second|1" \
        "append+fdatasync p50 latency (ms)|.single.latency_us.p50|0.001" \
        "append+fdatasync p99 latency (ms)|.single.latency_us.p99|0.001" \
        "records per second, 8 records per fdatasync|.batch.records_per_second|1" \
        "overwrite (preallocated file)+fdatasync per second|.overwrite.fdatasyncs_per_second|1" \
        "log append via io_uring, write+fdatasync linked (storage), per s|.ring.fdatasyncs_per_second|1" \
        "  p50 latency (ms)|.ring.latency_us.p50|0.001" \
        "log append via glommio DmaFile (O_DIRECT), then fdatasync, per s|.dma.fdatasyncs_per_second|1" \
        "  p50 latency (ms)|.dma.latency_us.p50|0.001"; do
        IFS='|' read -r label path scale <<<"$row"
        a=$(val "$OUT/fsync-start.json" "$path")
        b=$(val "$OUT/fsync-end.json" "$path")
        printf "  %-68s %9s %9s\n" "$label" \
            "$(awk -v v="$a" -v k="$scale" 'BEGIN { if (v == "") print "n/a"; else if (k == 1) printf "%.0f", v; else printf "%.2f", v * k }')" \
            "$(awk -v v="$b" -v k="$scale" 'BEGIN { if (v == "") print "n/a"; else if (k == 1) printf "%.0f", v; else printf "%.2f", v * k }')"
    done
    for k in ring dma; do
        for w in start end; do
            a=$(val "$OUT/fsync-$w.json" ".$k.error")
            [ -z "$a" ] || echo "  ($k phase did not run at the $w: $a)"
        done
    done
    echo "  (before and after the message cells, $FSYNC_SECS s per phase; apart by more than 2x: other work used the disk)"
    if [ "$DEFER_RM" = 1 ]; then
        echo "  (each cell's files were removed at the end of the run, not before the next cell)"
    else
        echo "  (each cell's files were removed before the next cell: not enough room to keep them)"
    fi
    if lsattr -d "$TMP" 2>/dev/null | cut -d' ' -f1 | grep -q T; then
        echo "  (each server's directory in a block group of its own: chattr +T on the parent)"
    fi
}

# glommio against the faster of the other runtimes in every cell, with what each spent:
# where glommio is behind, the server CPU per message and the wake-ups (1 KiB, no
# pipelining) show where its time went.
glommio_cells() {
    local s size sess pipe g o best bs line cg co w
    local rmox=()
    for s in "${SERVERS[@]}"; do case $s in rmox-*) [ "$s" = rmox-glommio ] || rmox+=("$s") ;; esac; done
    [ -f "$OUT/send-rmox-glommio-1024-1-no.json" ] && [ "${#rmox[@]}" -gt 0 ] || return 0
    echo "glommio against the faster of ${rmox[*]} in each cell: msg/s ratio; server CPU ms per message" \
        "(glommio / that runtime); for 1 KiB without pipelining, io_uring_enter calls per message" \
        "(glommio) and epoll_wait+epoll_pwait calls per message (that runtime) from the counting pass"
    echo "(ratio of the median rounds; rounds: glommio's slowest-fastest msg/s | the other's)"
    printf "%-6s %4s %4s %6s  %-25s %-26s %s\n" size sess pipe ratio "rounds (msg/s)" "CPU ms/msg" "wake-up calls/msg"
    for size in 1024 65536; do
        for sess in 1 10 50; do
            for pipe in no yes; do
                g=$(rate rmox-glommio "$size" "$sess" "$pipe")
                best="" bs=""
                for s in "${rmox[@]}"; do
                    o=$(rate "$s" "$size" "$sess" "$pipe")
                    if [ -n "$o" ] && { [ -z "$best" ] || awk -v a="$o" -v b="$best" 'BEGIN { exit !(a + 0 > b + 0) }'; }; then
                        best=$o bs=$s
                    fi
                done
                [ -n "$g" ] && [ -n "$best" ] || continue
                cg=$(val "$OUT/send-rmox-glommio-$size-$sess-$pipe.json" .server_cpu_seconds_per_1000_msgs)
                co=$(val "$OUT/send-$bs-$size-$sess-$pipe.json" .server_cpu_seconds_per_1000_msgs)
                w=""
                if [ "$size" = 1024 ] && [ "$pipe" = no ]; then
                    w=$(jq -rn --slurpfile g "$OUT/syncs-rmox-glommio-$size-$sess-$pipe.json" \
                        --slurpfile o "$OUT/syncs-$bs-$size-$sess-$pipe.json" \
                        'def per($f; $k): if ($f.messages_ok // 0) == 0 or $f.counts[$k[0]] == null then null
                            else ([$k[] as $x | $f.counts[$x] // 0] | add) / $f.messages_ok * 10 | round / 10 end;
                         [per($g[0]; ["io_uring_enter"]), per($o[0]; ["epoll_wait", "epoll_pwait"]),
                          per($g[0]; ["membarrier"])]
                         | if .[0] == null or .[1] == null then "" else
                           "\(.[0]) io_uring_enter / \(.[1]) epoll_wait\(if .[2] == null then "" else "; \(.[2]) membarrier" end)" end' \
                        2>/dev/null || true)
                fi
                line=$(printf "%-6s %4s %4s %6s  %-25s %-26s %s" "$((size / 1024))KiB" "$sess" "$pipe" \
                    "$(ratio "$g" "$best")" \
                    "$(spread rmox-glommio "$size" "$sess" "$pipe" | tr ' ' -) | $(spread "$bs" "$size" "$sess" "$pipe" | tr ' ' -)" \
                    "$(awk -v a="$cg" -v b="$co" 'BEGIN { if (a != "" && b != "") printf "%.2f / %.2f", a, b }') (${bs#rmox-})" "$w")
                echo "$line"
            done
        done
    done
    echo "(read in glommio 0.9's source; the runtime floor below measures what a wake-up costs, with"
    echo " and without rmox's code (its floor-R rows): glommio's loop submits each of its rings with a"
    echo " call of its own and re-arms its preemption timer on every turn, hence several io_uring_enter"
    echo " calls per wake-up where tokio and smol make one epoll_wait; and each time the executor goes"
    echo " to sleep it calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which interrupts every other"
    echo " CPU running a thread of the server (counted above). glommio's direct-I/O files as the"
    echo " log's I/O: the physical limit below measures them against the log's own io_uring)"
    echo
}

# Issue 18's targets, judged from this run's JSON: a markdown table.
targets() {
    local s rt r p x want sess v fs lim worst cells ok near hi cell g o best
    local rmox=()
    for s in "${SERVERS[@]}"; do case $s in rmox-*) rmox+=("$s") ;; esac; done
    echo "Targets (issue 18), this run (MSGS=$MSGS SECS=$SECS ROUNDS=$ROUNDS; each server's median round); ratios for each runtime against Postfix or smtp-sink in the same run"
    echo
    echo "| target | measured | pass/fail |"
    echo "|---|---|---|"
    for x in "10 5" "50 6" "1 2.5"; do
        read -r sess want <<<"$x"
        for s in "${rmox[@]}"; do
            r=$(rate "$s" 1024 "$sess" no)
            p=$(rate postfix 1024 "$sess" no)
            v=$(ratio "$r" "$p")
            echo "| 1 KiB, $sess session$([ "$sess" = 1 ] || echo s), no pipelining: ${s#rmox-} >= ${want}x Postfix" \
                "| ${v:+${v}x ($(printf %.0f "$r") vs $(printf %.0f "$p") msg/s)} | $(judge "$v" ">=" "$want") |"
        done
    done
    fs=$(fsync_p50_us)
    for s in "${rmox[@]}"; do
        v=$(val "$OUT/send-$s-1024-1-no.json" .latency_us.p50)
        lim=$(awk -v f="$fs" 'BEGIN { if (f != "") print f + 300 }')
        [ -n "$lim" ] || v=""
        echo "| p50 final-dot latency, 1 KiB, 1 session, no pipelining: ${s#rmox-} <= one fdatasync (p50, the lower run) + 0.3 ms" \
            "| ${v:+$(awk -v v="$v" -v f="$fs" 'BEGIN { printf "%.2f ms (limit %.2f + 0.30 ms)", v / 1000, f / 1000 }')} | $(judge "$v" "<=" "$lim") |"
    done
    for s in "${rmox[@]}"; do
        r=$(rate "$s" 65536 10 no)
        p=$(rate smtp-sink 65536 10 no)
        v=$(ratio "$r" "$p")
        echo "| 64 KiB, 10 sessions, no pipelining: ${s#rmox-} >= 0.5x smtp-sink" \
            "| ${v:+${v}x ($(printf %.0f "$r") vs $(printf %.0f "$p") msg/s)} | $(judge "$v" ">=" 0.5) |"
    done
    for s in "${rmox[@]}"; do
        r=$(val "$OUT/send-$s-1024-10-no.json" .server_cpu_seconds_per_1000_msgs)
        p=$(val "$OUT/send-$s-1024-10-yes.json" .server_cpu_seconds_per_1000_msgs)
        v=$(printf '%s\n%s\n' "$r" "$p" | awk 'NF { if (n++ == 0 || $1 > m) m = $1 } END { if (n) print m }')
        echo "| server CPU per 1 KiB message, 10 sessions: ${s#rmox-} <= 0.25 ms" \
            "| ${v:+$(awk -v a="$r" -v b="$p" 'BEGIN { printf "%.2f / %.2f ms (no / with pipelining)", a, b }')} | $(judge "$v" "<=" 0.25) |"
    done
    if [ -f "$OUT/send-rmox-glommio-1024-1-no.json" ] && [ "${#rmox[@]}" -gt 1 ]; then
        cells=0 ok=0 near=0 worst="" cell=""
        for size in 1024 65536; do
            for sess in 1 10 50; do
                for pipe in no yes; do
                    g=$(rate rmox-glommio "$size" "$sess" "$pipe")
                    best=""
                    for s in "${rmox[@]}"; do
                        [ "$s" = rmox-glommio ] && continue
                        o=$(rate "$s" "$size" "$sess" "$pipe")
                        best=$(awk -v a="$best" -v b="$o" 'BEGIN { print (a == "" || b + 0 > a + 0) ? b : a }')
                    done
                    v=$(ratio "$g" "$best")
                    [ -n "$v" ] || continue
                    cells=$((cells + 1))
                    [ "$(judge "$v" ">=" 1)" = pass ] && ok=$((ok + 1))
                    # Behind on the medians, but its fastest round reached the other's median:
                    # within this run's noise.
                    hi=$(spread rmox-glommio "$size" "$sess" "$pipe" | cut -d' ' -f2)
                    [ "$(judge "$v" ">=" 1)" = FAIL ] && [ -n "$hi" ] &&
                        [ "$(judge "$hi" ">=" "$best")" = pass ] && near=$((near + 1))
                    if [ -z "$worst" ] || awk -v a="$v" -v b="$worst" 'BEGIN { exit !(a + 0 < b + 0) }'; then
                        worst=$v cell="$((size / 1024)) KiB/$sess/$pipe"
                    fi
                done
            done
        done
        v=""
        [ "$cells" -gt 0 ] && v="$ok of $cells cells (medians of $ROUNDS rounds); lowest ${worst}x the faster of the others at $cell; behind where its fastest round reached the other's median: $near"
        echo "| glommio >= tokio and smol on every durable cell (all rmox cells)" \
            "| $v | $([ "$cells" -gt 0 ] && judge "$ok" ">=" "$cells" || echo n/a) |"
    else
        echo "| glommio >= tokio and smol on every durable cell | glommio or the others not run | n/a |"
    fi
    for s in "${rmox[@]}"; do
        worst="" cell="" cells=0 x=""
        for f in "$OUT"/syncs-"$s"-*-10-*.json "$OUT"/syncs-"$s"-*-50-*.json; do
            [ -f "$f" ] || continue
            v=$(val "$f" .syncs_per_message)
            [ -n "$v" ] || continue
            cells=$((cells + 1))
            [ "$(val "$f" '.counts.dsync_opens // 0')" != 0 ] && x=" (+D: O_DSYNC files opened)"
            if [ -z "$worst" ] || awk -v a="$v" -v b="$worst" 'BEGIN { exit !(a + 0 > b + 0) }'; then
                worst=$v
                cell=$(basename "$f" .json | sed "s/^syncs-$s-//; s/-/\//g")
            fi
        done
        v=""
        [ "$cells" -gt 0 ] && v="highest $(printf %.2f "$worst") at $cell, over $cells cells$x"
        echo "| fdatasyncs per acknowledged message, 10 and 50 sessions: ${s#rmox-} < 1" \
            "| $v | $(judge "$worst" "<" 1) |"
    done
}

# A table with a row per cell and a column per server, WIDTH wide: `FUNCTION SERVER SIZE
# SESSIONS PIPE` prints each value (nothing: n/a; a row of nothing is left out).
cell_table() { # width function
    local w=$1 f=$2 size sess pipe s v line any
    printf "%-6s %4s %4s" size sess pipe
    for s in "${SERVERS[@]}"; do printf " %${w}s" "$s"; done
    echo
    for size in 1024 65536; do
        for sess in 1 10 50; do
            for pipe in no yes; do
                line=$(printf "%-6s %4s %4s" "$((size / 1024))KiB" "$sess" "$pipe")
                any=0
                for s in "${SERVERS[@]}"; do
                    v=$("$f" "$s" "$size" "$sess" "$pipe")
                    [ -n "$v" ] && any=1
                    line+=$(printf " %${w}s" "${v:-n/a}")
                done
                [ "$any" = 0 ] || echo "$line"
            done
        done
    done
}
# A cell's rounds: slowest-fastest msg/s and their distance in % of the median.
round_cell() { # server size sessions pipe
    local lo hi
    read -r lo hi <<<"$(spread "$@")"
    awk -v lo="$lo" -v hi="$hi" -v m="$(rate "$@")" \
        'BEGIN { if (lo == "" || m + 0 <= 0) print "n/a"; else printf "%.0f-%.0f %3.0f%%", lo, hi, 100 * (hi - lo) / m }'
}
p99_cpu_cell() { # server size sessions pipe
    local f=$OUT/send-$1-$2-$3-$4.json
    [ -s "$f" ] || return 0
    jq -r '"\(.latency_us.p99 / 1000 * 10 | round / 10) / \(.server_cpu_seconds_per_1000_msgs * 100 | round / 100)"' "$f"
}
# fdatasyncs per acknowledged message from the counting pass; +D: O_DSYNC files were opened.
syncs_cell() { # server size sessions pipe
    local f=$OUT/syncs-$1-$2-$3-$4.json
    [ -f "$f" ] || return 0
    jq -r 'if .syncs_per_message == null then "n/a" else
        "\(.syncs_per_message * 100 | round / 100)\(if (.counts.dsync_opens // 0) > 0 then "+D" else "" end)" end' "$f"
}

# Server CPU per NOOP round trip in microseconds (median round), empty when not run.
noop_cpu_us() { # server sessions
    val "$OUT/send-$1-noop-$2-no.json" .server_cpu_seconds_per_1000_msgs |
        awk 'NF { printf "%.1f", $1 * 1000 }'
}
# Of the servers named, the one with the least server CPU per round trip at one session:
# "MICROSECONDS SERVER", or nothing when none was measured.
cheapest_noop() { # server...
    local s v best="" bs=""
    for s in "$@"; do
        v=$(noop_cpu_us "$s" 1)
        if [ -n "$v" ] && { [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a + 0 < b + 0) }'; }; then
            best=$v bs=$s
        fi
    done
    [ -z "$best" ] || echo "$best $bs"
}
# The runtime floor's table, and how glommio's extra CPU per round trip compares with its
# extra CPU per message.
runtime_floor() {
    local s sess line v w g o best bs gm om
    [ -f "$OUT/send-${SERVERS[0]}-noop-1-no.json" ] || return 0
    echo "runtime floor: NOOP round trips (one command, one reply, one wake-up of the server; nothing" \
        "stored), $NOOPS from one session, $((NOOPS * 3)) from ten; median of $ROUNDS rounds"
    printf "%-12s %11s %11s %9s %9s   %s\n" server "rt/s, 1 s" "rt/s, 10 s" "us/rt, 1" "us/rt, 10" \
        "wake-up calls per round trip, 1 session: context switches / epoll_wait+epoll_pwait / io_uring_enter / futex / membarrier"
    for s in "${SERVERS[@]}" "${FLOORS[@]}"; do
        line=$(printf "%-12s" "$s")
        for sess in 1 10; do
            v=$(rate "$s" noop "$sess" no)
            line+=$(printf " %11s" "$(awk -v v="$v" 'BEGIN { if (v == "") print "n/a"; else printf "%.0f", v }')")
        done
        for sess in 1 10; do
            v=$(noop_cpu_us "$s" "$sess")
            line+=$(printf " %9s" "${v:-n/a}")
        done
        w=$(val "$OUT/wakes-$s-noop-1.json" '.messages_ok as $n | .counts as $c
            | if ($n // 0) == 0 or $c["context-switches"] == null then empty else
              [$c["context-switches"], (($c.epoll_wait // 0) + ($c.epoll_pwait // 0)),
               ($c.io_uring_enter // 0), ($c.futex // 0), ($c.membarrier // 0)]
              | map(. / $n * 10 | round / 10 | tostring) | join("/") end')
        echo "$line   ${w:-n/a}"
    done
    echo "(server CPU per round trip: the server's process tree; Postfix's is its smtpd per session;" \
        "floor-R: rmox-floor, runtime R's accept loop, executors and threads with a fixed reply to every line)"
    floor_lines
    # glommio against the other runtime with the least CPU per round trip at one session.
    g=$(noop_cpu_us rmox-glommio 1)
    local others=()
    for s in "${SERVERS[@]}"; do
        case $s in rmox-glommio | postfix | smtp-sink) ;; *) others+=("$s") ;; esac
    done
    read -r best bs <<<"$(cheapest_noop "${others[@]}")" || true
    if [ -n "$g" ] && [ -n "$best" ]; then
        gm=$(val "$OUT/send-rmox-glommio-1024-1-no.json" .server_cpu_seconds_per_1000_msgs)
        om=$(val "$OUT/send-$bs-1024-1-no.json" .server_cpu_seconds_per_1000_msgs)
        awk -v g="$g" -v o="$best" -v gm="$gm" -v om="$om" -v other="${bs#rmox-}" 'BEGIN {
            d = g - o
            printf "glommio, one session: %.1f us of server CPU per round trip against %s'"'"'s %.1f (%+.1f us per wake-up)", g, other, o, d
            if (gm != "" && om != "") {
                dm = (gm - om) * 1000
                printf "; per 1 KiB message %.0f against %.0f us (%+.0f us)", gm * 1000, om * 1000, dm
                if (d > 0) printf ", the extra cost of %.1f round trips (a message without pipelining is 4 round trips and a wait for storage)", dm / d
            }
            print "" }'
    fi
    echo
}

# What the floor rows say: rmox's own code per round trip on each runtime (its row minus the
# runtime's floor row), and glommio's floor against the cheapest other runtime's floor.
floor_lines() {
    local f r a b own="" g best="" bs="" others=()
    for f in "${FLOORS[@]}"; do
        a=$(noop_cpu_us "rmox-${f#floor-}" 1)
        b=$(noop_cpu_us "$f" 1)
        [ -n "$a" ] && [ -n "$b" ] || continue
        own+=$(awk -v a="$a" -v b="$b" -v r="${f#floor-}" 'BEGIN { printf "%s %+.1f us", r, a - b }')", "
    done
    [ -n "$own" ] && echo "rmox's own code per round trip, one session (rmox row minus its runtime's floor row): ${own%, }"
    g=$(noop_cpu_us floor-glommio 1)
    for f in "${FLOORS[@]}"; do
        [ "$f" = floor-glommio ] || others+=("$f")
    done
    read -r best bs <<<"$(cheapest_noop "${others[@]}")" || true
    if [ -n "$g" ] && [ -n "$best" ]; then
        r=$(noop_cpu_us rmox-glommio 1)
        a=$(noop_cpu_us "rmox-${bs#floor-}" 1)
        awk -v g="$g" -v o="$best" -v other="${bs#floor-}" -v r="$r" -v a="$a" 'BEGIN {
            printf "glommio'"'"'s floor, one session: %.1f us per round trip against %s'"'"'s %.1f (%+.1f us per wake-up with no rmox code in it", g, other, o, g - o
            if (r != "" && a != "") printf "; with rmox: %+.1f us", r - a
            print ")" }'
    fi
}

# The table.
{
    echo "$(date -u +%F) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))," \
        "kernel $(uname -r), data on $(fs_desc)," \
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
    echo "(each figure is the server's median of $ROUNDS rounds; the servers ran in a rotated order each round)"
    echo
    echo "rounds: each server's slowest-fastest msg/s, and (fastest - slowest) / median in %"
    cell_table 19 round_cell
    # The 1-minute load average counts the run's own runnable threads (rmox-load's client
    # threads, one per session; the server's; Postfix's smtpd processes) and decays over
    # about a minute: after a cell it says more about the run than about other work. The
    # figure at the start, before any cell, is the one that tells whether the machine was
    # idle.
    echo "1-minute load average at the start: $(cut -d' ' -f1 <<<"$LOAD_START") (above 1 on these 2 CPUs:" \
        "other work ran in the minute before); after each cell, with the run's own threads counted:" \
        "min $(jq -s 'map(.loadavg_1min_at_end) | min' "$OUT"/send-*.json)," \
        "max $(jq -s 'map(.loadavg_1min_at_end) | max' "$OUT"/send-*.json)"
    echo
    echo "p99 final-dot latency (ms) / server CPU s per 1000 messages"
    cell_table 15 p99_cpu_cell
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
    echo
    echo "fdatasyncs per acknowledged message (fdatasync+fsync+syncfs+msync+sync+io_uring fsync by the" \
        "server's processes during the cell / messages acknowledged; counted with $SYNC_METHOD in the counting pass, at most 1000 messages per cell)"
    cell_table 11 syncs_cell
    echo "(+D = the server also opened files with O_DSYNC/O_SYNC, whose writes are syncs not in the figure)"
    echo
    if [ "${#WAKE_EV[@]}" -gt 0 ]; then
        echo "wake-ups per acknowledged message, 1 KiB, no pipelining (server's processes, perf):" \
            "context switches / epoll_wait+epoll_pwait / io_uring_enter / futex / membarrier"
        printf "%-4s" sess
        for s in "${SERVERS[@]}"; do printf " %26s" "$s"; done
        echo
        for sess in 1 10 50; do
            line=$(printf "%-4s" "$sess")
            for s in "${SERVERS[@]}"; do
                f="$OUT/syncs-$s-1024-$sess-no.json"
                v=n/a
                [ -f "$f" ] && v=$(jq -r '.messages_ok as $n | .counts as $c
                    | if ($n // 0) == 0 or $c["context-switches"] == null then "n/a" else
                      [$c["context-switches"], (($c.epoll_wait // 0) + ($c.epoll_pwait // 0)),
                       ($c.io_uring_enter // 0), ($c.futex // 0), ($c.membarrier // 0)]
                      | map(. / $n * 10 | round / 10 | tostring) | join("/") end' "$f")
                line+=$(printf " %26s" "$v")
            done
            echo "$line"
        done
        echo
    fi
    glommio_cells
    runtime_floor
    physical_limit
} | tee "$OUT/table.txt"

{
    echo "$(head -1 "$OUT/table.txt")"
    echo
    targets
    echo
    echo '```'
    physical_limit
    echo '```'
} >"$OUT/targets.md"
echo
cat "$OUT/targets.md"
awk -F'|' 'NF > 3 && $4 ~ /pass|FAIL|n\/a/ { n[$4]++ } END {
    printf "targets: %d pass, %d FAIL, %d n/a\n", n[" pass "], n[" FAIL "], n[" n/a "] }' "$OUT/targets.md"
