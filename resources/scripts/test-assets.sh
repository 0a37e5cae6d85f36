#!/usr/bin/env bash
# Builds the guest assets the tests boot, from Debian packages, into target/assets/
# (cached: nothing is fetched again once there). Nothing here is committed.
#   vmlinuz              a stock Debian cloud kernel (apt-get download + dpkg -x, no install)
#   initrd.img           a tiny initramfs: busybox-static as /bin/sh and /init
#   storage-initrd.img   busybox plus that kernel's storage modules (ata_piix, sr_mod, cdrom,
#                        isofs, virtio_pci, virtio_blk and what they need; ext4, which also
#                        mounts ext2, is built in) and an /init that reads the CD and writes
#                        a filesystem on the virtio disk (vmm/tests/storage_linux.rs)
#   input-initrd.img     busybox plus that kernel's input modules (virtio_pci, virtio_input,
#                        evdev; i8042 and atkbd are built in; the cloud kernel has no PS/2
#                        mouse driver, no DRM and no vesafb/simplefb) and an /init that
#                        reports the input devices and the framebuffer, draws on the screen
#                        through /dev/mem (busybox devmem), and prints the key and tablet
#                        events it reads (vmm/tests/display_linux.rs)
# The module initrds' modules must match vmlinuz exactly, so all are written from the
# same kernel package whenever one of them is built.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${VMDESK_ASSETS:-$root/target/assets}
mkdir -p "$out"
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
cd "$work"

# The kernel package, unpacked into ./kernel, once per run.
fetch_kernel() {
  [[ -d kernel ]] && return
  # The metapackage names the current kernel package; download that one only.
  local pkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $pkg ]] || { echo "test-assets: cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
  echo "test-assets: fetching $pkg" >&2
  apt-get download -q "$pkg" >/dev/null
  dpkg -x ./linux-image-*.deb kernel
  rm -f ./linux-image-*.deb
}

# busybox-static, unpacked into ./bb, once per run.
fetch_busybox() {
  [[ -d bb ]] && return
  apt-get download -q busybox-static >/dev/null
  dpkg -x ./busybox-static_*.deb bb
  rm -f ./busybox-static_*.deb
}

# An initrd made by an older version of this script (their /init scripts are written here)
# is stale: make it again.
for f in initrd.img storage-initrd.img input-initrd.img; do
  if [[ -e $out/$f && $out/$f -ot $root/resources/scripts/test-assets.sh ]]; then
    echo "test-assets: $f is older than this script; rebuilding it" >&2
    rm -f "$out/$f"
  fi
done

# A module initrd is only good for the vmlinuz beside it: when any of them is missing the
# kernel is written again from the current package and every module initrd is rebuilt.
if [[ ! -s $out/vmlinuz || ! -s $out/storage-initrd.img || ! -s $out/input-initrd.img ]]; then
  fetch_kernel
  cp kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
  rm -f "$out/storage-initrd.img" "$out/input-initrd.img"
fi

if [[ ! -s $out/initrd.img ]]; then
  echo "test-assets: building initrd.img from busybox-static" >&2
  fetch_busybox
  mkdir -p rootfs/bin rootfs/dev rootfs/proc rootfs/sys
  cp bb/bin/busybox rootfs/bin/busybox
  ln -s busybox rootfs/bin/sh
  cat > rootfs/init <<'INIT'
#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "vmdesk-initrd: up"
/bin/busybox poweroff -f
INIT
  chmod +x rootfs/init
  (cd rootfs && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img.tmp"
  mv "$out/initrd.img.tmp" "$out/initrd.img"
fi
# Writes busybox and the kernel's modules $2... into the root tree $1: each module after
# everything it depends on, decompressed, in $1/lib/modules/order (one file name a line,
# the order /init loads them), and the kernel release in $1/lib/modules/kernel-release.
# A module built into the kernel (modules.builtin) is fine and needs no file; one that is
# neither is an error.
modules_rootfs() {
  local rootdir=$1 m f
  shift
  fetch_kernel
  fetch_busybox
  local kver moddir
  kver=$(ls kernel/lib/modules)
  moddir=kernel/lib/modules/$kver
  # Which file is which module ('-' and '_' are the same in module names).
  local -A file_of=() seen=()
  while IFS= read -r f; do
    m=$(basename "$f"); m=${m%%.ko*}; m=${m//-/_}
    file_of[$m]=$f
  done < <(find "$moddir" -name '*.ko*')
  # Dependencies first: each module's .modinfo names them ("depends=a,b"); there is no
  # modules.dep in the package (depmod makes it at install time).
  local order=()
  add() {
    local m=$1 f deps d
    [[ -n ${seen[$m]:-} ]] && return
    seen[$m]=1
    f=${file_of[$m]:-}
    if [[ -z $f ]]; then
      grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null \
        || { echo "test-assets: module $m is neither in $kver's package nor built in" >&2; exit 1; }
      return  # built in: nothing to load
    fi
    deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p')
    for d in ${deps//,/ }; do add "${d//-/_}"; done
    order+=("$m")
  }
  for m in "$@"; do add "$m"; done
  rm -rf "$rootdir"
  mkdir -p "$rootdir"/bin "$rootdir"/dev "$rootdir"/proc "$rootdir"/sys "$rootdir"/lib/modules
  cp bb/bin/busybox "$rootdir"/bin/busybox
  ln -s busybox "$rootdir"/bin/sh
  : > "$rootdir"/lib/modules/order
  for m in "${order[@]}"; do
    f=${file_of[$m]}
    case $f in
      *.ko) cp "$f" "$rootdir/lib/modules/$m.ko" ;;
      *.ko.xz) xz -dc "$f" > "$rootdir/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "$rootdir/lib/modules/$m.ko" ;;
      *.ko.gz) gzip -dc "$f" > "$rootdir/lib/modules/$m.ko" ;;
    esac
    echo "$m.ko" >> "$rootdir"/lib/modules/order
  done
  echo "$kver" > "$rootdir"/lib/modules/kernel-release
}

