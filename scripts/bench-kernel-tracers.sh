#!/usr/bin/env bash
# What a kernel utility tracer costs (issue 16), side by side in one run: a context-switch storm (threads
# of two processes ping-ponging bytes over pipes, all on CPU 0) with no tracer, with `tracer tool runqlat`
# and with libbpf-tools' `runqlat` (Debian 0.26). Per round: context switches per second of the machine
# (/proc/stat ctxt), the storm's round trips per second, the tracer's own CPU (utime+stime of its process)
# and, with BPF statistics on (sysctl kernel.bpf_stats_enabled), the BPF run time per program run of the
# watcher's programs (bpftool prog show: run_time_ns / run_cnt of the programs the watcher holds).
# Rounds alternate; medians. Usage (root): scripts/bench-kernel-tracers.sh [--rounds N] [--seconds S] [--tracer PATH]
# [--tool runqlat|files|syscalls|tcp|biolatency|oomkill]. With --tool files (vs libbpf-tools' opensnoop) or syscalls
# (vs syscount -L) the workload is instead one process opening and closing /etc/hostname in a loop (after a 2 s
# pause in which both watchers attach to it with -p/--pid); its column is then open+close pairs per second.
# With --tool tcp (vs tcplife) it is one process connecting to its own loopback listener, accepting and closing
# both ends in a loop (connections per second); with --tool biolatency (vs biolatency) one process reading a
# loop device of its own (over a file in /dev/shm) with 4 KiB O_DIRECT reads (reads per second); both watchers machine-wide. With --tool
# oomkill, 5 processes in a row touch memory in a 16 MiB memory cgroup until the OOM killer kills them (kills
# per second); libbpf-tools' oomkill needs a kprobe on oom_kill_process, so on a kernel without kprobes its
# row says why it could not run.
# With --agent (runqlat only) the watchers are instead the agent (`tracer --pid P`, P an idle process, /metrics
# on) without kernel tracers and with `--kernel-tracers runqlat`: its CPU and the storm's rate with it, and the
# run-queue samples its /metrics counted during the round.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=3 seconds=5 tracer="" tool=runqlat agent=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    --agent) agent=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$tool" in
  runqlat) reference=(/usr/sbin/runqlat) ;;
  files) reference=(/usr/sbin/opensnoop) ;;
  syscalls) reference=(/usr/sbin/syscount -L) ;;
  tcp) reference=(/usr/sbin/tcplife) ;;
  biolatency) reference=(/usr/sbin/biolatency) ;;
  oomkill) reference=(/usr/sbin/oomkill) ;;
  *) echo "--tool: runqlat, files, syscalls, tcp, biolatency or oomkill, not $tool" >&2; exit 2 ;;
esac
[ $agent = 0 ] || [ "$tool" = runqlat ] || { echo "--agent goes with --tool runqlat" >&2; exit 2; }
source scripts/lib-bench.sh
bench_setup "apt-get install libbpf-tools bpftool jq gcc curl" "${reference[0]}" /usr/sbin/bpftool /usr/bin/jq /usr/bin/cc /usr/bin/curl
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
loop_device="" cgroup="" disk_file=""
bench_cleanup_extra() {
  sysctl -qw kernel.bpf_stats_enabled="$stats_before"
  [ -z "$loop_device" ] || losetup -d "$loop_device"
  [ -z "$disk_file" ] || rm -f "$disk_file"
  [ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true
}
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

# Connects to its own loopback listener, accepts, closes both ends, for S seconds after a 2 s pause;
# prints connections per second.
cat > "$work/connector.c" <<'C'
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t length = sizeof address;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 64) || getsockname(listener, (struct sockaddr *)&address, &length)) return 1;
    sleep(2);
    long connections = 0; double end = now() + seconds;
    while (now() < end) {
        int client = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(client, (struct sockaddr *)&address, sizeof address)) return 1;
        int server = accept(listener, NULL, NULL);
        if (server < 0) return 1;
        close(client); close(server); connections++;
    }
    printf("%.0f\n", connections / seconds);
    return 0;
}
C
cc -O2 -o "$work/connector" "$work/connector.c"

# Reads the device $2 with 4 KiB O_DIRECT reads (cycling over its first 16 MiB) for S seconds after a 2 s
# pause; prints reads per second.
cat > "$work/reader.c" <<'C'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    int fd = open(argv[2], O_RDONLY | O_DIRECT);
    void *buffer;
    if (fd < 0 || posix_memalign(&buffer, 4096, 4096)) return 1;
    sleep(2);
    long reads = 0; double end = now() + seconds;
    while (now() < end) { if (pread(fd, buffer, 4096, (off_t)(reads % 4096) * 4096) != 4096) return 1; reads++; }
    printf("%.0f\n", reads / seconds);
    return 0;
}
C
cc -O2 -o "$work/reader" "$work/reader.c"

