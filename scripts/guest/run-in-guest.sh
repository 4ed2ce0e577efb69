#!/usr/bin/env bash
# Boots Debian 12's 6.1 kernel (kprobes, no lockdown) under qemu with software emulation and runs a shell
# script in it as root, for the tests that need a kernel this machine's cannot be. Prints what the script
# writes (stdout and stderr, in order) and exits with its exit status.
#
#   scripts/guest/run-in-guest.sh [OPTIONS] SCRIPT [ARGS...]
#
#   --file PATH      copy a host file or directory (absolute path) into the guest at the same path; for an
#                    ELF file also every library `ldd` lists and the dynamic loader (repeatable)
#   --timeout SECS   give up after SECS seconds of wall-clock time (default 300)
#   --memory MIB     guest memory (default 1536); the initramfs lives in it
#   --cpus N         guest CPUs (default 2)
#   --kernel PATH    boot this kernel (bzImage, or vmlinux with a PVH entry) instead of the cached one
#   --append ARGS    extra kernel command-line arguments (e.g. lockdown=integrity)
#   --verbose        report timings and copy the kernel log to stderr
#   --check          exit 0 if the guest can be booted here, else print why and exit 1
#
# SCRIPT runs under busybox sh with ARGS as "$@", from /, stdin from /dev/null, after /init has mounted
# proc, sysfs, devtmpfs, devpts, tmpfs on /run, tracefs, debugfs, bpffs, securityfs and cgroup2,
# brought up loopback, and installed the busybox applets. The guest has no network and no disk: whatever
# the script needs must come in with --file.
#
# Exit status: the script's; 124 when the timeout passed; 125 when the guest did not start or did not
# finish the script (kernel panic, boot failure); 2 for a usage error. 124 and 125 come with a one-line
# reason and the tail of the kernel log on stderr.
#
# The kernel comes from ${TRACER_GUEST_CACHE:-$HOME/.cache/tracer-guest} (scripts/guest/fetch-kernel.sh
# fills it; scripts/install-deps.sh calls it). Needs qemu-system-x86_64, busybox (busybox-static) and cpio.
# Never uses KVM: the /dev/kvm of these machines hangs nested guests.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout_seconds=300
memory=1536
cpus=2
kernel=""
append=""
verbose=0
check=0
files=()
busybox=/bin/busybox

help() { sed -n '6,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
usage() { help >&2; exit 2; }
fail() { echo "run-in-guest: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage; timeout_seconds=$2; shift 2 ;;
    --memory) [ $# -ge 2 ] || usage; memory=$2; shift 2 ;;
    --cpus) [ $# -ge 2 ] || usage; cpus=$2; shift 2 ;;
    --kernel) [ $# -ge 2 ] || usage; kernel=$2; shift 2 ;;
    --append) [ $# -ge 2 ] || usage; append=$2; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --check) check=1; shift ;;
    -h|--help) help; exit 0 ;;
    --) shift; break ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
for number in "$timeout_seconds" "$memory" "$cpus"; do
  [[ $number =~ ^[1-9][0-9]*$ ]] || fail "not a positive number: $number"
done

cache="${TRACER_GUEST_CACHE:-$HOME/.cache/tracer-guest}"
cached_kernel() {
  local kernels
  kernels=$(shopt -s nullglob; printf '%s\n' "$cache"/linux-image-*-amd64/vmlinuz)
  [ -z "$kernels" ] || echo "$kernels" | sort -V | tail -n 1
}
# The cached kernel's uncompressed vmlinux when there is one: it boots ~6 s faster than vmlinuz.
prefer_vmlinux() { if [ -r "${1%/*}/vmlinux" ]; then echo "${1%/*}/vmlinux"; else echo "$1"; fi; }
[ -n "$kernel" ] || kernel=$(cached_kernel)
[ -z "$kernel" ] || [ "${kernel##*/}" != vmlinuz ] || kernel=$(prefer_vmlinux "$kernel")

missing_prerequisite() {
  command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"; return; }
  command -v cpio >/dev/null || { echo "cpio is not installed (apt-get install cpio)"; return; }
  [ -x "$busybox" ] || { echo "$busybox is missing (apt-get install busybox-static)"; return; }
  [ -n "$kernel" ] || { echo "no guest kernel in $cache (run scripts/guest/fetch-kernel.sh)"; return; }
  [ -r "$kernel" ] || { echo "cannot read the guest kernel $kernel"; return; }
}
if [ $check = 1 ]; then
  reason=$(missing_prerequisite)
  [ -z "$reason" ] || { echo "$reason"; exit 1; }
  exit 0
fi

