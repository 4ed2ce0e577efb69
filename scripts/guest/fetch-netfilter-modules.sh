#!/usr/bin/env bash
# Puts the netfilter modules the flow-accounting guest test loads (nf_conntrack, nf_tables with its ct
# expression, and what they depend on) of the cached guest kernel (scripts/guest/fetch-kernel.sh) into
# its cache directory, and prints that directory. The same package is downloaded again with
# `apt-get download` (never installed) and only these .ko files are unpacked. Idempotent.
set -euo pipefail

cache="${TRACER_GUEST_CACHE:-$HOME/.cache/tracer-guest}"
vmlinuz=$("$(dirname "$0")/fetch-kernel.sh")
directory="${vmlinuz%/vmlinuz}"
package="${directory##*/}"
release="${package#linux-image-}"
target="$directory/netfilter"
# In load order: each module's dependencies come before it.
modules=(
  crypto/crc32c_generic lib/libcrc32c net/ipv4/netfilter/nf_defrag_ipv4 net/ipv6/netfilter/nf_defrag_ipv6
  net/netfilter/nf_conntrack net/netfilter/nfnetlink net/netfilter/nf_tables net/netfilter/nft_ct
)
if [ -e "$target/load-order" ]; then
  echo "$target"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(cat "$directory/version")
echo "downloading $package $version for its netfilter modules" >&2
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package=$version" >/dev/null)
paths=()
for module in "${modules[@]}"; do paths+=("./lib/modules/$release/kernel/$module.ko"); done
dpkg-deb --fsys-tarfile "$work"/"$package"_*.deb | tar -x -C "$work" "${paths[@]}"
mkdir -p "$target.partial"
for module in "${modules[@]}"; do
  cp "$work/lib/modules/$release/kernel/$module.ko" "$target.partial/"
  echo "${module##*/}" >> "$target.partial/load-order"
done
rm -rf "$target"
mv "$target.partial" "$target"
echo "$target"