# Touches memory 1 MiB at a time until it is killed.
cat > "$work/hog.c" <<'C'
#include <stdlib.h>
#include <string.h>
int main(void) { for (;;) { char *block = malloc(1 << 20); if (!block) return 1; memset(block, 1, 1 << 20); } }
C
cc -O2 -o "$work/hog" "$work/hog.c"

case "$tool" in
  biolatency)
    # Backed by a file in memory (tmpfs): the device's time is CPU time, steadier than a disk's.
    disk_file=/dev/shm/tracer-bench-disk-$$
    dd if=/dev/zero of="$disk_file" bs=1M count=16 status=none
    loop_device=$(losetup --find --show "$disk_file")
    echo none > "/sys/block/${loop_device#/dev/}/queue/scheduler" ;;
  oomkill)
    if [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
      cgroup=/sys/fs/cgroup/memory/tracer-bench-oom-$$; mkdir "$cgroup"; echo 16M > "$cgroup/memory.limit_in_bytes"
    else
      cgroup=/sys/fs/cgroup/tracer-bench-oom-$$; mkdir "$cgroup"; echo 16M > "$cgroup/memory.max"
    fi ;;
esac
# The workload of the --tool (after a 2 s pause): prints its rate per second.
oom_kills=5
hogs() { # runs $oom_kills hogs in the memory cgroup one after another, after a 2 s pause; prints kills/s
  sleep 2
  local start=$EPOCHREALTIME i
  for i in $(seq 1 "$oom_kills"); do { sh -c 'echo $$ > "$1/cgroup.procs"; exec "$2"' hog "$cgroup" "$work/hog" || true; } 2>/dev/null; done
  echo "$oom_kills / ($EPOCHREALTIME - $start)" | bc -l
}
run_workload() { # run in the background: exec keeps its PID the workload's, for the watchers' --pid/-p
  case "$tool" in
    files|syscalls) exec "$work/opener" "$seconds" ;;
    tcp) exec "$work/connector" "$seconds" ;;
    biolatency) exec "$work/reader" "$seconds" "$loop_device" ;;
    oomkill) hogs ;;
  esac
}

ctxt() { awk '/^ctxt/ {print $2}' /proc/stat; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true; } # utime + stime in clock ticks; empty once it exited
ticks=$(getconf CLK_TCK)
# The BPF programs the watcher PID holds (program and link descriptors' prog_id in /proc/PID/fdinfo), as a
# JSON array: only its own programs count, not those other processes load meanwhile (bpftool's per-process
# view needs its own BPF iterator, which lockdown refuses here).
watcher_program_ids() {
  local fd
  for fd in /proc/"$1"/fd/*; do
    case "$(readlink "$fd" 2>/dev/null)" in
      anon_inode:bpf-prog|anon_inode:bpf_link) awk '/^prog_id:/ {print $2}' "/proc/$1/fdinfo/${fd##*/}" 2>/dev/null || true ;;
    esac
  done | sort -un | jq -sc .
}
# "NS RUNS": BPF nanoseconds and program runs so far of the programs with the ids in $1 whose names match $2
# (a regex).
bpf_totals() {
  bpftool prog show -j | jq -r --argjson ids "$1" --arg names "$2" '[.[] | select(.id as $id | $ids | index($id)) | select(.name | test($names))] |
    "\(map(.run_time_ns // 0) | add // 0) \(map(.run_cnt // 0) | add // 0)"'
}

