#!/usr/bin/env bash
# Builds the guest assets the tests boot, from Debian packages, into target/assets/
# (cached: nothing is fetched again once there). Nothing here is committed.
#   vmlinuz      a stock Debian cloud kernel (apt-get download + dpkg -x, no install)
#   initrd.img   a tiny initramfs: busybox-static as /bin/sh and /init
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${VMDESK_ASSETS:-$root/target/assets}
mkdir -p "$out"
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
cd "$work"

if [[ ! -s $out/vmlinuz ]]; then
  # The metapackage names the current kernel package; download that one only.
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $pkg ]] || { echo "test-assets: cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
  echo "test-assets: fetching $pkg" >&2
  apt-get download -q "$pkg" >/dev/null
  dpkg -x ./*.deb kernel
  cp kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
  rm -rf kernel ./*.deb
fi

if [[ ! -s $out/initrd.img ]]; then
  echo "test-assets: building initrd.img from busybox-static" >&2
  apt-get download -q busybox-static >/dev/null
  dpkg -x ./busybox-static_*.deb bb
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
ls -l "$out"
