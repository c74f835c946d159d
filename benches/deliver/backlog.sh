#!/usr/bin/env bash
# Start-up with a large backlog (docs/PERFORMANCE.md, "Start-up with a backlog"): N transfers
# waiting for a destination that was down, then the gateway restarted with the destination (nginx,
# mutual TLS, answering the gd-json success receipt) back. Prints how long until /readyz answers,
# until a new submission is answered, until the first delivery arrives, and the deliveries per
# second over the next seconds.
#   apt-get install nginx sqlite3; cargo build --release
#   benches/deliver/backlog.sh [N] [SECONDS]        # e.g. 1000000 10
#   GATEWAY_LOG_LEVEL=warn,sqlx::query=debug KEEP_LOG=FILE …   every statement and its time, kept
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
seconds=${2:-10}
site=$(mktemp -d)
. benches/site.sh
bench_site "$site"
# Ningbo 12345 (where the generator's Ningbo 110 cases go) is pushed to nginx.
perl -0pi -e 's|id = "330200/12345"\n# url = "[^"]*"|id = "330200/12345"\nurl = "https://127.0.0.1:28446/desk"|' "$site/liandong.toml"
gateway=
cleanup() {
  [ "$gateway" ] && kill "$gateway" 2>/dev/null
  [ -f "$site/nginx.pid" ] && nginx -c "$site/nginx.conf" -s stop 2>/dev/null
  [ "${KEEP_LOG:-}" ] && cp "$site/gateway.log" "$KEEP_LOG"
  rm -rf "$site"
}
trap cleanup EXIT
ready() { curl -sf http://127.0.0.1:29090/readyz >/dev/null; }

# 1. Real transfers from the generator while the destination is down: their rows are the templates.
RUST_LOG=warn target/release/liandong serve --config "$site/liandong.toml" 2>"$site/gateway.log" &
gateway=$!
for _ in $(seq 1 100); do ready && break; sleep 0.1; done
target/release/liandong bench --config "$site/liandong.toml" --concurrency 4 --duration 2s >/dev/null
kill "$gateway"; wait "$gateway" 2>/dev/null || true; gateway=

# 2. N copies of one of them in the store, each with its own transfer id and sender reference,
#    its delivery due now.
template=$(sqlite3 "$site/liandong.db" "SELECT transfer_id FROM transfers ORDER BY transfer_id LIMIT 1")
started=$(date +%s.%N)
sqlite3 "$site/liandong.db" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
CREATE TEMP TABLE ids AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $n)
  SELECT i, substr('$template', 1, 10) || printf('%016d', i) AS id FROM n;
INSERT INTO transfers (transfer_id, sender, sender_ref, destination, state, overdue, requested_at, receive_by,
                       resolve_by, escalations, document, created_at, updated_at)
  SELECT ids.id, t.sender, t.sender_ref || '-' || ids.i, t.destination, t.state, t.overdue, t.requested_at, t.receive_by,
         t.resolve_by, t.escalations, replace(t.document, t.transfer_id, ids.id), t.created_at, t.updated_at
  FROM ids, transfers t WHERE t.transfer_id = '$template';
INSERT INTO outbox (destination, transfer_id, kind, payload, next_attempt_at, created_at)
  SELECT o.destination, ids.id, o.kind, replace(o.payload, o.transfer_id, ids.id), o.created_at * 1000, o.created_at
  FROM ids, outbox o WHERE o.transfer_id = '$template';
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL

waiting=$(sqlite3 "$site/liandong.db" "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
printf 'backlog: %s deliveries waiting (copied in %.0f s); store %s\n' "$waiting" \
  "$(echo "$(date +%s.%N) - $started" | bc)" "$(du -h "$site/liandong.db" | cut -f1)"

# 3. The destination back (nginx), the gateway started again.
sed "s#SITE#$site#g" benches/deliver/nginx-desk.conf > "$site/nginx.conf"
mkdir -p "$site/nginx-body"
nginx -c "$site/nginx.conf"
t0=$(date +%s.%N)
RUST_LOG=${GATEWAY_LOG_LEVEL:-warn} target/release/liandong serve --config "$site/liandong.toml" 2>>"$site/gateway.log" &
gateway=$!
until ready; do sleep 0.01; done
t_ready=$(date +%s.%N)
curl -sf --cacert "$site/ca.pem" --cert "$site/identities/330200-110.pem" --key "$site/identities/330200-110-key.pem" \
  --data-binary @tests/spec/samples/jjd-json/transfer-ningbo-township.json \
  https://localhost:28443/v1/native/330200/110/transfers >"$site/answer.json"
t_submitted=$(date +%s.%N)
until [ -s "$site/deliveries.log" ]; do sleep 0.01; done
t_first=$(date +%s.%N)
printf 'from start: /readyz %.2f s, a new submission answered %.2f s (%s), first delivery %.2f s\n' \
  "$(echo "$t_ready - $t0" | bc)" "$(echo "$t_submitted - $t0" | bc)" "$(cat "$site/answer.json")" "$(echo "$t_first - $t0" | bc)"
before=$(wc -l <"$site/deliveries.log")
for s in $(seq 1 "$seconds"); do
  sleep 1
  now=$(wc -l <"$site/deliveries.log")
  printf '%ss:%s/s ' "$s" "$((now - before))"
  before=$now
done
echo
