#!/usr/bin/env bash
# What a kernel utility tracer costs (issue 16), side by side in one run: a context-switch storm (threads
# of two processes ping-ponging bytes over pipes, all on CPU 0) with no tracer, with `tracer tool runqlat`
# and with libbpf-tools' `runqlat` (Debian 0.26). Per round: context switches per second of the machine
# (/proc/stat ctxt), the storm's round trips per second, the tracer's own CPU (utime+stime of its process)
# and, with BPF statistics on (sysctl kernel.bpf_stats_enabled), the BPF run time per program run of the
# tracer's programs (bpftool prog show: run_time_ns / run_cnt of the programs loaded since the round began).
# Rounds alternate; medians. Usage (root): scripts/bench-kernel-tracers.sh [--rounds N] [--seconds S] [--tracer PATH]
# [--tool runqlat|files|syscalls]. With --tool files (vs libbpf-tools' opensnoop) or syscalls (vs syscount -L)
# the workload is instead one process opening and closing /etc/hostname in a loop (after a 2 s pause in
# which both watchers attach to it with -p/--pid); its column is then open+close pairs per second.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=3 seconds=5 tracer="" tool=runqlat
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$tool" in
  runqlat) reference=(/usr/sbin/runqlat) ;;
  files) reference=(/usr/sbin/opensnoop) ;;
  syscalls) reference=(/usr/sbin/syscount -L) ;;
  *) echo "--tool: runqlat, files or syscalls, not $tool" >&2; exit 2 ;;
esac
for program in "${reference[0]}" /usr/sbin/bpftool /usr/bin/jq /usr/bin/cc; do
  [ -x "$program" ] || { echo "missing $program (apt-get install libbpf-tools bpftool jq gcc)" >&2; exit 1; }
done
[ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing
if [ -z "$tracer" ]; then
  swift build --manifest-cache none -c release --static-swift-stdlib --product tracer >&2
  tracer=.build/release/tracer
fi

work=$(mktemp -d)
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; sysctl -qw kernel.bpf_stats_enabled="$stats_before"; rm -rf "$work"; }
trap cleanup EXIT
sysctl -qw kernel.bpf_stats_enabled=1

# Ping-pong: the parent writes a byte, the child answers; both pinned to CPU 0, so every round trip is two
# wakeups and two switches. Prints round trips per second after S seconds.
cat > "$work/pingpong.c" <<'C'
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    cpu_set_t cpus; CPU_ZERO(&cpus); CPU_SET(0, &cpus); sched_setaffinity(0, sizeof(cpus), &cpus);
    int there[2], back[2]; char byte = 0;
    if (pipe(there) || pipe(back)) return 1;
    if (fork() == 0) { /* the echoing child: ends when the parent's write end closes */
        close(there[1]); close(back[0]);
        while (read(there[0], &byte, 1) == 1) if (write(back[1], &byte, 1) != 1) return 0;
        return 0;
    }
    close(there[0]); close(back[1]);
    long trips = 0; double end = now() + seconds;
    while (now() < end) { if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1) return 1; trips++; }
    printf("%.0f\n", trips / seconds);
    return 0;
}
C
cc -O2 -o "$work/pingpong" "$work/pingpong.c"

# Opens and closes /etc/hostname for S seconds after a 2 s pause; prints pairs per second.
cat > "$work/opener.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    sleep(2);
    long pairs = 0; double end = now() + seconds;
    while (now() < end) { int fd = open("/etc/hostname", O_RDONLY); if (fd < 0) return 1; close(fd); pairs++; }
    printf("%.0f\n", pairs / seconds);
    return 0;
}
C
cc -O2 -o "$work/opener" "$work/opener.c"

ctxt() { awk '/^ctxt/ {print $2}' /proc/stat; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime in clock ticks
ticks=$(getconf CLK_TCK)
# BPF program ids loaded now.
program_ids() { bpftool prog show -j | jq -c '[.[].id]'; }
# BPF nanoseconds per program run of the programs loaded since the ids in $1 (the watcher's: bpftool's
# per-process view needs its own BPF iterator, which lockdown refuses here).
bpf_ns_per_run() {
  bpftool prog show -j | jq --argjson before "$1" '[.[] | select(.id as $id | $before | index($id) | not)] |
    (map(.run_time_ns // 0) | add) as $ns | (map(.run_cnt // 0) | add) as $runs |
    if ($runs // 0) > 0 then ($ns / $runs) else 0 end'
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# One round: $1 = none|tracer|libbpf-tools -> "switches/s workload-rate/s tracerCPU% bpf-ns/run"
round() {
  local watcher="" pid="" before workload="" c0 t0 c1 t1 rate
  before=$(program_ids)
  if [ "$tool" != runqlat ]; then "$work/opener" "$seconds" > "$work/rate" & workload=$!; fi
  case "$1" in
    tracer) "$tracer" tool "$tool" ${workload:+--pid "$workload"} > /dev/null 2> "$work/watcher.err" & pid=$! ;;
    libbpf-tools) "${reference[@]}" ${workload:+-p "$workload"} > /dev/null 2> "$work/watcher.err" & pid=$! ;;
  esac
  if [ -n "$pid" ]; then pids+=("$pid"); watcher=$pid; fi
  if [ -n "$workload" ]; then
    sleep 1.5 # the opener starts after 2 s
    c0=$(ctxt); t0=${watcher:+$(cpu "$watcher")}
    wait "$workload"
    rate=$(cat "$work/rate")
  else
    [ -z "$watcher" ] || sleep 2
    c0=$(ctxt); t0=${watcher:+$(cpu "$watcher")}
    rate=$("$work/pingpong" "$seconds")
  fi
  c1=$(ctxt); t1=${watcher:+$(cpu "$watcher")}
  local cpu_share=0 ns=0
  if [ -n "$watcher" ]; then
    cpu_share=$(echo "($t1 - $t0) * 100 / $ticks / $seconds" | bc -l)
    ns=$(bpf_ns_per_run "$before")
    kill -INT "$watcher"; wait "$watcher" 2>/dev/null || true
  fi
  echo "$(( (c1 - c0) / seconds )) $rate $cpu_share $ns"
}

for kind in none tracer libbpf-tools; do : > "$work/$kind"; done
for r in $(seq 1 "$rounds"); do
  for kind in none tracer libbpf-tools; do round "$kind" >> "$work/$kind"; done
done

column() { awk "{print \$$2}" "$work/$1" | median; }
unit="trips/s"; [ "$tool" = runqlat ] || unit="opens/s"
echo "tool: $tool; libbpf-tools: ${reference[*]}"
printf '%-14s %14s %14s %12s %14s\n' watcher "switches/s" "$unit" "CPU % core" "BPF ns/run"
for kind in none tracer libbpf-tools; do
  printf '%-14s %14.0f %14.0f %12.2f %14.0f\n' "$kind" "$(column "$kind" 1)" "$(column "$kind" 2)" "$(column "$kind" 3)" "$(column "$kind" 4)"
done
base=$(column none 2)
echo "workload throughput with tracer / none: $(echo "$(column tracer 2) / $base" | bc -l | cut -c1-5); libbpf-tools / none: $(echo "$(column libbpf-tools 2) / $base" | bc -l | cut -c1-5)"
echo "BPF run time per run, tracer / libbpf-tools: $(echo "$(column tracer 4) / $(column libbpf-tools 4)" | bc -l | cut -c1-5)"
