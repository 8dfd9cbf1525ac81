# compare.sh's helpers that read results and judge them (sourced; tested by
# benches/tests/compare_lib.rs on made-up results). They read $OUT (the results directory)
# and $ROUNDS (timed rounds per cell).

# A value from a JSON result, empty when the file or the value is missing.
val() { # file jq-path
    [ -s "$1" ] && jq -r "$2 // empty" "$1" 2>/dev/null || true
}
# A cell's rounds for one server: "msg/s file" lines, slowest first.
rounds_of() { # server size sessions pipe
    local r v
    for ((r = 1; r <= ROUNDS; r++)); do
        v=$(val "$OUT/send-$1-$2-$3-$4-r$r.json" .messages_per_second)
        # (if, not &&: a missing last round must not fail the loop under pipefail)
        if [ -n "$v" ]; then echo "$v $OUT/send-$1-$2-$3-$4-r$r.json"; fi
    done | sort -g
}
# Keeps a server's median round of a cell as the cell's result (the lower middle one for an
# even count).
keep_median() { # server size sessions pipe
    local f
    f=$(rounds_of "$@" | awk '{ a[NR] = $2 } END { if (NR) print a[int((NR + 1) / 2)] }')
    [ -n "$f" ] && cp "$f" "$OUT/send-$1-$2-$3-$4.json"
    return 0
}
# A cell's slowest and fastest round for a server: "min max" (msg/s), empty without rounds.
spread() { # server size sessions pipe
    rounds_of "$@" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.0f %.0f", lo, hi }'
}
# The servers in the order they run in round ROUND (1 up): rotated by one place per round,
# so that each runs first once every len(servers) rounds.
rotated() { # round server...
    local r=$1 k
    shift
    local a=("$@")
    for ((k = 0; k < ${#a[@]}; k++)); do
        echo "${a[$(((k + r - 1) % ${#a[@]}))]}"
    done
}
rate() { val "$OUT/send-$1-$2-$3-$4.json" .messages_per_second; } # server size sessions pipe
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.2f", a / b }'; }
judge() { # measured op limit: pass, FAIL or n/a (nothing measured)
    if [ -z "$1" ]; then echo n/a; return; fi
    awk -v m="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = op == ">=" ? m + 0 >= l + 0 : op == "<=" ? m + 0 <= l + 0 : m + 0 < l + 0
        print ok ? "pass" : "FAIL" }'
}
