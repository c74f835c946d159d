#!/usr/bin/env bash
# Liandong against nginx on this machine, the same generator for both (docs/PERFORMANCE.md).
#   apt-get install nginx; cargo build --release; benches/nginx/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
connections=${2:-64}
site=$(mktemp -d)
target/release/liandong init "$site" --listen 127.0.0.1:28443 --admin 127.0.0.1:29090 >/dev/null
# One generator identity at full speed: lift its quotas (the limiter still runs every check).
cat >> "$site/liandong.toml" <<'LIMITS'

[limits.endpoint]
submit = { per_second = 1000000, burst = 1000000 }
immediate = { per_second = 1000000, burst = 1000000 }
status = { per_second = 1000000, burst = 1000000 }
read = { per_second = 1000000, burst = 1000000 }
LIMITS
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
