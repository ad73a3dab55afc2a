#!/usr/bin/env bash
# Whether carshare stays as fast with millions of rows stored as it is empty: fills a data
# directory with ORDERS real orders through `carshare dev fill` (4 events each: 2.5 million
# orders make 10 million events), then, with the same binary and the same load, times how long
# the server takes to open it and serve (restart), and measures POST /orders on an empty data
# directory and on the filled one, alternating, RUNS times each.
#
#   benches/with-data.sh                                  # fills 2,500,000 orders in a temp dir
#   FILLED=/big/disk/carshare-10m benches/with-data.sh    # keeps (and reuses) the fill there
#   ORDERS=300000 RUNS=3 SECONDS_EACH=10 benches/with-data.sh
#
# The fill takes a while (about 5,000 orders/s at first here, fewer as the data grows) and a
# few GiB of disk; the runs add orders to the filled directory, which changes nothing that is
# measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
orders=${ORDERS:-2500000}
runs=${RUNS:-2}
seconds=${SECONDS_EACH:-10}
connections=${CONNECTIONS:-64}
build_bins
work_dir
filled=${FILLED:-$work/filled}
export CARSHARE_ADMIN_TOKEN=bench

if [ ! -e "$filled/carshare.redb" ]; then
    echo "== filling $filled with $orders orders"
    "$carshare" dev fill --data-dir "$filled" --cache-dir "$work/cache" --orders "$orders" 2>&1 | grep -v INFO | tail -1
fi
echo "filled: $(du -sh "$filled/carshare.redb" | cut -f1) on disk"

# Starts the server on $1, prints how long it took to say it is ready, and leaves
# its address in $addr.
start() {
    local log="$work/server.log" t0
    t0=$(date +%s%N)
    "$carshare" serve --listen 127.0.0.1:0 --data-dir "$1" --cache-dir "$work/cache" 2>"$log" &
    pid=$!
    wait_ready "$log"
    echo "ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# The product every order names: product 1, made by the fill, and made here when empty.
"$carshare" dev fill --data-dir "$work/empty" --cache-dir "$work/cache" --orders 1 2>/dev/null | tail -1

for run in $(seq 1 "$runs"); do
    for what in empty filled; do
        dir=$work/empty; [ "$what" = filled ] && dir=$filled
        echo "== run $run, $what"
        start "$dir"
        # Every subscriber has caught up by then, so a cursor is the log's length.
        curl -s "http://$addr/metrics" | grep '^carshare_subscriber_cursor{subscriber="order"}' \
            | sed 's/.* /events in the log: /'
        out=$("$bin"/carshare-load --url "http://$addr" --connections "$connections" \
            --requests 100000000 --seconds "$seconds" --body '{"productId":1,"qty":1}' --wait-caught-up)
        grep -E '^(requests|latency|every)' <<<"$out"
        echo "result $what $(grep '^result' <<<"$out")"
        stop
    done
done
