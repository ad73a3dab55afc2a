# Sourced by the benchmark scripts: builds what they run, and waits for a carshare server (or
# carshare-ceiling) started with its stderr in a log file.
#
# build_bins: builds carshare and the benchmark binaries with the profile PROFILE names, `dist`
# (fat LTO, as carshare is run in production) unless PROFILE=release asks for the everyday
# build, and sets $profile, $bin (where they are) and $carshare (CARSHARE, if set, instead).
build_bins() {
    profile=${PROFILE:-dist}
    cargo build --profile "$profile" -q -p carshare-host -p carshare-benches --bins
    bin=target/$profile
    carshare=${CARSHARE:-$bin/carshare}
}
#
# work_dir: makes $work, a scratch directory removed on exit, and sets $pid to empty; whatever
# server the script then records in $pid is killed on exit too.
work_dir() {
    work=$(mktemp -d)
    pid=
    trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
}
#
# bench_product ADDR [CONTEXT...]: registers the product every benchmark orders (product 1,
# with stock for any run) on the server at ADDR, then stops each CONTEXT there (`carshare
# contexts stop`), so that its handlers do not run.
bench_product() {
    local at=$1; shift
    "$bin"/carshare-load --url "http://$at" --path /products --connections 1 --requests 1 \
        --body '{"modelname":"bench","qty":1000000000}' >/dev/null
    for context in "$@"; do
        "$carshare" contexts stop "$context" --url "http://$at" >/dev/null
    done
}
#
# field NAME LINE: the value of NAME=... in carshare-load's `result` LINE.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
#
# wait_ready LOG [SECONDS]: waits up to SECONDS (default 30) for the "ready on http://ADDR"
# line in LOG and sets $addr to ADDR; if it never comes, prints LOG to stderr and fails.
wait_ready() {
    local log=$1 tries=$(( ${2:-30} * 100 ))
    addr=
    for _ in $(seq 1 "$tries"); do
        addr=$(grep -o 'ready on http://[^ ]*' "$log" 2>/dev/null | head -1 | sed 's|ready on http://||') || true
        [ -n "$addr" ] && return 0
        sleep 0.01
    done
    { echo "no server got ready; its log ($log):"; cat "$log"; } >&2
    return 1
}
