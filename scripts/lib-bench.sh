# Shared by the scripts/bench-*.sh that run the `tracer` binary as shipped side by side with a baseline
# (sourced, after the script parsed its arguments; `tracer` is the --tracer path or empty).
#   bench_setup HINT TOOL...  checks each tool (one line naming the missing one, and HINT: how to install it),
#                             mounts tracefs when missing, builds the release `tracer` unless one was given, and
#                             makes $work (a temporary directory) and $pids (background processes): both are
#                             cleaned up at exit, after the script's own `bench_cleanup_extra` if it defines one.
#   median                    the median of the numbers on stdin, one per line.

bench_setup() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    [ -x "$tool" ] || { echo "missing $tool ($hint)" >&2; exit 1; }
  done
  [ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing
  if [ -z "$tracer" ]; then
    PATH="/opt/swift/usr/bin:$PATH" swift build --manifest-cache none -c release --static-swift-stdlib --product tracer >&2
    tracer=.build/release/tracer
  fi
  work=$(mktemp -d)
  chmod 755 "$work"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if declare -F bench_cleanup_extra > /dev/null; then bench_cleanup_extra; fi
  sleep 0.3
  rm -rf "$work"
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