[ $# -ge 1 ] || usage
script=$1
shift
[ -r "$script" ] || fail "cannot read the script $script"
[ -n "$kernel" ] || kernel=$(prefer_vmlinux "$("$here/fetch-kernel.sh")")
reason=$(missing_prerequisite)
[ -z "$reason" ] || fail "$reason"

started=$EPOCHREALTIME
work=$(mktemp -d "${TMPDIR:-/tmp}/tracer-guest.XXXXXX")
qemu_pid=""
cleanup() {
  [ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The initramfs: host files at their own paths (one cpio archive read straight from /), then the
# generated files (a second archive appended; the kernel unpacks both). Uncompressed: with ~130 MB (the
# debug tracer and the Swift runtime) that boots fastest (lz4 took ~0.5 s more to unpack in the guest,
# zstd and gzip 1.5-3 s more, besides compressing on the host). ---

declare -A listed=() staged=()
host_entries=()
add_entry() { # PATH: one archive entry, with every parent directory before it
  local path=$1 parent=""
  local -a parts
  IFS=/ read -ra parts <<< "${path#/}"
  local part
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    parent+="/$part"
    if [ -z "${listed[$parent]+x}" ]; then
      listed[$parent]=1
      host_entries+=("$parent")
    fi
  done
}

# Places a host path in the guest at the same path. Symbolic links on the way (/lib -> usr/lib on
# merged-/usr Debian, libfoo.so.1 -> libfoo.so.1.2) are recreated as links and followed, so the path
# resolves in the guest as on the host. Directories come whole; ELF files bring their libraries.
stage() { # PATH [libraries|no-libraries] [DEPTH]
  local path=$1 libraries=${2:-libraries} depth=${3:-0}
  (( depth < 40 )) || fail "too many symbolic links resolving $path"
  [[ $path == /* ]] || fail "--file needs an absolute path: $path"
  [ -e "$path" ] || fail "no such file: $path"
  path=$(realpath -sm "$path")
  local -a parts
  IFS=/ read -ra parts <<< "${path#/}"
  local current="" i
  for ((i = 0; i < ${#parts[@]}; i++)); do
    current+="/${parts[i]}"
    if [ -L "$current" ]; then
      add_entry "$current"
      local target
      target=$(readlink "$current")
      [[ $target == /* ]] || target="${current%/*}/$target"
      local rest=""
      if (( i + 1 < ${#parts[@]} )); then
        rest=$(IFS=/; echo "/${parts[*]:i+1}")
      fi
      stage "$target$rest" "$libraries" $((depth + 1))
      return
    fi
  done
  [ -z "${staged[$path]+x}" ] || return 0
  staged[$path]=1
  add_entry "$path"
  if [ -d "$path" ]; then
    local entry
    while IFS= read -r -d '' entry; do
      if [ -z "${listed[$entry]+x}" ]; then
        listed[$entry]=1
        host_entries+=("$entry")
      fi
      [ "$libraries" = no-libraries ] || [ -L "$entry" ] || [ ! -f "$entry" ] || ! is_elf "$entry" || stage_libraries "$entry" quiet
    done < <(find "$path" -mindepth 1 -print0)
  elif [ "$libraries" = libraries ] && is_elf "$path"; then
    stage_libraries "$path"
  fi
}

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# ldd lists the whole closure, so the libraries themselves need no ldd run.
# Libraries ldd cannot find are reported for the files given with --file, not for a directory's contents
# (plug-ins and libraries that rely on their loader's search path).
stage_libraries() { # ELF file [quiet]: the libraries and loader `ldd` resolves for it
  local line library
  while read -r line; do
    case $line in
      *"=> not found"*) [ -n "${2:-}" ] || echo "run-in-guest: warning: ${1}: ${line%% =>*} not found by ldd" >&2 ;;
      *"=> /"*) library=${line#*=> }; stage "${library%% (*}" no-libraries ;;
      /*) library=${line%% (*}; stage "${library%% *}" no-libraries ;;
    esac
  done < <(ldd "$1" 2>/dev/null || true)
}

# The top-level links of a merged-/usr host (/bin -> usr/bin, ...), without the directories' contents.
for top in /bin /sbin /lib /lib64; do
  if [ -L "$top" ]; then
    add_entry "$top"
    target=$(readlink -f "$top")
    [ -d "$target" ] && add_entry "$target"
  fi
done
stage "$busybox"
[ ! -e /etc/ld.so.cache ] || stage /etc/ld.so.cache
for file in "${files[@]}"; do
  stage "$file"
done

generated="$work/root"
mkdir -p "$generated"/{guest,proc,sys,dev,tmp,run,root,etc,mnt}
cp "$script" "$generated/guest/script"
{
  printf 'set --'
  for argument in "$@"; do
    printf " '%s'" "${argument//\'/\'\\\'\'}"
  done
  printf '\n'
} > "$generated/guest/args"
token="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start_marker="@@tracer-guest-start-$token@@"
end_marker="@@tracer-guest-exit-$token@@"
[ -n "${listed[/etc/passwd]+x}" ] || echo 'root:x:0:0:root:/root:/bin/sh' > "$generated/etc/passwd"
[ -n "${listed[/etc/group]+x}" ] || echo 'root:x:0:' > "$generated/etc/group"
[ -n "${listed[/etc/hosts]+x}" ] || printf '127.0.0.1 localhost tracer-guest\n::1 localhost\n' > "$generated/etc/hosts"
cat > "$generated/init" <<EOF
#!/bin/busybox sh
# Generated by scripts/guest/run-in-guest.sh.
/bin/busybox mkdir -p /proc /usr/bin /usr/sbin /bin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
echo "init: kernel up after \$(cut -d' ' -f1 /proc/uptime) s"
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
chmod 1777 /tmp # the initramfs root is writable; a tmpfs here would hide files given with --file under /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname tracer-guest
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
stty -F /dev/ttyS1 raw -echo
. /guest/args
echo "init: running the script after \$(cut -d' ' -f1 /proc/uptime) s"
cd /
# The script's stdout and stderr are one pipe (not the serial tty), as for a process a test starts. A
# copier streams it to the second serial port and stops at the end marker, which follows the script's
# last output in the pipe: processes the script left running in the background, still holding the pipe,
# do not hold up the end.
echo '$start_marker' >/dev/ttyS1
mkfifo /run/guest-output
awk -v end='$end_marker' '{ print; fflush() } index(\$0, end) == 1 { exit }' </run/guest-output >/dev/ttyS1 &
copier=\$!
{
  sh /guest/script "\$@" </dev/null
  status=\$?
  printf '\n%s%d\n' '$end_marker' "\$status"
} >/run/guest-output 2>&1
wait \$copier
stty -F /dev/ttyS1 raw  # returns once the output has drained (TCSADRAIN)
echo "init: the script exited \$status after \$(cut -d' ' -f1 /proc/uptime) s"
sync
# isa-debug-exit: qemu exits with (value << 1) | 1.
printf "\\\\\$(printf %03o \$((status & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
EOF
chmod 755 "$generated/init" "$generated/guest/script"

initrd="$work/initrd.cpio"
{
  (cd / && printf '%s\0' "${host_entries[@]#/}" | cpio --quiet -o -H newc -R 0:0 --null)
  (cd "$generated" && find . -mindepth 1 -print0 | cpio --quiet -o -H newc -R 0:0 --null)
} > "$initrd"
built=$EPOCHREALTIME

# --- Boot. ---
console="$work/console.log"
output="$work/output.log"
status=0
timeout --kill-after=10 "$timeout_seconds" qemu-system-x86_64 \
  -accel tcg -cpu max -smp "$cpus" -m "$memory" \
  -nodefaults -display none -no-reboot \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 mitigations=off $append" \
  -serial "file:$console" -serial "file:$output" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!
wait "$qemu_pid" || status=$?
qemu_pid=""
finished=$EPOCHREALTIME

kernel_log_tail() {
  echo "--- last lines of the guest's kernel log ---" >&2
  tr -d '\r' < "$console" 2>/dev/null | tail -n 40 >&2 || true
  [ ! -s "$work/qemu.log" ] || { echo "--- qemu ---" >&2; tail -n 10 "$work/qemu.log" >&2; }
}

exit_file="$work/exit"
touch "$output"
awk -v start="$start_marker" -v end="$end_marker" -v exit_file="$exit_file" '
  { sub(/\r$/, "") }
  $0 == start { inside = 1; lines = 0; print "started" > exit_file; next }
  inside && index($0, end) == 1 { print substr($0, length(end) + 1) > exit_file; inside = 0; next }
  inside { if (lines++) printf "\n"; printf "%s", $0 }
  END { if (inside && lines) printf "\n" }
' "$output"

if [ $verbose = 1 ]; then
  tr -d '\r' < "$console" >&2 || true
  booted=$(tr -d '\r' < "$console" | sed -n 's/^init: running the script after \(.*\) s$/\1/p')
  awk -v b="$started" -v i="$built" -v f="$finished" -v size="$(stat -c %s "$initrd")" -v booted="${booted:-?}" 'BEGIN {
    printf "run-in-guest: initramfs %.0f MB built in %.1f s; the guest reached the script after %s s of uptime; qemu ran %.1f s\n",
      size / 1e6, i - b, booted, f - i }' >&2
fi

result=$(cat "$exit_file" 2>/dev/null || true)
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  case $result in
    started*) echo "run-in-guest: timed out after $timeout_seconds s while the script ran" >&2 ;;
    *) echo "run-in-guest: timed out after $timeout_seconds s before the guest reached the script" >&2 ;;
  esac
  kernel_log_tail
  exit 124
fi
panic=$(tr -d '\r' < "$console" | grep -m 1 -o 'Kernel panic - .*' || true)
case $result in
  started*[0-9]) exit "${result##*$'\n'}" ;;
  started*) echo "run-in-guest: the guest stopped while the script ran (${panic:-qemu exited $status})" >&2 ;;
  *) echo "run-in-guest: the guest never reached the script (${panic:-qemu exited $status})" >&2 ;;
esac
kernel_log_tail
exit 125
