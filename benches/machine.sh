#!/usr/bin/env bash
# The machine's speed now, apart from the gateway: run before and after a long benchmark, so
# that a figure at its end can be told from a machine that slowed under it (docs/PERFORMANCE.md,
# "The hour with the machine measured at both ends"). Three yardsticks, none of them Liandong's code:
#   cpu     one core hashing: `openssl speed` SHA-256 on 16 KiB blocks (MB/s)
#   fsync   one 8 KiB write and fdatasync, as a commit does (`pg_test_fsync`, ops/s), on this disk
#   server  the PostgreSQL server on small fresh tables: `pgbench` TPC-B-like, 16 clients, 15 s
#           (transactions/s), in a database of its own (`machine`, made and emptied here)
#   benches/machine.sh            one line: cpu MB/s, fsync ops/s, server tps
set -euo pipefail
pg="-h 127.0.0.1 -U postgres"
export PGOPTIONS="-c client_min_messages=warning"
cpu=$(openssl speed -seconds 3 -evp sha256 2>/dev/null | awk '/^sha256/ {print $NF}' | tr -d k)
cpu=$(awk -v k="$cpu" 'BEGIN {printf "%.0f", k / 1000}')
dir=$(mktemp -d)
# the newest server's tools where several are installed (a glob would run them all)
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fsync=$(cd "$dir" && "$bin/pg_test_fsync" -s 1 -f "$dir/probe" 2>/dev/null |
  awk '/one 8kB write/ {one = 1} one && !done && /^[ \t]+fdatasync/ {printf "%.0f", $2; done = 1}')
rm -rf "$dir"
psql -q $pg -d postgres -c "DROP DATABASE IF EXISTS machine" -c "CREATE DATABASE machine" >/dev/null
pgbench $pg -i -q -s 10 machine >/dev/null 2>&1
server=$(pgbench $pg -n -c 16 -j 2 -T 15 machine 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')
psql -q $pg -d postgres -c "DROP DATABASE machine" >/dev/null
echo "cpu ${cpu} MB/s, fsync ${fsync} ops/s, server ${server} tps"
