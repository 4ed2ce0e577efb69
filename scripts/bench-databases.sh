#!/usr/bin/env bash
# Database parsers' cost (issue 13), with the `tracer` binary as shipped (release, static Swift runtime) as its
# own process, side by side with no agent in one run; rounds alternate no agent / agent; medians.
#   1. redis-server under `redis-benchmark -c 2 -t get,set -n N` (the server traced);
#   2. Postgres 15 under `pgbench -S -c 2 -T S` (the postmaster traced: its backends are followed from fork);
#   3. MariaDB 10.11 under `mariadb-slap --concurrency=2 --query="SELECT 1"` (mariadbd traced; N queries);
#   4. memcached under `memcaslap -T 2 -c 2 -t S` (9 gets : 1 set; memcached traced).
# Each agent round also reports the spans it made against the operations the benchmark ran (Redis: one per
# command; Postgres: one per statement), the agent's CPU per span and its stop line (drops). Spans are counted
# on the agent's /metrics (`--print none`, the cost of tracing alone), or with `--print json` from the JSON
# lines it prints to a file (adds the printing cost; spans counted per db.system.name and kind).
# Usage (root): scripts/bench-databases.sh [--rounds N] [--seconds S] [--requests N] [--tracer PATH] [--print none|json]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=3 seconds=5 requests=100000 tracer="" print=none
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    --print) print=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
pgbin=/usr/lib/postgresql/15/bin
source scripts/lib-bench.sh
bench_setup "apt-get install redis-server postgresql jq mariadb-server mariadb-client memcached libmemcached-tools" \
  /usr/bin/redis-server /usr/bin/redis-benchmark "$pgbin/initdb" "$pgbin/postgres" /usr/bin/pgbench /usr/bin/jq \
  /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/bin/mariadb-slap /usr/bin/memcached /usr/bin/memcaslap

redis_port=$((20000 + RANDOM % 10000))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no > /dev/null & pids+=($!); redis_pid=$!

pg_port=$((30000 + RANDOM % 10000))
mkdir "$work/pg"; chown postgres "$work/pg"
setpriv --reuid=postgres --regid=postgres --init-groups "$pgbin/initdb" -D "$work/pg/data" -A trust -U postgres > /dev/null
setpriv --reuid=postgres --regid=postgres --init-groups "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
  -c listen_addresses=127.0.0.1 > "$work/pg/log" 2>&1 & pids+=($!); pg_pid=$!
for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.1; done
pgbench -q -i -s 1 -h 127.0.0.1 -p "$pg_port" -U postgres postgres > /dev/null 2>&1

maria_port=$((50000 + RANDOM % 5000))
mariadb-install-db --no-defaults --datadir="$work/maria" --user=root --skip-test-db --auth-root-authentication-method=normal > /dev/null 2>&1
mariadbd --no-defaults --datadir="$work/maria" --user=root --bind-address=127.0.0.1 --port="$maria_port" --socket="$work/maria.sock" \
  --skip-grant-tables --innodb-buffer-pool-size=16M --pid-file="$work/maria.pid" > /dev/null 2>&1 & pids+=($!); maria_pid=$!
for _ in $(seq 1 150); do mariadb -h 127.0.0.1 -P "$maria_port" -u root -e "SELECT 1" > /dev/null 2>&1 && break; sleep 0.2; done

memcached_port=$((55000 + RANDOM % 5000))
memcached -u root -l 127.0.0.1 -p "$memcached_port" -U 0 -t 2 & pids+=($!); memcached_pid=$!
sleep 0.3

# Each workload prints "rate operations".
redis_run() { # requests/s, commands
  redis-benchmark -p "$redis_port" -c 2 -n "$requests" -t get,set -q 2>/dev/null | tr '\r' '\n' \
    | awk -v n=$((2 * requests)) '/requests per second/ {sum += $2; k++} END {print sum / k, n}'
}
pg_run() { # tps, transactions (SELECTs)
  pgbench -S -c 2 -T "$seconds" -h 127.0.0.1 -p "$pg_port" -U postgres postgres 2>/dev/null \
    | awk '/^tps/ {tps=$3} /number of transactions actually processed/ {split($0, a, ": "); n=a[2]} END {print tps, n}'
}
maria_run() { # queries/s, queries ($requests / 2 of SELECT 1 over 2 connections)
  local queries=$((requests / 2))
  mariadb-slap -h 127.0.0.1 -P "$maria_port" -u root --concurrency=2 --number-of-queries="$queries" --query="SELECT 1" \
    --create-schema=mysql 2>/dev/null | awk -v q="$queries" '/Average number of seconds/ {print q / $(NF - 1), q}'
}
memcached_run() { # ops/s, operations
  memcaslap -s "127.0.0.1:$memcached_port" -T 2 -c 2 -t "${seconds}s" 2>/dev/null | awk '/^Run time/ {print $7, $5}'
}

