#!/usr/bin/env bash
# Latency under a constant arrival rate, the README's open-loop figures: for each rate, a fresh
# carshare server (its own data directory) takes POST /orders from carshare-load in open loop
# (`--rate`: the requests fall due at that rate whatever the server does, and each latency runs
# from when its request was due, so queueing behind a slow server counts). Prints p50, p99 and
# max per rate, whether every request was served, and how long the subscribers took to catch up.
#
# With STOP naming contexts, each server stops them before the load (`carshare contexts stop`),
# as benches/instructions.sh does: STOP="product delivery customerpage" times the request path
# alone.
#
#   benches/open-loop.sh                       # 1,000, 2,000, 3,000 and 5,000 orders/s, 10 s each
#   RATES="5000 6000" SECONDS_EACH=20 benches/open-loop.sh
#   STOP="product delivery customerpage" RATES=5000 benches/open-loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
rates=${RATES:-1000 2000 3000 5000}
connections=${CONNECTIONS:-64}
seconds=${SECONDS_EACH:-10}
build_bins
work_dir
export CARSHARE_ADMIN_TOKEN=bench

printf "%-9s %9s %9s %9s %9s  %s\n" "rate/s" "served/s" "p50 ms" "p99 ms" "max ms" "not served, subscribers"
for rate in $rates; do
    "$carshare" serve --listen 127.0.0.1:0 --data-dir "$work/data-$rate" --cache-dir "$work/cache" \
        2>"$work/server-$rate.log" &
    pid=$!
    # The first start compiles the components (into the shared cache): give it time.
    wait_ready "$work/server-$rate.log" 120
    bench_product "$addr" ${STOP:-}
    out=$("$bin"/carshare-load --url "http://$addr" --rate "$rate" --connections "$connections" \
        --seconds "$seconds" --requests $((rate * seconds)) --body '{"productId":1,"qty":1}' \
        --wait-caught-up | grep '^result')
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    served=$(field status_201 "$out")
    printf "%-9s %9s %9s %9s %9s  %s\n" "$rate" "$(field rps "$out")" "$(field p50_ms "$out")" \
        "$(field p99_ms "$out")" "$(field max_ms "$out")" \
        "$((rate * seconds - ${served:-0})), caught up $(field caught_up_s "$out") s after"
done
