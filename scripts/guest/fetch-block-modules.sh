#!/usr/bin/env bash
# Puts the loop block-device module (drivers/block/loop.ko) of the cached guest kernel
# (scripts/guest/fetch-kernel.sh) into its cache directory, under block/, and prints that directory: the
# kernel-tracers guest test makes a loop device for biolatency with it (the guest has no disk). The kernel
# package is downloaded again with `apt-get download` (never installed) and only loop.ko is unpacked.
# Idempotent.
set -euo pipefail

vmlinuz=$("$(dirname "$0")/fetch-kernel.sh")
directory="${vmlinuz%/vmlinuz}"
package="${directory##*/}"
release="${package#linux-image-}"
target="$directory/block"
if [ -e "$target/loop.ko" ]; then
  echo "$target"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(cat "$directory/version")
echo "downloading $package $version for its loop module" >&2
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package=$version" >/dev/null)
dpkg-deb --fsys-tarfile "$work"/"$package"_*.deb | tar -x -C "$work" "./lib/modules/$release/kernel/drivers/block/loop.ko"
mkdir -p "$target.partial"
cp "$work/lib/modules/$release/kernel/drivers/block/loop.ko" "$target.partial/"
rm -rf "$target"
mv "$target.partial" "$target"
echo "$target"
