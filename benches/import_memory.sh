#!/usr/bin/env bash
# Peak memory of `rmox import mbox` against the number of messages and storage_cache_mb:
# shows that memory is bounded by the database page cache, not by the data.
# usage: benches/import_memory.sh [RMOX_BINARY]   (default target/release/rmox)
set -euo pipefail
BIN=${1:-target/release/rmox}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
gen() { # N FILE: N small messages (about 450 octets each)
  python3 - "$1" "$2" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write(f"From s{i % 977}@example.org Thu Dec  3 06:00:00 2026\n")
        f.write(f"From: s{i % 977}@example.org\nTo: mjl@mox.example\nSubject: message {i}\nMessage-Id: <m{i}@example.org>\n\n")
        f.write(("line of text %d for the body of the message\n" % i) * 6 + "\n")
PY
}
printf '| messages | storage_cache_mb | peak RSS (MiB) | seconds |\n| --- | --- | --- | --- |\n'
for n in 100000 300000; do
  gen "$n" "$W/m.mbox"
  for cache in 16 64 1024; do
    d="$W/d"; rm -rf "$d"; mkdir -p "$d"
    printf 'hostname = "mail.mox.example"\ndata_dir = "data"\nstorage_cache_mb = %s\n[domain."mox.example"]\n' "$cache" > "$d/rmox.toml"
    "$BIN" account add --config "$d/rmox.toml" mjl mjl@mox.example > /dev/null
    /usr/bin/time -f '%M %e' -o "$W/t" "$BIN" import mbox mjl "$W/m.mbox" --config "$d/rmox.toml" > /dev/null 2>&1
    read -r kb secs < "$W/t"
    printf '| %s | %s | %s | %s |\n' "$n" "$cache" "$((kb / 1024))" "$secs"
  done
done