if [[ ! -s $out/storage-initrd.img ]]; then
  echo "test-assets: building storage-initrd.img (busybox + the kernel's storage modules)" >&2
  modules_rootfs srootfs ata_piix sr_mod cdrom isofs virtio_pci virtio_blk
  cat > srootfs/init <<'INIT'
#!/bin/sh
# vmdesk's storage guest: load the storage modules, checksum every file on the CD
# (/dev/sr0, ata_piix + sr_mod), make an ext2 filesystem on the virtio disk (/dev/vda)
# with one file on it, sync, power off. The test reads the lines starting "vmdesk-storage:"
# on COM1 and then the disk image on the host.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vmdesk-storage: $*"; }
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
say "modules loaded for $(cat /lib/modules/kernel-release)"
# Bench mode (vmdesk.bench=1 on the kernel command line; vmm/benches/virtio_blk_guest.rs):
# time reads and writes of the whole /dev/vda, print one "vmdesk-bench: " line per
# measurement, power off. O_DIRECT (busybox dd iflag=direct / oflag=direct) keeps the
# guest's page cache out of it. Clock: adjtimex's tv_sec/tv_usec (microseconds; busybox
# date has no %N and dd prints no timing). Writes are zeroes (busybox has no faster
# non-zero source); neither VMM looks for zeroes by default.
if grep -qw vmdesk.bench=1 /proc/cmdline; then
  bench() { echo "vmdesk-bench: $*"; }
  now_us() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%.0f\n", s * 1000000 + u }'; }
  for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
  bytes=$(blockdev --getsize64 /dev/vda)
  mib=$((bytes >> 20))
  bench "method o_direct size=$bytes"
  t0=$(now_us); dd if=/dev/vda of=/dev/null bs=1M count=$mib iflag=direct 2>/dev/null; t1=$(now_us)
  bench "seq-read-1m bytes=$((mib << 20)) us=$((t1 - t0))"
  t0=$(now_us); dd if=/dev/zero of=/dev/vda bs=1M count=$mib oflag=direct conv=fsync 2>/dev/null; t1=$(now_us)
  bench "seq-write-1m bytes=$((mib << 20)) us=$((t1 - t0))"
  # Scattered 4 KiB reads: busybox has no tool that reads many offsets in one process,
  # so each read is one dd process. The same loop with count=0 (opens /dev/vda, reads
  # nothing) is timed too: the host subtracts it ("spawn_us"), and what remains is the
  # reads' own time; the method's limit is the noise of that subtraction.
  ops=1000; blocks=$((bytes / 4096)); stride=7919
  t0=$(now_us)
  i=0; while [ $i -lt $ops ]; do
    dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$(((i * stride) % blocks)) iflag=direct 2>/dev/null
    i=$((i + 1))
  done
  t1=$(now_us)
  i=0; while [ $i -lt $ops ]; do
    dd if=/dev/vda of=/dev/null bs=4k count=0 skip=$(((i * stride) % blocks)) iflag=direct 2>/dev/null
    i=$((i + 1))
  done
  t2=$(now_us)
  bench "rand-read-4k ops=$ops us=$((t1 - t0)) spawn_us=$((t2 - t1))"
  bench "done"
  poweroff -f
fi
for i in $(seq 100); do
  [ -b /dev/sr0 ] && [ -b /dev/vda ] && break
  sleep 0.1
