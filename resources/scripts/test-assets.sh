#!/usr/bin/env bash
# Builds the guest assets the tests boot, from Debian packages, into target/assets/
# (cached: nothing is fetched again once there). Nothing here is committed.
#   vmlinuz              a stock Debian cloud kernel (apt-get download + dpkg -x, no install)
#   initrd.img           a tiny initramfs: busybox-static as /bin/sh and /init
#   storage-initrd.img   busybox plus that kernel's storage modules (ata_piix, sr_mod, cdrom,
#                        isofs, virtio_pci, virtio_blk and what they need; ext4, which also
#                        mounts ext2, is built in) and an /init that reads the CD and writes
#                        a filesystem on the virtio disk (vmm/tests/storage_linux.rs)
# The storage initrd's modules must match vmlinuz exactly, so both are written from the
# same kernel package whenever the storage initrd is built.
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

if [[ ! -s $out/vmlinuz || ! -s $out/storage-initrd.img ]]; then
  fetch_kernel
  cp kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
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
if [[ ! -s $out/storage-initrd.img ]]; then
  echo "test-assets: building storage-initrd.img (busybox + the kernel's storage modules)" >&2
  fetch_kernel
  fetch_busybox
  kver=$(ls kernel/lib/modules)
  moddir=kernel/lib/modules/$kver
  # Which file is which module ('-' and '_' are the same in module names).
  declare -A file_of
  while IFS= read -r f; do
    name=$(basename "$f"); name=${name%%.ko*}; name=${name//-/_}
    file_of[$name]=$f
  done < <(find "$moddir" -name '*.ko*')
  # Dependencies first: each module's .modinfo names them ("depends=a,b"); there is no
  # modules.dep in the package (depmod makes it at install time).
  declare -A seen
  order=()
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
  for m in ata_piix sr_mod cdrom isofs virtio_pci virtio_blk; do add "$m"; done
  rm -rf srootfs
  mkdir -p srootfs/bin srootfs/dev srootfs/proc srootfs/sys srootfs/lib/modules
  cp bb/bin/busybox srootfs/bin/busybox
  ln -s busybox srootfs/bin/sh
  for m in "${order[@]}"; do
    f=${file_of[$m]}
    case $f in
      *.ko) cp "$f" "srootfs/lib/modules/$m.ko" ;;
      *.ko.xz) xz -dc "$f" > "srootfs/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "srootfs/lib/modules/$m.ko" ;;
      *.ko.gz) gzip -dc "$f" > "srootfs/lib/modules/$m.ko" ;;
    esac
    echo "$m.ko" >> srootfs/lib/modules/order
  done
  echo "$kver" > srootfs/lib/modules/kernel-release
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
ls -l "$out"
