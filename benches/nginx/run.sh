#!/usr/bin/env bash
# Liandong against nginx on this machine, the same generator for both (docs/PERFORMANCE.md).
#   apt-get install nginx; cargo build --release; benches/nginx/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
connections=${2:-64}
site=$(mktemp -d)
. benches/site.sh
bench_site "$site"
sed "s#SITE#$site#g" benches/nginx/nginx.conf > "$site/nginx.conf"
mkdir -p "$site/nginx-body" "$site/nginx-proxy"
nginx -c "$site/nginx.conf"
RUST_LOG=warn target/release/liandong serve --config "$site/liandong.toml" 2>"$site/gateway.log" &
gateway=$!
sleep 2
echo "nginx (mTLS + limit_req + proxy_pass to a trivial upstream):"
target/release/liandong bench --config "$site/liandong.toml" --url https://localhost:28444 --concurrency "$connections" --duration "${seconds}s"
echo "liandong (mTLS + policy + rate check + translation + durable SQLite commit):"
target/release/liandong bench --config "$site/liandong.toml" --concurrency "$connections" --duration "${seconds}s"
kill "$gateway"; nginx -c "$site/nginx.conf" -s stop
rm -rf "$site"
