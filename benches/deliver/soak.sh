#!/usr/bin/env bash
# Long runs with the destination played by the generator (docs/PERFORMANCE.md, "Delivery"):
# one gateway on SQLite, or two replicas on one PostgreSQL (the generator spreads its
# connections over both, so every transfer is counted once whichever replica took it and
# whichever delivered it).
#   cargo build --release
#   benches/deliver/soak.sh [SECONDS] [CONNECTIONS] [RATE|max]
#   STORE=sqlite|postgres   the store (postgres by default)
#   REPLICAS=1|2            gateways on it (2 by default; SQLite takes one)
#   OUTAGE, OUTAGE_FROM     the destination down for OUTAGE, from OUTAGE_FROM after the start
#   FLAT_OUT_AROUND=S       a flat-out S-second run before and after (the capacity at each end)
#   MACHINE=1               the machine's own speed before the gateways start and after they stop
#                           (benches/machine.sh), so that an end slower than the start can be told
#                           from a machine that slowed
#   MEMORY_LOG=FILE         the gateways' resident memory every 10 s (seconds, then KiB each)
#   JSON=FILE               the main run's report as JSON (with its minute-by-minute figures)
#   METRICS_LOG=FILE        each gateway every 5 s, from its /metrics: native submissions answered/s
#                           and their mean time, commits/s and their mean time (what the desks saw
#                           on the gateway's side while a drain ran)
#   RECEIVE_WITHIN=60s      the destination's receive_by (never confirmed here, so escalated)
#   FIGURES_MEMORY_LIMIT=N  [figures] memory_limit (0: the figures' facts never in memory)
#   PREFILL=N               PostgreSQL: first about N delivered transfers in every table (copies of
#                           a 5-s run's, benches/deliver/prefill.sql): the tables as late in an hour
#   KEEP_STORE=1            PostgreSQL: the tables as the run before left them (not emptied first), to
#                           measure a store's end state again (its counts at the end are the whole store's)
#   GATEWAY_LOG_LEVEL=info KEEP_LOG=DIR   the gateways' logs (a.log, b.log) kept in DIR
#   GATEWAY=path/to/liandong   run this build as the gateways (the generator stays target/release/liandong);
#                           a wrapper works too (GATEWAY="heaptrack -o ht /tmp/liandong-system-alloc":
#                           its children are stopped with it, benches/site.sh; MEMORY_LOG then reads the wrapper)
# A drain beside the desks' submissions (docs/PERFORMANCE.md, "The drain yields to the desks"):
#   STORE=postgres REPLICAS=2 OUTAGE=60s OUTAGE_FROM=30s JSON=drain.json METRICS_LOG=metrics.txt \
#     benches/deliver/soak.sh 200 64 1000
# The hour with an outage (docs/PERFORMANCE.md, "An hour with an outage"):
#   STORE=sqlite REPLICAS=1 OUTAGE=300s OUTAGE_FROM=600s FLAT_OUT_AROUND=20 MEMORY_LOG=rss.tsv \
#     JSON=soak.json benches/deliver/soak.sh 3600 64 1000
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
connections=${2:-64}
rate=${3:-max}
site=$(mktemp -d)
. benches/site.sh
bench_site "$site"
perl -0pi -e 's|id = "330200/12345"\n# url = "[^"]*"|id = "330200/12345"\nurl = "https://127.0.0.1:28445/desk"|' "$site/liandong.toml"
# The desk never confirms receipt: each transfer is escalated once its receive_by passes (30 min
# by canonical.md's table); RECEIVE_WITHIN=60s brings that load into a short run.
[ "${RECEIVE_WITHIN:-}" ] && perl -0pi -e "s|(url = \"https://127.0.0.1:28445/desk\")|\$1\nreceive_within = \"$RECEIVE_WITHIN\"|" "$site/liandong.toml"
[ "${FIGURES_MEMORY_LIMIT:-}" ] && sed -i "s|^memory_limit = .*|memory_limit = $FIGURES_MEMORY_LIMIT|" "$site/liandong.toml"
store=${STORE:-postgres}
replicas=${REPLICAS:-2}
urls=https://localhost:28443
ports=29090
if [ "$store" = postgres ]; then
  [ "${KEEP_STORE:-}" ] ||
    psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS bench_replicas CASCADE; CREATE SCHEMA bench_replicas" 2>/dev/null
  export LIANDONG_STORE_URL="postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dbench_replicas"
fi
machine() { [ "${MACHINE:-}" ] && echo "machine $1: $(benches/machine.sh)"; true; }
machine before
LIANDONG_REPLICA=a RUST_LOG=${GATEWAY_LOG_LEVEL:-warn} ${GATEWAY:-target/release/liandong} serve --config "$site/liandong.toml" 2>"$site/a.log" &
gateways=$!
if [ "$replicas" = 2 ]; then
  sed -e 's|^https = .*|https = "127.0.0.1:28447"|' -e 's|^admin = .*|admin = "127.0.0.1:29091"|' "$site/liandong.toml" >"$site/liandong-b.toml"
  LIANDONG_REPLICA=b RUST_LOG=${GATEWAY_LOG_LEVEL:-warn} ${GATEWAY:-target/release/liandong} serve --config "$site/liandong-b.toml" 2>"$site/b.log" &
  gateways="$gateways $!"
  urls=$urls,https://localhost:28447
  ports="$ports 29091"