# One round: $1 = none|tracer|libbpf-tools -> "switches/s workload-rate/s tracerCPU% bpf-ns/run"
round() {
  local watcher="" pid="" workload="" c0 t0 c1 t1 rate w0 w1 sleeper="" samples=""
  if [ "$tool" != runqlat ]; then run_workload > "$work/rate" & workload=$!; fi
  # files and syscalls watch the workload's process; tcp, biolatency and oomkill watch the whole machine.
  local filter=""; case "$tool" in files|syscalls) filter=$workload ;; esac
  case "$1" in
    tracer) "$tracer" tool "$tool" ${filter:+--pid "$filter"} > /dev/null 2> "$work/watcher.err" & pid=$! ;;
    libbpf-tools) "${reference[@]}" ${filter:+-p "$filter"} > /dev/null 2> "$work/watcher.err" & pid=$! ;;
    agent|agent-runqlat)
      sleep 600 & sleeper=$!; pids+=("$sleeper")
      : > "$work/watcher.err"
      "$tracer" --pid "$sleeper" --print none --prometheus-port 9464 --log-level info \
        $([ "$1" = agent ] || echo "--kernel-tracers runqlat") > /dev/null 2> "$work/watcher.err" & pid=$!
      local waited=0
      until grep -q "tracing:" "$work/watcher.err" || [ $waited -ge 300 ]; do sleep 0.1; waited=$((waited + 1)); done ;;
  esac
  if [ -n "$pid" ]; then pids+=("$pid"); watcher=$pid; fi
  if [ -n "$workload" ]; then
    sleep 1.5 # the opener starts after 2 s
    c0=$(ctxt); t0=${watcher:+$(cpu "$watcher")}; w0=$EPOCHREALTIME
    wait "$workload"
    rate=$(cat "$work/rate")
  else
    [ -z "$watcher" ] || sleep 2
    c0=$(ctxt); t0=${watcher:+$(cpu "$watcher")}; w0=$EPOCHREALTIME
    rate=$("$work/pingpong" "$seconds")
  fi
  c1=$(ctxt); t1=${watcher:+$(cpu "$watcher")}; w1=$EPOCHREALTIME
  local cpu_share=0 ns=0 per_op=0
  samples=""
  if [ "$1" = agent-runqlat ]; then # run-queue samples the agent counted so far (its /metrics)
    samples=$(curl -s http://127.0.0.1:9464/metrics | awk '/^tracer_runqlat_delay(_microseconds)?_count/ { sum += $NF } END { print sum + 0 }')
  fi
  if [ -n "$watcher" ]; then
    if [ -z "$t1" ] || ! kill -0 "$watcher" 2>/dev/null; then # the watcher could not run: say why, once
      [ -e "$work/$1.failed" ] || head -n 3 "$work/watcher.err" > "$work/$1.failed"
      echo "0 $rate 0 0 0"; return
    fi
    cpu_share=$(echo "($t1 - $t0) * 100 / $ticks / ($w1 - $w0)" | bc -l)
    # In the agent: the runqlat programs' runs (the agent's own programs run too; the agent row has them).
    local totals
    totals=$(bpf_totals "$(watcher_program_ids "$watcher")" "$([ "$1" = agent-runqlat ] && echo '^runqlat_' || echo .)")
    ns=$(echo "$totals" | awk '{ print ($2 > 0) ? $1 / $2 : 0 }')
    # Per operation of the workload (round trip, open+close, connection, read, kill): all the runs since
    # the watcher attached (2 s before the window: an idle machine adds few) over the window's operations.
    per_op=$(echo "$totals" | awk -v rate="$rate" -v seconds="$(echo "$w1 - $w0" | bc -l)" '{ ops = rate * seconds; print (ops > 0) ? $1 / ops : 0 }')
    kill -INT "$watcher"; wait "$watcher" 2>/dev/null || true
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  fi
  [ -z "$samples" ] || echo "$samples" >> "$work/agent-samples"
  echo "$(echo "($c1 - $c0) / ($w1 - $w0)" | bc -l) $rate $cpu_share $ns $per_op"
}

kinds=(none tracer libbpf-tools)
[ $agent = 0 ] || kinds=(none agent agent-runqlat)
for kind in "${kinds[@]}"; do : > "$work/$kind"; done
for r in $(seq 1 "$rounds"); do
  for kind in "${kinds[@]}"; do round "$kind" >> "$work/$kind"; done
done

column() { awk "{print \$$2}" "$work/$1" | median; }
case "$tool" in runqlat) unit="trips/s" ;; tcp) unit="conns/s" ;; biolatency) unit="reads/s" ;; oomkill) unit="kills/s" ;; *) unit="opens/s" ;; esac
if [ $agent = 1 ]; then echo "tool: runqlat in the agent (--kernel-tracers runqlat); $tracer"; else echo "tool: $tool; libbpf-tools: ${reference[*]}"; fi
printf '%-14s %14s %14s %12s %12s %12s\n' watcher "switches/s" "$unit" "CPU % core" "BPF ns/run" "BPF ns/op"
for kind in "${kinds[@]}"; do
  if [ -e "$work/$kind.failed" ]; then echo "$kind: could not run: $(tr '\n' ' ' < "$work/$kind.failed")"; continue; fi
  printf '%-14s %14.0f %14.2f %12.2f %12.0f %12.0f\n' "$kind" "$(column "$kind" 1)" "$(column "$kind" 2)" "$(column "$kind" 3)" "$(column "$kind" 4)" "$(column "$kind" 5)"
done
base=$(column none 2)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "n/a" }'; }
if [ $agent = 1 ]; then
  echo "workload throughput with the agent / none: $(ratio "$(column agent 2)" "$base"); with the agent running runqlat / none: $(ratio "$(column agent-runqlat 2)" "$base")"
  echo "run-queue samples in the agent's /metrics at the end of each round: $(tr '\n' ' ' < "$work/agent-samples")"
else
  if [ -e "$work/libbpf-tools.failed" ]; then
    echo "workload throughput with tracer / none: $(ratio "$(column tracer 2)" "$base"); libbpf-tools could not run"
  else
    echo "workload throughput with tracer / none: $(ratio "$(column tracer 2)" "$base"); libbpf-tools / none: $(ratio "$(column libbpf-tools 2)" "$base")"
    echo "BPF run time per run, tracer / libbpf-tools: $(ratio "$(column tracer 4)" "$(column libbpf-tools 4)"); per workload operation: $(ratio "$(column tracer 5)" "$(column libbpf-tools 5)")"
  fi
fi
