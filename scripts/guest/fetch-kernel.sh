#!/usr/bin/env bash
# Puts Debian 12's own 6.1 kernel (the newest linux-image-6.1.0-N-amd64 apt knows) in the guest-kernel
# cache for scripts/guest/run-in-guest.sh, unless the cache already holds one, and prints the path of its
# vmlinuz. The package is downloaded with `apt-get download`, never installed, and only boot/ is unpacked
# (the guest loads no modules). Next to vmlinuz go the kernel's config and vmlinux, the uncompressed ELF
# image: qemu boots it directly (PVH entry), skipping the ~6 s the emulated CPU spends decompressing
# vmlinuz, and `bpftool btf dump file vmlinux format c` gives that kernel's vmlinux.h.
set -euo pipefail

cache="${TRACER_GUEST_CACHE:-$HOME/.cache/tracer-guest}"

cached_kernel() {
  local kernels
  kernels=$(shopt -s nullglob; printf '%s\n' "$cache"/linux-image-*-amd64/vmlinuz)
  [ -z "$kernels" ] || echo "$kernels" | sort -V | tail -n 1
}

existing=$(cached_kernel)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

newest_package() {
  apt-cache pkgnames linux-image-6.1.0- 2>/dev/null | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n 1
}
package=$(newest_package)
if [ -z "$package" ]; then
  apt-get update -qq
  package=$(newest_package)
fi
if [ -z "$package" ]; then
  echo "error: apt knows no linux-image-6.1.0-N-amd64 package (is this Debian 12 with bookworm sources?)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading $package for the guest-kernel tests" >&2
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package" >/dev/null)
dpkg-deb --fsys-tarfile "$work"/"$package"_*.deb | tar -x -C "$work" --wildcards './boot/*'
release=${package#linux-image-}
mkdir -p "$cache/$package.partial"
cp "$work/boot/vmlinuz-$release" "$cache/$package.partial/vmlinuz"
cp "$work/boot/config-$release" "$cache/$package.partial/config"
# vmlinuz is a boot stub followed by the xz-compressed ELF kernel (Debian builds with CONFIG_KERNEL_XZ).
offset=$(LC_ALL=C grep -abo $'\xfd''7zXZ' "$work/boot/vmlinuz-$release" | head -n 1 | cut -d: -f1)
if [ -n "$offset" ]; then
  tail -c +$((offset + 1)) "$work/boot/vmlinuz-$release" | xz -dcq > "$work/vmlinux" 2>/dev/null || true
  if [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    mv "$work/vmlinux" "$cache/$package.partial/vmlinux"
  fi
fi
[ -e "$cache/$package.partial/vmlinux" ] || echo "warning: could not extract vmlinux from vmlinuz; the guest boots slower" >&2
dpkg-deb -f "$work"/"$package"_*.deb Version > "$cache/$package.partial/version"
rm -rf "${cache:?}/$package"
mv "$cache/$package.partial" "$cache/$package"
echo "$cache/$package/vmlinuz"
