# Sourced by the benchmark scripts: `bench_site DIR` writes a site with `liandong init` on the
# benchmark ports (HTTPS 28443, admin 29090) and lifts the endpoints' quotas, so one generator
# identity runs at full speed (the limiter still checks every call).
bench_site() {
  target/release/liandong init "$1" --listen 127.0.0.1:28443 --admin 127.0.0.1:29090 >/dev/null
  cat >> "$1/liandong.toml" <<'LIMITS'

[limits.endpoint]
submit = { per_second = 1000000, burst = 1000000 }
immediate = { per_second = 1000000, burst = 1000000 }
status = { per_second = 1000000, burst = 1000000 }
read = { per_second = 1000000, burst = 1000000 }
LIMITS
}

# `stop_processes PID…` stops these processes and their children: a gateway run under a
# wrapper (GATEWAY="heaptrack … liandong") is the wrapper's child, and left running it would hold
# the ports and the schema of the next run.
stop_processes() {
  for p in "$@"; do pkill -P "$p" 2>/dev/null || true; done
  kill "$@" 2>/dev/null || true
}
