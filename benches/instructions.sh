#!/usr/bin/env bash
# Instructions per order, counted by valgrind's callgrind: repeatable on a noisy machine, where
# timings are not. carshare runs under callgrind twice on fresh data dirs: once taking ORDERS
# orders (and letting every subscriber catch up), once taking none; the difference divided by
# ORDERS is what one order costs the whole system (HTTP, both contexts' calls, the commit, the
# four subscribers' handlers and their commits). The callgrind profile of the first run is left
# in target/callgrind.orders.out for callgrind_annotate. Under valgrind the instance pool cannot
# reserve its address space, so instances are allocated on demand (they are reused from call to
# call either way, so a call costs the same).
#
# With STOP naming contexts, both runs stop them first (`carshare contexts stop`), so that their
# handlers do not run: STOP="product delivery customerpage" counts an order's request path alone
# (the HTTP request, order's and payment's calls, the commit, and order's own handler for Paid).
#
# With PARTITIONS=N both runs serve N partitions (the orders are spread over them).
#
# CONNECTIONS (default 8) is how many clients send the orders. With CONNECTIONS=1 every order
# commits in a batch of its own, so the count does not depend on how requests happened to
# share commits: the figure to compare code changes of the request path with.
#
# With CEILING=1 it also counts carshare-ceiling (benches/ceiling.sh) the same way, per request,
# the yardstick the order's figure compares with.
#
#   benches/instructions.sh            # 2,000 orders
#   ORDERS=500 benches/instructions.sh
#   STOP="product delivery customerpage" benches/instructions.sh
#   CEILING=1 benches/instructions.sh
#   PARTITIONS=4 benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
orders=${ORDERS:-2000}
build_bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARSHARE_ADMIN_TOKEN=bench
# A warm compile cache, so that neither run compiles components. Warmed under valgrind: the
# CPU valgrind presents may lack features the real one has (AVX-512 on some machines), and
# compiled code is cached per engine, CPU features included.
valgrind --tool=none --smc-check=all-non-file "$carshare" serve --listen 127.0.0.1:0 \
    --data-dir "$work/warm" --cache-dir "$work/cache" --instance-allocator on-demand 2>"$work/warm.log" &
warm=$!
wait_ready "$work/warm.log" 300
kill "$warm"; wait "$warm" 2>/dev/null || true

# Runs carshare under callgrind, takes $1 orders, and prints the instructions counted.
count() {
    local n=$1 out="$work/callgrind.$1.out"
    valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$out" \
        "$carshare" serve --listen 127.0.0.1:0 --data-dir "$work/data-$n" --cache-dir "$work/cache" \
        --instance-allocator on-demand --partitions "${PARTITIONS:-1}" \
        2>"$work/server-$n.log" &
    local pid=$!
    local addr
    # Under valgrind the server starts in seconds, not milliseconds.
    wait_ready "$work/server-$n.log" 120
    bench_product "$addr" ${STOP:-}
    "$bin"/carshare-load --url "http://$addr" --path /products/1 --method GET --connections 1 \
        --requests 1 --wait-caught-up >/dev/null
    if [ "$n" -gt 0 ]; then
        "$bin"/carshare-load --url "http://$addr" --connections "${CONNECTIONS:-8}" --requests "$n" --seconds 3600 \
            --body '{"productId":1,"qty":1}' --wait-caught-up | grep -E '^(requests|statuses|every)' >&2
    fi
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    [ "$n" -gt 0 ] && cp "$out" target/callgrind.orders.out
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
# Runs carshare-ceiling under callgrind, takes $1 requests, and prints the instructions counted.
count_ceiling() {
    local n=$1 out="$work/ceiling.$1.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin"/carshare-ceiling \
        --listen 127.0.0.1:0 --data-dir "$work/ceiling-$n" 2>"$work/ceiling-$n.log" &
    local pid=$!
    local addr
    wait_ready "$work/ceiling-$n.log" 120
    if [ "$n" -gt 0 ]; then
        "$bin"/carshare-load --url "http://$addr" --path /records --connections 8 --requests "$n" \
            --seconds 3600 --body '{"productId":1,"qty":1,"status":"order"}' | grep -E '^(requests|statuses)' >&2
    fi
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
with=$(count "$orders")
without=$(count 0)
echo "instructions: $with with $orders orders, $without with none"
echo "instructions per order: $(( (with - without) / orders ))"
if [ -n "${CEILING:-}" ]; then
    with=$(count_ceiling "$orders")
    without=$(count_ceiling 0)
    echo "carshare-ceiling: $with with $orders requests, $without with none"
    echo "carshare-ceiling instructions per request: $(( (with - without) / orders ))"
fi
