#!/usr/bin/env bash
# An import without a maintenance window (docs/PERFORMANCE.md, "Shared data at scale"): the
# gateway serves on SQLite while a desk submits at a fixed rate, and `liandong datasets import`
# writes RECORDS directory records into the same store from its own process. Prints the
# import's time and memory, then the submissions' report (errors, p50/p99/max) over the whole
# run — the import included.
#   cargo build --release
#   benches/sync/import-live.sh [RECORDS] [RATE]          # default 1000000 records, 100/s
#   ORDER=shuffled …             the file's records in a random order (default: key order)
#   GATEWAY=path/to/liandong …   this build as the gateway and the importer (A/B); the
#                                generator stays target/release/liandong
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-1000000}
rate=${2:-100}
site=$(mktemp -d)
trap 'kill "${gateway:-0}" 2>/dev/null || true; rm -rf "$site"' EXIT
. benches/site.sh
bench_site "$site/site"
python3 benches/sync/directory.py "$records" "$site/directory.jsonl" "${ORDER:-sorted}"
liandong=${GATEWAY:-target/release/liandong}
RUST_LOG=warn $liandong serve --config "$site/site/liandong.toml" 2>"$site/gateway.log" &
gateway=$!
until curl -sf -o /dev/null "http://127.0.0.1:29090/readyz"; do sleep 0.1; done
# Long enough for the import and a few seconds on either side of it.
seconds=$(( records / 20000 + 30 ))
target/release/liandong bench --config "$site/site/liandong.toml" --rate "$rate" --concurrency 16 \
  --duration "${seconds}s" >"$site/report" &
submitting=$!
sleep 5
echo "import of $records records while a desk submits $rate/s:"
/usr/bin/time -f "  %e s, %M KB maximum resident" \
  $liandong datasets import --config "$site/site/liandong.toml" directory "$site/directory.jsonl"
wait $submitting
echo "submissions over ${seconds} s, the import included:"
cat "$site/report"
