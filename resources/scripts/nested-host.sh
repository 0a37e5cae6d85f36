#!/usr/bin/env bash
# The nested test host: runs one command where KVM is hardware-backed, on a machine whose
# own KVM is not (kvm_pvm cannot run guest kernels).
#
#   nested-host.sh [--memory MIB] [--cpus N] [--timeout SECONDS] [--keep DIR] -- CMD [ARG...]
#
# It boots QEMU's TCG with `-cpu max` (which emulates AMD SVM with nested paging) on
# Debian's generic kernel; its /init (test-assets.sh builds nested-initrd.img) loads kvm_amd,
# takes this machine's root read-only over virtio-9p with a tmpfs overlay on top (so
# binaries, test assets, the Python venv, QEMU and X tools run inside unchanged, and what
# the command writes is thrown away), and runs CMD there as root in the current directory
# with this environment. The share, a fresh directory at the same path on both sides, is
# the one place whose writes come back: its path is in $VMDESK_NESTED_SHARE inside; with
# --keep DIR the share is DIR and is kept, otherwise it is removed afterwards.
#
# CMD's standard output and error come out on this script's standard output as they are
# written; the exit status is CMD's. When CMD cannot finish (the outer guest died, the
# kernel panicked or one of its CPUs was stuck for a minute, or its heartbeat stopped for
# two minutes, --timeout passed: default
# 900 s), the last lines of the outer guest's console go to standard error and the status
# is 125 (or 124 for the timeout). Only one
# nested host runs at a time on a machine (TCG wants both cores): a second waits for the
# first (up to --timeout as well).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
assets=${VMDESK_ASSETS:-$root/target/assets}
memory=4096 cpus=4 timeout=900 keep=
while (($#)); do
  case $1 in
    --memory) memory=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "nested-host: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
(($#)) || { echo "nested-host: no command given (nested-host.sh -- CMD ARGS...)" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null \
  || { echo "nested-host: qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (or resources/scripts/install-deps.sh test)" >&2; exit 2; }
for f in vmlinuz-generic nested-initrd.img; do
  [[ -s $assets/$f ]] || { echo "nested-host: $assets/$f is missing: run resources/scripts/test-assets.sh" >&2; exit 2; }
done

# The outer QEMU runs with tcg-bql-shim.c preloaded (why: see that file), built here into
# the assets folder when missing or older than its source.
shim_src=$root/resources/scripts/nested-host/tcg-bql-shim.c
shim=$assets/nested-tcg-shim.so
if [[ ! -s $shim || $shim_src -nt $shim ]]; then
  command -v gcc >/dev/null || { echo "nested-host: gcc is missing (apt-get install gcc), needed for $shim" >&2; exit 2; }
  # Tests start several nested hosts at once (they queue on the lock below), so each
  # builds into its own file and renames it into place: the rename is atomic.
  shim_tmp=$(mktemp "$shim.XXXXXX")
  gcc -shared -fPIC -O2 -Wall -o "$shim_tmp" "$shim_src" -ldl && mv -f "$shim_tmp" "$shim" \
    || { rm -f "$shim_tmp"; echo "nested-host: cannot build $shim from $shim_src" >&2; exit 2; }
fi

if [[ -n $keep ]]; then
  mkdir -p "$keep"
  share=$(cd "$keep" && pwd)
  rm -f "$share/status" "$share/cmd.sh"
else
  share=$(mktemp -d "${TMPDIR:-/tmp}/vmdesk-nested.XXXXXX")
fi
state=$(mktemp -d "${TMPDIR:-/tmp}/vmdesk-nested-run.XXXXXX")
qemu_pid=
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$state"
  [[ -n $keep ]] || rm -rf "$share"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command, in the current directory and with this environment (less what only makes
# sense out here: the X display, the terminal, the test tally file).
{
  export -p | grep -v -E '^declare -x (DISPLAY|XAUTHORITY|WAYLAND_DISPLAY|TERM|VMDESK_KVM_TALLY|SSH_[A-Z_]*|OLDPWD)='
  echo "export VMDESK_NESTED=1 VMDESK_NESTED_SHARE=$(printf %q "$share")"
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  echo
} > "$share/cmd.sh"

# One nested host at a time: each one's TCG takes both cores.
lock=${TMPDIR:-/tmp}/vmdesk-nested-host.lock
exec 9> "$lock"
flock -w "$timeout" 9 || { echo "nested-host: another nested host held $lock for ${timeout}s" >&2; exit 124; }

start=$(date +%s)
: > "$state/out"
LD_PRELOAD=$shim qemu-system-x86_64 -accel tcg,thread=multi -cpu max -M pc -m "$memory" -smp "$cpus" \
  -display none -monitor none -no-reboot -nodefaults -nic none \
  -kernel "$assets/vmlinuz-generic" -initrd "$assets/nested-initrd.img" \
  -append "console=ttyS0 loglevel=5 panic=-1 vmdesk.share=$share" \
  -serial "file:$state/console.log" \
  -chardev "file,id=cmdout,path=$state/out,append=on" -serial chardev:cmdout \
  -serial "file:$state/heartbeat" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev local,id=share,path="$share",security_model=none,multidevs=remap \
  -device virtio-9p-pci,fsdev=share,mount_tag=share \
  < /dev/null > "$state/qemu.log" 2>&1 &
qemu_pid=$!

# CMD's output as it comes; the wait is bounded by --timeout.
tail -c +1 -f --pid="$qemu_pid" "$state/out" 2>/dev/null &
tail_pid=$!
timed_out= stuck= last_beat=0 last_beat_at=$start
while kill -0 "$qemu_pid" 2>/dev/null; do
  if (($(date +%s) - start >= timeout)); then
    timed_out=1
    kill "$qemu_pid" 2>/dev/null || true
    break
  fi
  # A CPU of the outer guest's kernel stuck for a minute does not come back (its watchdog
  # reports every ~20 s while it lasts), nor does a kernel whose heartbeat (a line every
  # 5 s on ttyS2 once the command runs) stopped for two minutes: stop now rather than at
  # --timeout. (At one minute, 3 of 4 install_disk runs on 2026-12-07 were stopped with
  # no soft-lockup report on the console: whether such gaps end by themselves is not
  # known; two minutes lets one that does.)
  beat=$(stat -c %s "$state/heartbeat" 2>/dev/null || echo 0)
  if ((beat != last_beat)); then
    last_beat=$beat last_beat_at=$(date +%s)
  fi
  if grep -Eqs 'soft lockup - CPU#[0-9]+ stuck for ([6-9][0-9]|[0-9]{3,})s' "$state/console.log" \
     || ((beat > 0 && $(date +%s) - last_beat_at >= 120)); then
    stuck=1
    kill "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
wait "$tail_pid" 2>/dev/null || true
echo "nested-host: $(($(date +%s) - start)) s in the nested host" >&2

if [[ -n $stuck ]]; then
  echo "nested-host: a CPU of the outer guest's kernel has been stuck for over a minute (a soft lockup, or no heartbeat); its console:" >&2
  grep -v '^ *$' "$state/console.log" | tail -n 80 | sed 's/^/  | /' >&2
  exit 125
fi
if [[ -n $timed_out ]]; then
  echo "nested-host: the command had not ended after ${timeout}s; the outer guest's console ends:" >&2
  tail -n 30 "$state/console.log" | sed 's/^/  | /' >&2
  exit 124
fi
if [[ ! -s $share/status ]]; then
  echo "nested-host: the outer guest ended before the command did; its console ends:" >&2
  tail -n 30 "$state/console.log" | sed 's/^/  | /' >&2
  sed 's/^/  qemu: /' "$state/qemu.log" >&2
  exit 125
fi
exit "$(cat "$share/status")"
