#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 120), seeded with the spec's samples.
#   cargo install cargo-fuzz      # once
#   fuzz/run.sh 300
# Fuzzing needs a nightly compiler feature (sanitizers); RUSTC_BOOTSTRAP=1 enables it on stable.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-120}
samples=../tests/spec/samples
seed() { # target, sample folders...
  local target=$1; shift
  mkdir -p "corpus/$target"
  for folder in "$@"; do cp "$samples/$folder"/* "corpus/$target/" 2>/dev/null || true; done
}
seed jjd_json jjd-json invalid
seed jqxx_xml jqxx-xml invalid
seed incident_json incident-json invalid
seed gd_json gd-json invalid
seed workorder_xml workorder-xml invalid
seed ticket_json ticket-json invalid
mkdir -p corpus/canonical_json && for f in "$samples"/*/*.canonical.json; do cp "$f" corpus/canonical_json/; done
mkdir -p logs
targets=${TARGETS:-jjd_json jqxx_xml incident_json gd_json workorder_xml ticket_json canonical_json}
for target in $targets; do
  echo "== $target (${seconds}s), log in fuzz/logs/$target.log"
  if RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=8192 >"logs/$target.log" 2>&1; then
    grep -E "^Done" "logs/$target.log" || true
  else
    echo "!! $target failed; see fuzz/logs/$target.log and fuzz/artifacts/$target/"
    tail -n 30 "logs/$target.log"
    exit 1
  fi
done