done
mkdir -p /cd /disk
if mount -t iso9660 -o ro /dev/sr0 /cd; then
  for f in /cd/*; do
    [ -f "$f" ] && say "cd file $(basename "$f") $(sha256sum < "$f" | cut -d' ' -f1)"
  done
  umount /cd
else
  say "cd mount failed"
fi
if mke2fs -L vmdesk /dev/vda >/dev/null && mount -t ext2 /dev/vda /disk; then
  echo "written by vmdesk's Linux guest" > /disk/hello.txt
  sync
  umount /disk
  sync
  say "disk written"
else
  say "disk failed"
fi
say "done"
poweroff -f
INIT
  chmod +x srootfs/init
  (cd srootfs && find . | cpio -o -H newc --quiet | gzip -9) > "$out/storage-initrd.img.tmp"
  mv "$out/storage-initrd.img.tmp" "$out/storage-initrd.img"
fi
if [[ ! -s $out/input-initrd.img ]]; then
  echo "test-assets: building input-initrd.img (busybox + the kernel's input modules)" >&2
  # atkbd and i8042 are built into the cloud kernel (named to check that they still are);
  # it has no psmouse (CONFIG_INPUT_MOUSE is off), so the mouse stays a bare serio port.
  modules_rootfs irootfs i8042 atkbd evdev virtio_pci virtio_input
  cat > irootfs/init <<'INIT'
#!/bin/sh
# vmdesk's input/display guest: load the input modules, report every input device
# (/proc/bus/input/devices), the serio ports, the framebuffer devices and the VGA's
# framebuffer BAR, draw a white band over the top 8 rows of the 1024x768x32 screen the
# direct boot left (through /dev/mem: this kernel has no DRM and no driver for the
# vesa-framebuffer that screen_info describes), then print every event the keyboard and
# the tablet deliver until both a key and a tablet position came (or 90 s), and power
# off. The test reads the lines starting "vmdesk-input: " on COM1.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vmdesk-input: $*"; }
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
say "modules loaded for $(cat /lib/modules/kernel-release)"
# The event node of the input device named $1 (its "H: Handlers=... eventN" line).
event_of() {
  awk -v want="N: Name=\"$1\"" '
    $0 == want { hit = 1 }
    hit && sub(/^H: Handlers=/, "") { for (i = 1; i <= NF; i++) if ($i ~ /^event/) { print $i; exit } }
    /^$/ { hit = 0 }' /proc/bus/input/devices
}
kbd=; tab=
for i in $(seq 100); do
  kbd=$(event_of "AT Translated Set 2 keyboard")
  tab=$(event_of "vmdesk tablet")
  [ -n "$kbd" ] && [ -n "$tab" ] && [ -c "/dev/input/$kbd" ] && [ -c "/dev/input/$tab" ] && break
  sleep 0.1
done
sed -n 's/^N: Name="\(.*\)"$/\1/p' /proc/bus/input/devices | while read -r n; do
  say "input device $n"
done
say "keyboard ${kbd:-none} tablet ${tab:-none}"
for d in /sys/bus/serio/devices/*; do
  [ -e "$d" ] && say "serio $(basename "$d") $(cat "$d/description") driver $(basename "$(readlink "$d/driver")")"
done
for d in /sys/class/graphics/fb[0-9]* /sys/class/drm/card[0-9]*; do
  [ -e "$d" ] && say "framebuffer $(basename "$d") $(cat "$d/virtual_size" "$d/modes" 2>/dev/null | tr '\n' ' ')"
done
for d in /sys/bus/platform/devices/*framebuffer*; do
  [ -e "$d" ] && say "sysfb $(basename "$d") driver $(basename "$(readlink "$d/driver")")"
done
fb=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x030000 ] || continue
  fb=$(head -n1 "$d/resource" | cut -d' ' -f1)
  say "vga $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") bar0 $fb"
done
# 8 rows of 1024 32-bit pixels, 64 bits a write: /dev/mem's read and write stop at the end
# of RAM on x86, only mmap (busybox devmem) reaches a PCI BAR.
drawn=0
if [ -n "$fb" ]; then
  a=$((fb)); end=$((fb + 8 * 4096))
  while [ $a -lt $end ] && devmem $a 64 0xffffffffffffffff; do a=$((a + 8)); done
  [ $a -eq $end ] && drawn=1
fi
if [ $drawn = 1 ]; then say "drew 8 white rows"; else say "draw failed"; fi
: > /events
# One input_event (24 bytes on x86-64: time, type, code, value) at a time from an open
# node: "type T code C value V" (the value's low 16 bits, all a key or an axis needs).
watch() {
  exec 3< "/dev/input/$2"
  while dd bs=24 count=1 <&3 2>/dev/null | od -An -v -tu2 -w24 \
      | { read -r s0 s1 s2 s3 u0 u1 u2 u3 t c v vh && [ -n "$t" ] \
          && say "$1 event type $t code $c value $v" && echo "$1 $t $c" >> /events; }; do
    :
  done
}
[ -n "$kbd" ] && watch keyboard "$kbd" &
[ -n "$tab" ] && watch tablet "$tab" &
say "ready for input"
for i in $(seq 900); do
  grep -q "^keyboard 1 " /events && grep -q "^tablet 3 " /events && break
  sleep 0.1
done
sleep 2  # what the same client sent right after (the test's second pointer position)
say "done"
poweroff -f
INIT
  chmod +x irootfs/init
  (cd irootfs && find . | cpio -o -H newc --quiet | gzip -9) > "$out/input-initrd.img.tmp"
  mv "$out/input-initrd.img.tmp" "$out/input-initrd.img"
fi
ls -l "$out"
