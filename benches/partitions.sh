#!/usr/bin/env bash
# Partitions in one process, under the same load: for each N in PARTITIONS (default "1 2 4"),
# one carshare process on a fresh data directory with --partitions N takes POST /orders from
# carshare-load (CONNECTIONS keep-alive connections, closed loop, SECONDS_EACH seconds), then
# lets every subscriber catch up. Prints orders/s, p50 and p99, and the server's CPU time per
# order (user + system, from /proc, from the first order to the last subscriber's catching up:
# everything an order costs the process), each with its ratio to the first N; and from the
# server's /metrics, the units each commit batch took on average and the units refused for a
# conflict.
#
# The load generator shares the machine's cores with the server; on two cores it takes a good
# part of one. Instructions per order, which a noisy machine repeats, come from
# PARTITIONS=N benches/instructions.sh.
#
#   benches/partitions.sh
#   PROFILE=release PARTITIONS="1 2" CONNECTIONS=128 SECONDS_EACH=20 benches/partitions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
connections=${CONNECTIONS:-64}
seconds=${SECONDS_EACH:-15}
counts=${PARTITIONS:-1 2 4}
build_bins
work_dir
export CARSHARE_ADMIN_TOKEN=bench
ticks=$(getconf CLK_TCK)

# CPU time (user + system) of process $1 so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

rows=()
base_rps=
base_cpu=
for n in $counts; do
    "$carshare" serve --listen 127.0.0.1:0 --data-dir "$work/p$n" --partitions "$n" 2>"$work/p$n.log" &
    pid=$!
    wait_ready "$work/p$n.log"
    bench_product "$addr"
    before=$(cpu_ticks "$pid")
    out=$("$bin"/carshare-load --url "http://$addr" --connections "$connections" --requests 100000000 \
        --seconds "$seconds" --body '{"productId":1,"qty":1}' --wait-caught-up)
    after=$(cpu_ticks "$pid")
    metrics=$(curl -s "http://$addr/metrics")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    result=$(grep '^result' <<<"$out")
    orders=$(field status_201 "$result")
    rps=$(field rps "$result")
    [ -n "$orders" ] && [ "$orders" -gt 0 ] || { echo "no order was taken at N=$n: $out" >&2; exit 1; }
    # Units per commit batch and units refused for a conflict, over every partition.
    per_batch=$(awk '/^carshare_commit_batch_units_sum/ { s += $NF } /^carshare_commit_batch_units_count/ { c += $NF }
        END { printf "%.1f", c ? s / c : 0 }' <<<"$metrics")
    conflicts=$(awk '/^carshare_commit_conflicts_total/ { s += $NF } END { print s + 0 }' <<<"$metrics")
    cpu_us=$(awk -v t=$((after - before)) -v hz="$ticks" -v o="$orders" 'BEGIN { printf "%.1f", t / hz * 1e6 / o }')
    base_rps=${base_rps:-$rps}
    base_cpu=${base_cpu:-$cpu_us}
    rows+=("$(printf "N=%-3s %9s orders/s (%5s)   p50 %6s ms   p99 %7s ms   CPU %7s us/order (%5s)   %5s units/batch   conflicts %s   errors %s" \
        "$n" "$rps" "$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2fx", a / b }')" \
        "$(field p50_ms "$result")" "$(field p99_ms "$result")" \
        "$cpu_us" "$(awk -v a="$cpu_us" -v b="$base_cpu" 'BEGIN { printf "%.2fx", a / b }')" \
        "$per_batch" "$conflicts" \
        "$(field errors "$result")")")
done
echo "== partitions: $connections connections, $seconds s each, profile $profile, $(nproc) cores"
printf '%s\n' "${rows[@]}"
