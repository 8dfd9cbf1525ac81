#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the storage-pg tests: a new cluster in a temporary
# directory owned by the `postgres` user (PostgreSQL refuses to run as root), trust
# authentication, listening on 127.0.0.1 only (port RMOX_PG_PORT, default 54329) with its
# socket in that directory. Prints the lines to eval:
#
#   eval "$(storage-pg/pg-up.sh)"      # exports RMOX_TEST_PG_URL and RMOX_TEST_PG_DIR
#   cargo test -p rmox-storage-pg
#   storage-pg/pg-up.sh stop "$RMOX_TEST_PG_DIR"
#
# .ci/run uses it the same way. Needs Debian's postgresql package (/usr/lib/postgresql/*/bin).
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg-up.sh: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)" >&2
  exit 1
fi
# As root, run the server as postgres; as anyone else, as oneself.
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
# The server must not start in a directory postgres cannot read.
cd /

if [ "${1:-}" = stop ]; then
  dir=${2:?usage: pg-up.sh stop DIR}
  [ -f "$dir/data/PG_VERSION" ] || { echo "pg-up.sh: $dir is not a pg-up.sh cluster" >&2; exit 1; }
  timeout 60 "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

port=${RMOX_PG_PORT:-54329}
dir=$(mktemp -d /tmp/rmox-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
timeout 120 "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2; exit 1; }
if ! timeout 60 "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 50 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c synchronous_commit=on -c max_connections=200" start >/dev/null; then
  cat "$dir/server.log" >&2
  exit 1
fi
echo "export RMOX_TEST_PG_URL='host=127.0.0.1 port=$port user=postgres dbname=postgres'"
echo "export RMOX_TEST_PG_DIR='$dir'"