fi
leave() {
  stop_processes "$@"
  [ "${MACHINE:-}" ] && { wait "$@" 2>/dev/null; machine after; }
  [ "${KEEP_LOG:-}" ] && mkdir -p "$KEEP_LOG" && cp "$site"/*.log "$KEEP_LOG"/
  rm -rf "$site"
}
trap 'leave $gateways' EXIT
for port in $ports; do
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
done
rate_arg=()
[ "$rate" != max ] && rate_arg=(--rate "$rate")
bench() { target/release/liandong bench --config "$site/liandong.toml" --deliver --url "$urls" \
  --concurrency "$connections" "$@"; }
if [ "${MEMORY_LOG:-}" ]; then
  start=$(date +%s)
  while sleep 10; do
    echo "$(( $(date +%s) - start ))" $(for g in $gateways; do ps -o rss= -p "$g"; done) >>"$MEMORY_LOG"
  done &
  sampler=$!
  trap 'leave $gateways $sampler' EXIT
fi
if [ "${METRICS_LOG:-}" ]; then
  # The change of each counter since the gateway's sample before (about 5 s, divided by the
  # time that really passed between the two reads), per gateway (its admin port).
  (
    declare -A last
    start=$(date +%s)
    while sleep 5; do
      for port in $ports; do
        now="$(date +%s.%N) $(curl -s "http://127.0.0.1:$port/metrics" | awk '
          /^liandong_request_duration_seconds_(sum|count)\{route="POST \/v1\/native/ { r[$1 ~ /_sum/] = $NF }
          /^liandong_commit_duration_seconds_(sum|count)/ { c[$1 ~ /_sum/] = $NF }
          END { print r[0] + 0, r[1] + 0, c[0] + 0, c[1] + 0 }')"
        if [ "${last[$port]:-}" ]; then
          echo "${last[$port]} $now" | awk -v t=$(( $(date +%s) - start )) -v p="$port" '{
            s = $6 - $1; n = $7 - $2; c = $9 - $4
            printf "%d s  gateway %s  submissions %.0f/s, %.1f ms  commits %.0f/s, %.1f ms\n",
              t, p, n / s, n ? ($8 - $3) / n * 1000 : 0, c / s, c ? ($10 - $5) / c * 1000 : 0 }' >>"$METRICS_LOG"
        fi
        last[$port]=$now
      done
    done
  ) &
  metrics_sampler=$!
  disown "$metrics_sampler"  # stopped by the trap, without the shell's "Terminated"
  trap 'leave $gateways ${sampler:-} $metrics_sampler' EXIT
fi
if [ "${PREFILL:-}" ] && [ "$store" = postgres ]; then
  bench --duration 5s --rate 1000 >/dev/null
  started=$(date +%s)
  psql -q -h 127.0.0.1 -U postgres test -v n="$PREFILL" -v schema=bench_replicas -f benches/deliver/prefill.sql
  psql -q -h 127.0.0.1 -U postgres test -At -c "SELECT 'prefilled in $(( $(date +%s) - started )) s: ' || \
    (SELECT COUNT(*) FROM bench_replicas.transfers) || ' transfers, ' || pg_size_pretty(SUM(pg_total_relation_size(relid))) \
    FROM pg_stat_user_tables WHERE schemaname = 'bench_replicas'"
fi
[ "${FLAT_OUT_AROUND:-}" ] && { echo "before:"; bench --duration "${FLAT_OUT_AROUND}s"; }
outage=()
[ "${OUTAGE:-}" ] && outage=(--outage "$OUTAGE" ${OUTAGE_FROM:+--outage-from "$OUTAGE_FROM"})
if [ "${JSON:-}" ]; then
  bench --duration "${seconds}s" "${rate_arg[@]}" "${outage[@]}" --json >"$JSON"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if k != "delivery"}); print({k: v for k, v in d["delivery"].items() if k not in ("backlog", "minutes")})' "$JSON"
else
  bench --duration "${seconds}s" "${rate_arg[@]}" "${outage[@]}"
fi
escalated() { for port in $ports; do curl -s "http://127.0.0.1:$port/metrics"; done |
  awk '/^liandong_escalations_total/ { n += $2 } END { print "escalated: " n + 0 }'; }
escalated
[ "${FLAT_OUT_AROUND:-}" ] && { echo "after:"; bench --duration "${FLAT_OUT_AROUND}s"; }
[ "$store" = postgres ] || exit 0
# Who delivered what: each replica's audit chain names its deliveries (`transfer.delivered`, or
# `delivery.delivered` for one that changed no state: docs/DECISIONS.md, "One audit entry per
# confirmed delivery"), and a transfer recorded delivered twice is a delivery doubled.
psql -q -h 127.0.0.1 -U postgres test -At -c "SET search_path = bench_replicas; \
  SELECT 'delivered by ' || replica || ': ' || COUNT(*) FROM audit WHERE action IN ('transfer.delivered', 'delivery.delivered') GROUP BY replica ORDER BY replica; \
  SELECT 'deliveries recorded twice: ' || COUNT(*) FROM (SELECT transfer_id FROM audit WHERE action IN ('transfer.delivered', 'delivery.delivered') GROUP BY transfer_id HAVING COUNT(*) > 1) d;"
