#!/usr/bin/env bash
# The throughput comparison of the README: carshare-ceiling (hyper + one reused wasm call + a
# redb group commit per request: what this machine allows for this kind of work) and carshare
# (POST /orders through the whole system) under the same load from carshare-load, back to back
# in one run, and the ratio between them. Also carshare's resident memory idle and at peak, and
# how long its subscribers took to catch up after the load. Then, as a bound, carshare's request
# path alone: the same load on a fresh server with the product, delivery and customerpage
# contexts stopped, so that of the handlers an order sets off only order's own (for Paid) runs;
# no work on the subscriber side can take carshare past that figure.
#
#   benches/ceiling.sh                      # 64 connections, up to 100,000 requests or 20 s each
#   CONNECTIONS=32 SECONDS_EACH=10 benches/ceiling.sh
#   CARSHARE=/path/to/other/carshare benches/ceiling.sh   # compare another build
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
connections=${CONNECTIONS:-64}
requests=${REQUESTS:-100000}
seconds=${SECONDS_EACH:-20}
build_bins
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Starts "$@" with its stderr in $work/$name.log and waits for its "ready on http://ADDR" line.
start() {
    local name=$1; shift
    "$@" 2>"$work/$name.log" &
    pids+=($!)
    wait_ready "$work/$name.log"
}
rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
load() { "$bin"/carshare-load --connections "$connections" --requests "$requests" --seconds "$seconds" "$@"; }

echo "== carshare-ceiling"
start ceiling "$bin"/carshare-ceiling --listen 127.0.0.1:0 --data-dir "$work/ceiling"
ceiling_out=$(load --url "http://$addr" --path /records --body '{"productId":1,"qty":1,"status":"order"}')
echo "$ceiling_out" | grep -v '^result'
ceiling=$(grep '^result' <<<"$ceiling_out")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

echo "== carshare: POST /orders through the whole system"
export CARSHARE_ADMIN_TOKEN=bench
start carshare "$carshare" serve --listen 127.0.0.1:0 --data-dir "$work/carshare" --cache-dir "$work/cache" ${CARSHARE_ARGS:-}
server=${pids[-1]}
bench_product "$addr"
sleep 1
idle=$(rss_kib "$server" VmRSS)
carshare_out=$(load --url "http://$addr" --body '{"productId":1,"qty":1,"status":"order"}' --wait-caught-up)
echo "$carshare_out" | grep -v '^result'
run=$(grep '^result' <<<"$carshare_out")
peak=$(rss_kib "$server" VmHWM)

kill "$server"; wait "$server" 2>/dev/null || true

echo "== carshare: the request path alone (product, delivery and customerpage stopped)"
start requests "$carshare" serve --listen 127.0.0.1:0 --data-dir "$work/requests" --cache-dir "$work/cache" ${CARSHARE_ARGS:-}
bench_product "$addr" product delivery customerpage
sleep 1
# --wait-caught-up waits for the running handlers (order's) only.
requests_out=$(load --url "http://$addr" --body '{"productId":1,"qty":1,"status":"order"}' --wait-caught-up)
echo "$requests_out" | grep -v '^result'
alone=$(grep '^result' <<<"$requests_out")

c_rps=$(field rps "$ceiling"); o_rps=$(field rps "$run"); a_rps=$(field rps "$alone")
echo
echo "ceiling : $c_rps req/s, p99 $(field p99_ms "$ceiling") ms"
echo "carshare: $o_rps orders/s, p99 $(field p99_ms "$run") ms, every subscriber caught up $(field caught_up_s "$run") s after; RSS $((idle / 1024)) MiB idle, $((peak / 1024)) MiB peak"
echo "ratio   : $(( 100 * o_rps / c_rps )) % of the ceiling"
echo "request path alone: $a_rps orders/s, p99 $(field p99_ms "$alone") ms, order's handler caught up $(field caught_up_s "$alone") s after; $(( 100 * a_rps / c_rps )) % of the ceiling"
