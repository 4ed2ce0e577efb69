#!/usr/bin/env bash
# Agent memory, idle, with 10 traced processes (issue 4: RSS <= 30 MB), next to a baseline run of the same
# binary that selects nothing. Needs root, tracefs, python3.
# Usage: scripts/bench-agent-rss.sh [--breakdown] [--against OTHER_TRACER] [seconds]
#   --breakdown: after each figure, where the resident memory is (/proc/PID/smaps summed per mapped file).
#   --against: also measure another tracer binary (e.g. an older commit's build) in the same run, same servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
breakdown=false
other=""
while [[ ${1:-} == --* ]]; do
  case $1 in
    --breakdown) breakdown=true; shift ;;
    --against) other=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
settle=${1:-5}
# As shipped (deploy/Dockerfile): release, Swift runtime linked statically.
swift build --manifest-cache none -c release --static-swift-stdlib --product tracer --scratch-path .build-static >/dev/null
tracer=.build-static/release/tracer
servers=()
cleanup() { kill "${servers[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for port in $(seq 18301 18310); do
  python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1 &
  servers+=($!)
done
sleep 1

breakdown_of() { # PID → resident and private dirty KiB per mapped file (or [heap], [anon], ...), largest first
  awk '
    /^[0-9a-f]+-[0-9a-f]+ / { name = NF >= 6 ? $6 : "[anon]"; sub(".*/", "", name) }
    /^Rss:/ { rss[name] += $2; total += $2 }
    /^Private_Dirty:/ { dirty[name] += $2 }
    END {  # a sort key first: header, mappings by size, the rest
      printf "0 0 %9s %9s  %s\n", "Rss KiB", "dirty KiB", "mapping (smaps, summed per file)"
      for (n in rss) if (rss[n] >= 100) printf "1 %d %9d %9d  %s\n", rss[n], rss[n], dirty[n], n; else { small += rss[n]; count++ }
      printf "2 0 %9d %9s  (%d mappings under 100 KiB)\n", small, "", count
      printf "3 0 %9d %9s  total\n", total, ""
    }' "/proc/$1/smaps" | sort -k1,1n -k2,2nr | cut -d' ' -f3-
}

rss_of() { # label, command line... → "label VmHWM VmRSS" in MiB after $settle seconds idle
  local label=$1; shift
  "$@" --print none --log-level warning >/dev/null 2>&1 &
  local pid=$!
  sleep "$settle"
  printf '%-50s%s\n' "$label" "$(awk '/^VmRSS|^VmHWM/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$pid/status")"
  if $breakdown; then breakdown_of "$pid"; fi
  kill -TERM "$pid"; wait "$pid" || true
}

measure() { # tracer binary, label suffix
  rss_of "baseline (selects nothing)$2:" "$1" --exe '/nonexistent/*'
  rss_of "10 Python HTTP servers traced, idle$2:" "$1" --open-port 18301-18310
}
if [[ -n $other ]]; then
  echo "against: $other"
  measure "$other" " (against)"
  measure "$tracer" " (this tree)"
else
  measure "$tracer" ""
fi
echo "target: VmRSS <= 30 MiB with 10 traced processes"
