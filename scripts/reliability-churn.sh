#!/usr/bin/env bash
# Churn: N short-lived processes matching --exe while the agent runs, in batches of 50 at once: half exit
# at once (gone before the agent looks: the exec event alone), half live 20 ms (selected, attached, detached).
# Compares the agent before (after a warm-up of N/10) and after: RSS, open descriptors, BPF links it holds,
# and the entries of every hash map it holds (PID filter, connection tables). Run as root:
#   scripts/reliability-churn.sh [TRACER_BINARY] [N]
# Exits 1 when descriptors, links or map entries grew (measured 12 s after the churn, past the agent's /proc
# rescan), or RSS grew by more than 4 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
tracer=${1:-.build/release/tracer}
count=${2:-10000}
[ -x "$tracer" ] || { echo "no tracer binary at $tracer (swift build -c release --product tracer)" >&2; exit 2; }
command -v bpftool >/dev/null || { echo "bpftool is missing (apt-get install bpftool)" >&2; exit 2; }

work=$(mktemp -d /tmp/tracer-churn.XXXXXX)
cleanup() { [ -z "${agent:-}" ] || kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cp /bin/sleep "$work/churn-target"

"$tracer" --exe '*/churn-target' --print none 2> "$work/agent.log" &
agent=$!
for _ in $(seq 300); do grep -q "SIGTERM stops" "$work/agent.log" && break; sleep 0.1; done
grep -q "SIGTERM stops" "$work/agent.log" || { cat "$work/agent.log" >&2; exit 1; }

# rss_kib fds links hash_entries pid_filter_entries
measure() {
  local rss fds links=0 entries=0 pids=0 info id type name n
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent/status")
  fds=$(ls "/proc/$agent/fd" | wc -l)
  for info in /proc/"$agent"/fdinfo/*; do
    grep -q '^link_id:' "$info" 2>/dev/null && links=$((links + 1))
    id=$(awk '/^map_id:/ {print $2}' "$info" 2>/dev/null)
    [ -n "$id" ] || continue
    type=$(awk '/^map_type:/ {print $2}' "$info")
    [ "$type" = 1 ] || continue  # BPF_MAP_TYPE_HASH
    n=$(bpftool map dump id "$id" 2>/dev/null | grep -c '^key' || true)
    entries=$((entries + n))
    name=$(bpftool map show id "$id" | sed -n 's/.* name \([^ ]*\) .*/\1/p')
    [ "$name" = tracer_pids ] && pids=$((pids + n))
  done
  echo "$rss $fds $links $entries $pids"
}

churn() {
  local i j batch
  for ((i = 0; i < $1; i += 50)); do
    batch=()
    for ((j = 0; j < 50 && i + j < $1; j++)); do
      if ((j % 2)); then "$work/churn-target" 0.02 & else "$work/churn-target" 0 & fi
      batch+=($!)
    done
    wait "${batch[@]}"
  done
}

churn $((count / 10)); sleep 2
read -r rss0 fds0 links0 entries0 pids0 < <(measure)
start=$(date +%s.%N)
churn "$count"
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
sleep 3  # exits handled, detach queue drained
read -r rss3 fds3 links3 entries3 pids3 < <(measure)
sleep 9  # past the agent's 10 s /proc rescan, its safety net for exits it did not see
read -r rss1 fds1 links1 entries1 pids1 < <(measure)
selected=$(grep -c "attached .* churn-target" "$work/agent.log" || true)

printf "churn: %d processes in %.1f s (%s selected and attached over the run, warm-up included)\n" "$count" "$elapsed" "$selected"
printf "%-28s %10s %10s %10s\n" "" before "after 3 s" "after 12 s"
printf "%-28s %10s %10s %10s\n" "agent RSS (KiB)" "$rss0" "$rss3" "$rss1"
printf "%-28s %10s %10s %10s\n" "agent open descriptors" "$fds0" "$fds3" "$fds1"
printf "%-28s %10s %10s %10s\n" "BPF links held" "$links0" "$links3" "$links1"
printf "%-28s %10s %10s %10s\n" "hash map entries (all)" "$entries0" "$entries3" "$entries1"
printf "%-28s %10s %10s %10s\n" "PID filter entries" "$pids0" "$pids3" "$pids1"
kill -TERM "$agent"; wait "$agent" || true; agent=
grep "stopped:" "$work/agent.log" | sed 's/^.*\(stopped:.*\)$/agent \1/'
status=0
[ "$fds1" -le "$fds0" ] || { echo "FAIL: descriptors grew"; status=1; }
[ "$links1" -le "$links0" ] || { echo "FAIL: links grew"; status=1; }
[ "$entries1" -le "$entries0" ] || { echo "FAIL: map entries grew"; status=1; }
[ $((rss1 - rss0)) -le 4096 ] || { echo "FAIL: RSS grew by $((rss1 - rss0)) KiB"; status=1; }
[ "$status" -ne 0 ] || echo "PASS: no growth"
exit $status
