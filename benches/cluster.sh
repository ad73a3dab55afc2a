#!/usr/bin/env bash
# The cluster's benchmark, on this machine: POST /orders from carshare-load against one
# carshare process on its own (the reference), then against clusters of 1, 2 and 3 hosts
# started by scripts/cluster (three NATS servers, R3, sync_interval: always), the load's
# connections spread over the hosts. Prints orders/s, p50 and p99 for each, and the latency
# the log append adds to one commit (one connection, single process against a 1-host cluster).
#
# Every process shares this machine's cores: more hosts here measure the mechanism (any host
# takes orders, one writer commits them), not scaling, which needs machines of their own.
#
#   benches/cluster.sh
#   CONNECTIONS=64 SECONDS_EACH=20 benches/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
connections=${CONNECTIONS:-32}
seconds=${SECONDS_EACH:-15}
build_bins
# The clusters' hosts run the same build.
export PROFILE=$profile
work=$(mktemp -d)
export CARSHARE_ADMIN_TOKEN=bench
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

load() { "$bin"/carshare-load --requests 10000000 --seconds "$seconds" "$@" | grep '^result'; }
# Registers a product with stock for every run on $1; prints its id.
product() {
    python3 - "$1" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/products", method="POST",
    data=json.dumps({"modelname": "bench", "qty": 1000000000}).encode(),
    headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req))["id"])
PY
}
summary() {
    printf "%-26s %8s orders/s   p50 %7s ms   p99 %8s ms   errors %s, non-201 %s\n" "$1" \
        "$(field rps "$2")" "$(field p50_ms "$2")" "$(field p99_ms "$2")" "$(field errors "$2")" \
        "$(tr ' ' '\n' <<<"$2" | grep '^status_' | grep -v '^status_201=' | tr '\n' ' ')"
}

echo "== one process, no cluster"
"$bin"/carshare serve --listen 127.0.0.1:0 --data-dir "$work/single" 2>"$work/single.log" &
pids+=($!)
wait_ready "$work/single.log"
url=http://$addr
id=$(product "$url")
body="{\"productId\":$id,\"qty\":1}"
single_one=$(load --url "$url" --connections 1 --body "$body")
single=$(load --url "$url" --connections "$connections" --body "$body")
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
results=("$(summary "one process, 1 conn" "$single_one")" "$(summary "one process" "$single")")

for hosts in 1 2 3; do
    echo "== a cluster of $hosts host(s)"
    HOSTS=$hosts WORK="$work/cluster$hosts" scripts/cluster >"$work/cluster$hosts.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 1200); do
        [ "$(grep -c '^host h' "$work/cluster$hosts.out")" -ge "$hosts" ] && break
        grep -q 'did not start' "$work/cluster$hosts.out" && break
        sleep 0.05
    done
    urls=$(grep -o '^host h[0-9]*: http://[^ ]*' "$work/cluster$hosts.out" | sed 's/.*: //' | paste -sd,)
    [ -n "$urls" ] || { cat "$work/cluster$hosts.out"; exit 1; }
    id=$(product "${urls%%,*}")
    sleep 1 # every host applies the product before orders for it arrive
    body="{\"productId\":$id,\"qty\":1}"
    if [ "$hosts" = 1 ]; then
        one=$(load --url "$urls" --connections 1 --body "$body")
        results+=("$(summary "cluster of 1, 1 conn" "$one")")
    fi
    out=$(load --url "$urls" --connections "$connections" --body "$body")
    results+=("$(summary "cluster of $hosts" "$out")")
    kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

echo
echo "POST /orders, closed loop, $connections connections over the hosts (1 conn where said), ${seconds} s each:"
printf '%s\n' "${results[@]}"
added=$(awk -v a="$(field p50_ms "$one")" -v b="$(field p50_ms "$single_one")" 'BEGIN { printf "%.2f", a - b }')
echo "the log append adds ${added} ms to one commit (p50 with one connection, cluster of 1 against one process)"
