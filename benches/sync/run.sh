#!/usr/bin/env bash
# Follower catch-up from zero over loopback mutual TLS (docs/PERFORMANCE.md, "Shared data").
#   cargo build --release; benches/sync/run.sh [RECORDS]
# Makes RECORDS directory records (default 1,000,000), imports them into a fresh SQLite site,
# starts the gateway and mirrors the dataset three times with `liandong datasets follow`.
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-1000000}
site=$(mktemp -d)
trap 'kill "${gateway:-0}" 2>/dev/null || true; rm -rf "$site"' EXIT
. benches/site.sh
bench_site "$site/site"
# Reading flat out as one identity: lift the operator's read quota too.
cat >> "$site/site/liandong.toml" <<'LIMITS'

[limits.operator]
submit = { per_second = 1, burst = 1 }
immediate = { per_second = 1, burst = 1 }
status = { per_second = 1, burst = 1 }
read = { per_second = 1000000, burst = 1000000 }
LIMITS
python3 benches/sync/directory.py "$records" "$site/directory.jsonl"
echo "import (one transaction, read a chunk at a time):"
/usr/bin/time -f "  %e s, %M KB maximum resident" \
  target/release/liandong datasets import --config "$site/site/liandong.toml" directory "$site/directory.jsonl"
started=$(date +%s.%N)
RUST_LOG=warn target/release/liandong serve --config "$site/site/liandong.toml" 2>"$site/gateway.log" &
gateway=$!
until curl -sf -o /dev/null "http://127.0.0.1:29090/readyz"; do sleep 0.1; done
python3 -c "import sys; print(f'ready after {float(sys.argv[2]) - float(sys.argv[1]):.2f} s, the directory loaded')" "$started" "$(date +%s.%N)"
echo "catch-up from zero (snapshot, then changes), three runs:"
for run in 1 2 3; do
  target/release/liandong datasets follow directory --config "$site/site/liandong.toml" --as operator-ops --page 5000
done