agent="" metrics_port=$((40000 + RANDOM % 10000)) agent_cpu_start=0 agent_cpu=0 agent_spans=0
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
start_agent() { # $1: pid to trace
  if [ "$print" = json ]; then
    "$tracer" --pid "$1" --print json --log-level info > "$work/spans.json" 2> "$work/agent.log" &
  else
    "$tracer" --pid "$1" --print none --prometheus-port "$metrics_port" --log-level info 2> "$work/agent.log" &
  fi
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.5
  agent_cpu_start=$(cpu_ticks "$agent")
}
stop_agent() {
  sleep 0.2 # the reader drains every 20 ms
  agent_cpu=$(( $(cpu_ticks "$agent") - agent_cpu_start ))
  if [ "$print" = none ]; then
    agent_spans=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^tracer_spans_produced_total/ {print $2}')
  fi
  kill -TERM "$agent"; wait "$agent" || true; agent=""
  [ "$print" = json ] && agent_spans=$(wc -l < "$work/spans.json")
  true
}
spans_of() { # $1: db.system.name
  if [ "$print" = json ]; then
    jq -r --arg system "$1" 'select(.attributes["db.system.name"] == $system) | .kind' "$work/spans.json" | sort | uniq -c | tr '\n' ' '
  else
    echo -n "$agent_spans "
  fi
  echo -n "(agent CPU $(echo "$agent_cpu * 10000000 / ($agent_spans + 1)" | bc) ns per span)"
}

declare -A values
# One workload in the current mode and round: $1 its key, $2 the pid to trace, $3 its runner, $4 what it runs
# (for the round line), $5 its db.system.name.
measure() {
  local rate n
  [ "$mode" = agent ] && start_agent "$2"
  read -r rate n < <("$3")
  values[$1_$mode]+="$rate "
  if [ "$mode" = agent ]; then
    stop_agent
    echo "  round $round $4: $n operations; spans: $(spans_of "$5"); $(grep -o 'stopped: .*' "$work/agent.log")"
  fi
}
for round in $(seq 1 "$rounds"); do
  for mode in none agent; do
    measure redis "$redis_pid" redis_run "redis-benchmark" redis
    measure pg "$pg_pid" pg_run "pgbench" postgresql
    measure maria "$maria_pid" maria_run "mariadb-slap" mariadb
    measure memcached "$memcached_pid" memcached_run "memcaslap" memcached
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
ratio() { echo "$(m "$1_agent") / $(m "$1_none")" | bc -l | xargs printf '%.3f'; }
printf '%-52s %12s %12s %8s\n' "what (medians of $rounds rounds)" "no agent" "agent" "ratio"
printf '%-52s %12.0f %12.0f %8s\n' "redis-server, redis-benchmark -c 2 get,set (req/s)" "$(m redis_none)" "$(m redis_agent)" "$(ratio redis)"
printf '%-52s %12.0f %12.0f %8s\n' "postgres, pgbench -S -c 2 (tps)" "$(m pg_none)" "$(m pg_agent)" "$(ratio pg)"
printf '%-52s %12.0f %12.0f %8s\n' "mariadbd, mariadb-slap -c 2 SELECT 1 (queries/s)" "$(m maria_none)" "$(m maria_agent)" "$(ratio maria)"
printf '%-52s %12.0f %12.0f %8s\n' "memcached, memcaslap -T 2 -c 2 (ops/s)" "$(m memcached_none)" "$(m memcached_agent)" "$(ratio memcached)"
echo "raw: $(for k in "${!values[@]}"; do printf '%s=[%s] ' "$k" "${values[$k]% }"; done)"
