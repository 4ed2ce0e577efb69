#!/usr/bin/env bash
# Reads an XCTest log on stdin and prints one line: "tests: P passed, F failed, S skipped", from the last
# "Executed N tests, with F failures" or "Executed N tests, with S tests skipped and F failures" line.
# Exits 1 (after saying so) when the log has no such line.
set -euo pipefail
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?" | tail -n 1 || true)
if [ -z "$summary" ]; then
  echo "tests: no XCTest summary found (the build or the test runner failed)"
  exit 1
fi
executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
skipped=0
if echo "$summary" | grep -qE "with [0-9]+ tests? skipped"; then
  skipped=$(echo "$summary" | sed -E 's/.*with ([0-9]+) tests? skipped.*/\1/')
fi
echo "tests: $((executed - failed - skipped)) passed, $failed failed, $skipped skipped"
