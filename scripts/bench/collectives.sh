#!/usr/bin/env bash
# Allreduce latency between worker processes: RANKS processes (default 2), each pinned to its
# own core when there are enough, meet in one group; rank 0 prints p50/p99 per payload size
# (4 KiB … 4 MiB) beside a one-core memcpy of the same bytes. First in shared memory (one host),
# then over TCP between pretend hosts (network namespaces joined by veth, scripts/netns_hosts.py;
# needs root; NETNS=0 leaves it out), plain and then sealed with fresh CURVE keys (`router keygen`:
# what --curve-keys costs).
#
#   scripts/bench/collectives.sh            (environment: RANKS, SIZES in KiB, ITERATIONS, NETNS)
set -euo pipefail
cd "$(dirname "$0")/../.."
RANKS="${RANKS:-2}"
NETNS="${NETNS:-1}"
SIZES="${SIZES:-4,16,64,256,1024,4096}"
ITERATIONS="${ITERATIONS:-2000}"
swift build -c release --product worker >&2
swift build -c release --product router >&2
WORKER="$(swift build -c release --show-bin-path)/worker"
KEYS="$(mktemp -d)/keys"
"$(swift build -c release --show-bin-path)/router" keygen "$KEYS" >/dev/null
GROUP="tessel-bench-$$"
CORES="$(nproc)"

run_group() {  # how-rank-0-meets… (each rank: the same flags, its own --rank and --cpu; a prefix via PREFIX_<rank>)
    local pids=() rank prefix
    for ((rank = RANKS - 1; rank >= 1; rank--)); do
        prefix="PREFIX_$rank"
        ${!prefix:-} "$WORKER" bench-allreduce --rank "$rank" --world "$RANKS" --cpu $((rank % CORES)) \
            --sizes "$SIZES" --iterations "$ITERATIONS" "$@" &
        pids+=($!)
    done
    ${PREFIX_0:-} "$WORKER" bench-allreduce --rank 0 --world "$RANKS" --cpu 0 --sizes "$SIZES" --iterations "$ITERATIONS" "$@"
    wait "${pids[@]}"
}

run_group --group "$GROUP"

if [[ "$NETNS" == 1 ]]; then
    HOSTS="tslcoll$$"
    trap 'python3 scripts/netns_hosts.py down "$HOSTS"; rm -rf "$(dirname "$KEYS")"' EXIT
    mapfile -t addresses < <(python3 scripts/netns_hosts.py up "$HOSTS" "$RANKS")
    peers=""
    for ((rank = 0; rank < RANKS; rank++)); do
        peers+="${peers:+,}tcp://${addresses[rank]}:7100"
        declare "PREFIX_$rank=ip netns exec $HOSTS-$rank"
    done
    echo
    run_group --peers "$peers"
    echo
    run_group --peers "$peers" --curve-keys "$KEYS"
fi
