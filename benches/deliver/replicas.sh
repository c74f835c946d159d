#!/usr/bin/env bash
# Two replicas on one PostgreSQL, the generator's connections spread over both (docs/PERFORMANCE.md,
# "Two replicas"); every option of soak.sh applies.
#   benches/deliver/replicas.sh [SECONDS] [CONNECTIONS] [RATE|max]
STORE=postgres REPLICAS=2 exec "$(dirname "$0")/soak.sh" "$@"
