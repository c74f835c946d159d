#!/usr/bin/env bash
# End to end: native submissions to a gateway and their deliveries to the other desk, which the
# generator plays itself (`liandong bench --deliver`): submitted/s, delivered/s, the backlog each
# second, submit → destination latency and the drain (docs/PERFORMANCE.md, "Delivery").
#   cargo build --release
#   benches/deliver/run.sh [SECONDS] [CONNECTIONS] [RATE|max] [postgres]
#   NO_DESTINATION=1 benches/deliver/run.sh …   the same intake with no destination configured
#   GATEWAY_LOG_LEVEL=warn,sqlx::query=debug KEEP_LOG=FILE …   every statement and its time, kept
#   GATEWAY=path/to/liandong …   run this build as the gateway (A/B against another commit; the
#                                generator stays target/release/liandong)
# Last line: the gateway's CPU time for the run (user + system, from /proc), per transfer — a
# figure that moves less than throughput when the machine's speed does.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
connections=${2:-64}
rate=${3:-max}
store=${4:-sqlite}
site=$(mktemp -d)
. benches/site.sh
bench_site "$site"
# Ningbo 12345 (where the generator's Ningbo 110 cases go) is pushed to the generator's desk.
[ "${NO_DESTINATION:-}" ] || perl -0pi -e 's|id = "330200/12345"\n# url = "[^"]*"|id = "330200/12345"\nurl = "https://127.0.0.1:28445/desk"|' "$site/liandong.toml"
# Optional: DELIVERY_PER_DESTINATION=N, DELIVERY_BATCH=N (docs/CONFIG.md).
[ "${DELIVERY_PER_DESTINATION:-}" ] && sed -i "/^\\[delivery\\]$/a per_destination = $DELIVERY_PER_DESTINATION" "$site/liandong.toml"
[ "${DELIVERY_BATCH:-}" ] && sed -i "/^\\[delivery\\]$/a batch = $DELIVERY_BATCH" "$site/liandong.toml"
if [ "$store" = postgres ]; then
  psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS bench_deliver CASCADE; CREATE SCHEMA bench_deliver"
  export LIANDONG_STORE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dbench_deliver"
fi
RUST_LOG=${GATEWAY_LOG_LEVEL:-warn} ${GATEWAY:-target/release/liandong} serve --config "$site/liandong.toml" 2>"$site/gateway.log" &
gateway=$!
trap 'stop_processes $gateway; [ "${KEEP_LOG:-}" ] && cp "$site/gateway.log" "$KEEP_LOG"; rm -rf "$site"' EXIT
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:29090/readyz >/dev/null && break; sleep 0.2; done
rate_arg=()
[ "$rate" != max ] && rate_arg=(--rate "$rate")
deliver=(--deliver)
[ "${NO_DESTINATION:-}" ] && deliver=()
cpu() { awk '{ print $14 + $15 }' "/proc/$gateway/stat"; }
before=$(cpu)
target/release/liandong bench --config "$site/liandong.toml" "${deliver[@]}" ${OUTAGE:+--outage "$OUTAGE"} --concurrency "$connections" \
  --duration "${seconds}s" "${rate_arg[@]}" | tee "$site/report"
ticks=$(( $(cpu) - before ))
transfers=$(grep -o '^[0-9]* ok' "$site/report" | cut -d' ' -f1)
awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$transfers" \
  'BEGIN { printf "gateway CPU %.2f s: %.0f µs per transfer\n", t / hz, n ? t / hz / n * 1e6 : 0 }'
