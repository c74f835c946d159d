#!/usr/bin/env bash
# Two replicas on one PostgreSQL (docs/PERFORMANCE.md, "Two replicas"): gateways A and B share a
# schema, the generator spreads its connections over both and plays the destination, so every
# transfer is counted once whichever replica took it and whichever delivered it.
#   cargo build --release
#   benches/deliver/replicas.sh [SECONDS] [CONNECTIONS] [RATE|max]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
connections=${2:-64}
rate=${3:-max}
site=$(mktemp -d)
. benches/site.sh
bench_site "$site"
perl -0pi -e 's|id = "330200/12345"\n# url = "[^"]*"|id = "330200/12345"\nurl = "https://127.0.0.1:28445/desk"|' "$site/liandong.toml"
sed -e 's|^https = .*|https = "127.0.0.1:28447"|' -e 's|^admin = .*|admin = "127.0.0.1:29091"|' "$site/liandong.toml" >"$site/liandong-b.toml"
psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS bench_replicas CASCADE; CREATE SCHEMA bench_replicas"
export LIANDONG_STORE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dbench_replicas"
LIANDONG_REPLICA=a RUST_LOG=warn target/release/liandong serve --config "$site/liandong.toml" 2>"$site/a.log" &
a=$!
LIANDONG_REPLICA=b RUST_LOG=warn target/release/liandong serve --config "$site/liandong-b.toml" 2>"$site/b.log" &
b=$!
trap 'kill $a $b 2>/dev/null; rm -rf "$site"' EXIT
for port in 29090 29091; do
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
done
rate_arg=()
[ "$rate" != max ] && rate_arg=(--rate "$rate")
target/release/liandong bench --config "$site/liandong.toml" --deliver --url https://localhost:28443,https://localhost:28447 \
  --concurrency "$connections" --duration "${seconds}s" "${rate_arg[@]}"
# Who delivered what: each replica's audit chain names its deliveries.
psql -q -h 127.0.0.1 -U postgres test -At -c "SET search_path = bench_replicas; \
  SELECT 'delivered by ' || replica || ': ' || COUNT(*) FROM audit WHERE action = 'delivery.delivered' GROUP BY replica ORDER BY replica; \
  SELECT 'deliveries recorded twice: ' || COUNT(*) FROM (SELECT transfer_id FROM audit WHERE action = 'delivery.delivered' GROUP BY transfer_id HAVING COUNT(*) > 1) d;"
