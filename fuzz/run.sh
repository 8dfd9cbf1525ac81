#!/usr/bin/env bash
# Runs the fuzz targets with cargo-fuzz (libFuzzer) for a time budget each and prints one
# line per target: executions, coverage (libFuzzer's final `cov:` edges and `ft:`
# features), corpus size, and crashes (artifact paths).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Exit status: 0 when no target found anything, 1 when a crash/timeout/OOM artifact was
# written, 2 on a build or setup error.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only `-Z`
# flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 (set below) lets stable accept
# them, which is fine for a test-only build like this one.
#
# Environment:
#   FUZZ_SANITIZER  none (default: the code is safe Rust, panics are caught anyway, and
#                   runs are ~2x faster) or address.
#   FUZZ_WORK       where corpora, logs and artifacts go (default fuzz/target/fuzz-run;
#                   corpora are kept between runs and grow).
#   VECTORS         the external vectors (default /work/shared/vectors, or
#                   ../../shared/vectors next to the checkout); messages, DKIM, SPF, DMARC
#                   and TLS reports and SMTP smuggling cases are copied from there into
#                   per-target seed dirs at run time (not committed).
#   FUZZ_JOBS       parallel cargo build jobs (default 1: the machine is shared).
#
# Seeds: fuzz/seeds/<target>/ (small, written for this project, committed) plus the
# copied vectors. libFuzzer writes new inputs only to the first corpus dir (the work
# corpus), never to the seed dirs.
set -u
cd "$(dirname "$0")" || exit 2
FUZZ_DIR=$(pwd)

SECS=${1:-60}
[ $# -gt 0 ] && shift
case "$SECS" in '' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

export RUSTC_BOOTSTRAP=1
SAN=${FUZZ_SANITIZER:-none}
WORK=${FUZZ_WORK:-$FUZZ_DIR/target/fuzz-run}
JOBS=${FUZZ_JOBS:-1}
if [ -z "${VECTORS:-}" ]; then
    for v in /work/shared/vectors "$FUZZ_DIR/../../shared/vectors"; do
        [ -d "$v" ] && VECTORS=$v && break
    done
fi
VECTORS=${VECTORS:-}
FLAGS=(-O -a -s "$SAN")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

# The commit the targets are built from (with local changes, if any).
COMMIT=$(git -C "$FUZZ_DIR" describe --always --dirty 2>/dev/null || echo '?')
mkdir -p "$WORK"
echo "building ${#TARGETS[@]} targets (sanitizer $SAN)..." >&2
for t in "${TARGETS[@]}"; do
    if ! CARGO_BUILD_JOBS=$JOBS cargo fuzz build "${FLAGS[@]}" "$t" >"$WORK/build-$t.log" 2>&1; then
        echo "build of $t failed, see $WORK/build-$t.log" >&2
        tail -20 "$WORK/build-$t.log" >&2
        exit 2
    fi
done

# Copies files into a seed dir, converting LF line endings to CRLF when asked (vectors
# stored with LF; the SMTP-facing parsers see CRLF).
copy() { # dest crlf files...
    local dest=$1 crlf=$2
    shift 2
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        local name
        name=$(printf '%s' "$f" | tr '/' '_')
        if [ "$crlf" = crlf ]; then
            sed 's/\r$//; s/$/\r/' "$f" >"$dest/$name"
        else
            cp "$f" "$dest/$name"
        fi
    done
}

# Fills $WORK/vectors/<target> from the external vectors.
vectors() { # target
    local t=$1 dest=$WORK/vectors/$1 v=$VECTORS
    rm -rf "$dest"
    mkdir -p "$dest"
    [ -n "$v" ] || return 0
    case "$t" in
    message_structure)
        copy "$dest" raw "$v"/mail-parser/resources/eml/*/*.eml
        copy "$dest" crlf "$v"/python-email-testdata/msg_*.txt "$v"/dkim-dkimpy/data/*.msg \
            "$v"/mox-testdata/testdata/message/*.eml "$v"/mox-testdata/testdata/junk/*.eml
        ;;
    dkim_signature)
        copy "$dest" crlf "$v"/dkim-dkimpy/data/*.msg
        copy "$dest" raw "$v"/dkim-dkimpy/data/*.txt "$v"/dkim-dkimpy/data/*.dns
        ;;
    spf_record)
        # Every quoted SPF record of the openspf test suites, one file each.
        cat "$v"/spf-pyspf/rfc*-tests.yml 2>/dev/null | grep -o 'v=spf1[^"]*' | sort -u |
            awk -v d="$dest" '{ f = sprintf("%s/spf%04d", d, NR); printf "%s", $0 > f; close(f) }'
        ;;
    dmarc_report) copy "$dest" raw "$v"/mox-testdata/testdata/dmarc-reports/*.eml ;;
    tls_report) copy "$dest" raw "$v"/mox-testdata/testdata/tlsreports/*.eml ;;
    data_reader | server_session)
        # SMTP smuggling end-of-data sequences and mox's DataReader cases, behind the
        # target's one-byte mode/chunk prefix.
        python3 - "$v/smtp-smuggling/smuggling_vectors.json" "$dest" "$t" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
dest, target = sys.argv[2], sys.argv[3]
cases = [c["wire_input"] for c in d.get("mox_DataReader_cases", [])]
cases += ["x" + s + "y\r\n.\r\n" for s in d.get("inbound_fake_eod_sequences_sec_consult", [])]
for i, c in enumerate(cases):
    body = c.encode("utf-8", "surrogateescape")
    if target == "server_session":
        body = (b"EHLO a.example\r\nMAIL FROM:<a@a.example>\r\nRCPT TO:<b@mox.example>\r\n"
                b"DATA\r\n" + body + b"QUIT\r\n")
    open(f"{dest}/smug{i:03d}", "wb").write(bytes([i % 32 + 1]) + body)
PY
        ;;
    esac
    return 0
}

# The config example of the root package, as a config_parse seed.
config_seed() {
    local dest=$WORK/vectors/config_parse
    awk '/^pub const EXAMPLE: &str = r#"/ { on = 1; sub(/^.*r#"/, ""); }
         on && /^"#;/ { exit }
         on { print }' "$FUZZ_DIR/../src/config.rs" >"$dest/example.toml"
}

status=0
rows=()
for t in "${TARGETS[@]}"; do
    vectors "$t"
    [ "$t" = config_parse ] && config_seed
    corpus=$WORK/corpus/$t
    artifacts=$WORK/artifacts/$t
    mkdir -p "$corpus" "$artifacts" "seeds/$t"
    log=$WORK/$t.log
    echo "fuzzing $t for ${SECS}s..." >&2
    cargo fuzz run "${FLAGS[@]}" "$t" "$corpus" "seeds/$t" "$WORK/vectors/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 -artifact_prefix="$artifacts/" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    last=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1)
    cov=$(printf '%s' "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft=$(printf '%s' "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    corp=$(find "$corpus" -type f | wc -l)
    found=$(grep -o 'Test unit written to [^ ]*' "$log" | sed 's/Test unit written to //' | tr '\n' ' ')
    if [ -n "$found" ]; then
        status=1
    elif [ "$rc" -ne 0 ]; then
        found="exit $rc without artifact, see $log"
        status=1
    fi
    rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$t" "${execs:-?}" "${cov:-?}" \
        "${ft:-?}" "$corp" "${found:-none}")")
    printf '%s\n' "${rows[-1]}" >&2
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), budget: ${SECS}s per target, sanitizer: $SAN," \
    "built from: $COMMIT"
echo
echo "| target | executions | cov | ft | corpus | crashes |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
