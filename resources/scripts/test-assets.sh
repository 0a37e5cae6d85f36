#!/usr/bin/env bash
# Builds the guest assets the tests boot, from Debian packages, into target/assets/
# (cached: nothing is fetched again once there). Nothing here is committed.
#   vmlinuz              a stock Debian cloud kernel (linux-image-cloud-amd64)
#   initrd.img           a tiny initramfs: busybox-static as /bin/sh and /init, which says
#                        it is up and the boot CPU's /proc/cpuinfo flags, and powers off
#   storage-initrd.img   busybox plus the cloud kernel's storage modules (ata_piix, sr_mod,
#                        cdrom, isofs, virtio_pci, virtio_blk, virtio_net and what they need;
#                        ext4, which also mounts ext2, is built in) and an /init that reads
#                        the CD and writes a filesystem on the virtio disk, or lists the
#                        virtio interrupts and verifies a large file (vmm/tests/storage_linux.rs)
#   storage-bench-initrd.img  the same with Debian's fio and every library it loads (fio is
#                        linked against all its engines' libraries: 62 files, 80 MB, 33 MB
#                        packed): vmdesk.bench=1 runs fio's jobs on /dev/vda
#                        (vmm/benches/virtio_blk_guest.rs)
#   vmlinuz-generic      the stock generic Debian kernel (linux-image-amd64): the cloud one
#                        has no DRM and no PS/2 mouse driver
#   display-initrd.img   busybox plus the generic kernel's display and input modules (bochs
#                        with drm, drm_kms_helper, ttm, drm_ttm_helper, drm_vram_helper;
#                        psmouse; virtio_pci, virtio_input, evdev; i8042, atkbd and vesafb are
#                        built in) and an /init that reports the DRM card, its connector and
#                        modes, fb0 (DRM fbdev emulation), the input devices and serio ports,
#                        draws on the screen through /dev/fb0, and prints the key, tablet and
#                        PS/2 mouse events it reads (vmm/tests/display_linux.rs)
#   agent-initrd.img     busybox plus the cloud kernel's virtio_pci and virtio_console, and an
#                        /init that finds the virtio-serial port com.redhat.spice.0 and plays
#                        the SPICE agent's clipboard part on it with prepared messages
#                        (vmm/tests/agent_linux.rs)
#   machine-initrd.img   busybox plus the cloud kernel's virtio_pci and virtio_blk, and an
#                        /init that does one of three things, by the kernel command line's
#                        vmdesk.test=: report the CPUs, the MADT, the SMP lines and the
#                        interrupt counts (cpus); count its boots on the virtio disk and
#                        reboot through the keyboard controller, then the ACPI reset register,
#                        then power off (reboot); spin on every CPU between two keys (spin)
#                        (vmm/tests/linux_machine.rs)
#   install-initrd.img   busybox plus the cloud kernel's virtio_pci, virtio_blk, ata_piix,
#                        sd_mod, sr_mod and isofs, Debian's extlinux (with its mbr.bin, and
#                        the ld.so and libc.so.6 it is linked against, from libc6), and an
#                        /init that is either an installer (vmdesk.mode=install: partition
#                        the first disk, make an ext2 filesystem, copy the CD's kernel and
#                        this initrd to it, install extlinux and its MBR, power off) or the
#                        installed system (vmdesk.mode=installed: mount that filesystem,
#                        say what the installer left there, power off)
#                        (app/tests/install_disk.rs, vmm/benches/install_cycle.rs)
#   net-initrd.img       busybox plus the cloud kernel's virtio_pci and virtio_net (with
#                        net_failover and failover), a udhcpc script, and an /init that
#                        reports eth0 and does one network test by the kernel command line's
#                        vmdesk.test=: a DHCP lease, an HTTP fetch from the host's loopback
#                        through the router's address, a TCP upload received through a port
#                        forward, a fetch over a TAP device with a static address, or idling
#                        (vmm/tests/net_linux.rs)
#   net-bench-initrd.img the same with Debian's iperf3 and the libraries it loads
#                        (debian_program: unpacked from iperf3 and its library packages):
#                        vmdesk.test=bench runs an iperf3 client and server and a TCP echo
#                        server (vmm/benches/net_throughput.rs)
#   efi-initrd.img       busybox plus the cloud kernel's efivarfs, virtio_pci and virtio_blk,
#                        and an /init that says whether UEFI firmware started the kernel,
#                        reads (and at the first boot on a fresh variable store creates) a
#                        non-volatile test variable through efivarfs, lists the virtio
#                        interrupts, names the ACPI tables and says whether SMBIOS
#                        tables came, and powers off
#   efi-disk.img         a raw disk with a GPT and an EFI system partition holding GRUB as
#                        \EFI\BOOT\BOOTX64.EFI (grub-mkstandalone), the cloud kernel and
#                        efi-initrd.img, which GRUB boots at once (console=ttyS0)
#   grub-efi.iso         GRUB's rescue CD for UEFI only (grub-mkrescue): a menu, "vmdesk UEFI
#                        GRUB test" and "Power off", that waits for a key
#   isolinux/            isolinux.bin and ldlinux.c32 from Debian's isolinux and
#                        syslinux-common (unpacked, not installed): the CD boot loader of
#                        linux_machine.rs's reboot test, whose ISO is made at test time
#   debian-installer-gtk.iso  Debian 12's graphical installer (debian-installer-12-netboot-
#                        amd64's gtk kernel, initrd and boot menu) as a CD booted by isolinux,
#                        and under UEFI by GRUB (a second El Torito image, for EFI), laid out
#                        as the official images are (app/tests/graphical_install.rs)
#   vmlinuz-installer    that CD's kernel, for vmm/tests/linux_boot_log.rs
#   spice-vdagent/       the SPICE guest agent (Debian's spice-vdagent, unpacked, not
#                        installed: its daemon spice-vdagentd and X11 session agent
#                        spice-vdagent), which vmm/tests/guest_agent.rs runs on this host
#                        against our end of the agent protocol
#   novnc/               noVNC (@novnc/novnc) and puppeteer-core from the npm registry, at
#                        pinned versions, for display/tests/novnc.rs (novnc-assets.sh)
# Why two kernels: the generic package is 2.6 times the download of the cloud one (70 MB
# against 27 MB for 6.1.0-56) and its image boots a busybox initrd in 10.4 s against 6.6 s
# under QEMU TCG (more built-in drivers probe); its ext4 is a module too. Only the display
# test needs what the generic kernel has, so only it pays for it.
# Of each package only the image, modules.builtin and the modules an initrd needs are
# extracted (tar -x --wildcards), so target/ gets those alone. The package's data is
# decompressed once into a plain tar in the temporary work dir (removed on exit: 106 MB for
# cloud, 411 MB for generic), because the modules' dependencies are only known from the
# modules themselves (.modinfo; the package has no modules.dep) and so need a pass per
# level: on a plain file tar seeks past what it skips (a pass takes 0.1 s), while every
# pass through `dpkg-deb --fsys-tarfile |` decompresses the whole package again (4 s for
# generic). Measured on the 2-core dev machine (shared, so noisy): the script took 17-28 s
# with only the cloud kernel and 38 s with both; the generic package's own share is 3 s to
# download its 70.5 MB and 8 s to decompress it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${VMDESK_ASSETS:-$root/target/assets}
mkdir -p "$out"
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
cd "$work"

# The package of kernel flavour $1 (cloud or generic), downloaded once per run into
# ./deb-$1/ and decompressed into ./kernel-$1.tar, with its image and modules.builtin
# unpacked into ./kernel-$1/.
fetch_kernel() {
  local flavour=$1 meta pkg
  [[ -d kernel-$flavour ]] && return
  case $flavour in
    cloud) meta=linux-image-cloud-amd64 ;;
    generic) meta=linux-image-amd64 ;;
    *) echo "test-assets: no kernel flavour $flavour" >&2; exit 1 ;;
  esac
  # The metapackage names the current kernel package; download that one only.
  pkg=$(apt-cache depends "$meta" 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $pkg ]] || { echo "test-assets: cannot resolve $meta (apt-get update?)" >&2; exit 1; }
  echo "test-assets: fetching $pkg" >&2
  mkdir -p "deb-$flavour" "kernel-$flavour"
  chmod 755 "deb-$flavour"
  (cd "deb-$flavour" && apt-get download -q "$pkg" >/dev/null)
  dpkg-deb --fsys-tarfile "deb-$flavour"/*.deb > "kernel-$flavour.tar"
  rm -rf "deb-$flavour"
  kernel_extract "$flavour" './boot/vmlinuz-*' './lib/modules/*/modules.builtin'
}

# Extracts the members matching the patterns $2... from flavour $1's package into
# ./kernel-$1/. A pattern that matches nothing is not an error here (the callers check
# what they need): tar's "Not found in archive" lines are dropped.
kernel_extract() {
  local flavour=$1 rc=0
  shift
  tar -x -f "kernel-$flavour.tar" -C "kernel-$flavour" --wildcards "$@" 2> tar.err || rc=$?
  grep -v -e 'Not found in archive' -e 'Exiting with failure' tar.err >&2 || true
  # 2: some pattern matched nothing; anything else is a real failure.
  [[ $rc -eq 0 || $rc -eq 2 ]] || { echo "test-assets: extracting from $flavour failed" >&2; exit 1; }
}

# An initrd made by an older version of this script (their /init scripts are written here)
# is stale: make it again; so are the UEFI disk and GRUB CD (their GRUB configurations are
# written here too). input-initrd.img was the display test's initrd from the cloud
# kernel (display-initrd.img replaces it).
rm -f "$out/input-initrd.img"
for f in initrd.img storage-initrd.img storage-bench-initrd.img display-initrd.img \
         agent-initrd.img nested-initrd.img machine-initrd.img install-initrd.img \
         net-initrd.img net-bench-initrd.img efi-initrd.img efi-disk.img grub-efi.iso; do
  if [[ -e $out/$f && $out/$f -ot $root/resources/scripts/test-assets.sh ]]; then
    echo "test-assets: $f is older than this script; rebuilding it" >&2
    rm -f "$out/$f"
  fi
done

# A module initrd is only good for the kernel image beside it: when either is missing the
# image is written again from the current package and its module initrd is rebuilt.
# $1 flavour, $2 image name, $3... its module initrds' names.
refresh_kernel() {
  local flavour=$1 image=$2 initrd stale=
  shift 2
  [[ -s $out/$image ]] || stale=1
  for initrd in "$@"; do [[ -s $out/$initrd ]] || stale=1; done
  if [[ -n $stale ]]; then
    fetch_kernel "$flavour"
    cp "kernel-$flavour"/boot/vmlinuz-* "$out/$image.tmp"
    mv "$out/$image.tmp" "$out/$image"
    for initrd in "$@"; do rm -f "$out/$initrd"; done
  fi
}
refresh_kernel cloud vmlinuz storage-initrd.img storage-bench-initrd.img agent-initrd.img \
  machine-initrd.img install-initrd.img net-initrd.img net-bench-initrd.img efi-initrd.img
refresh_kernel generic vmlinuz-generic display-initrd.img nested-initrd.img

# busybox-static, unpacked into ./bb, once per run.
fetch_busybox() {
  [[ -d bb ]] && return
  apt-get download -q busybox-static >/dev/null
  dpkg -x ./busybox-static_*.deb bb
  rm -f ./busybox-static_*.deb
}

# Packs the root tree $1 (its /init made executable) as the gzip'd cpio initrd $out/$2,
# written whole or not at all.
pack_initrd() {
  chmod +x "$1/init"
  (cd "$1" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/$2.tmp"
  mv "$out/$2.tmp" "$out/$2"
}

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
# The kernel's messages off the console first, so none lands inside the flags line.
/bin/busybox dmesg -n 1
echo "vmdesk-initrd: $(/bin/busybox grep -m1 '^flags' /proc/cpuinfo)"
/bin/busybox poweroff -f
INIT
  pack_initrd rootfs initrd.img
fi
# Writes busybox and kernel flavour $2's modules $3... into the root tree $1: each module
# after everything it depends on, decompressed, in $1/lib/modules/order (one file name a
# line, the order /init loads them), and the kernel release in $1/lib/modules/kernel-release.
# A module built into the kernel (modules.builtin) is fine and needs no file; one that is
# neither is an error. The package has no modules.dep (depmod makes it at install time), so
# the dependencies come from each module's .modinfo ("depends=a,b"), and the modules are
# extracted from the package's tar a level of dependencies at a time.
modules_rootfs() {
  local rootdir=$1 flavour=$2 m f
  shift 2
  fetch_kernel "$flavour"
  fetch_busybox
  local kver moddir
  kver=$(ls "kernel-$flavour"/lib/modules)
  moddir=kernel-$flavour/lib/modules/$kver
  # Which file is which module ('-' and '_' are the same in module names). $1...: names.
  local -A file_of=() seen=()
  is_builtin() { grep -Eq "/${1//_/[-_]}\.ko" "$moddir/modules.builtin"; }
  extract() {
    local pats=() m
    for m in "$@"; do pats+=("*/${m//_/[-_]}.ko*"); done
    kernel_extract "$flavour" "${pats[@]}"
    while IFS= read -r f; do
      m=$(basename "$f"); m=${m%%.ko*}; m=${m//-/_}
      file_of[$m]=$f
    done < <(find "$moddir" -name '*.ko*')
  }
  # Every module named and everything they depend on, extracted.
  local want=("$@") missing deps d
  while :; do
    missing=()
    for m in "${want[@]}"; do
      [[ -n ${file_of[$m]:-} ]] || is_builtin "$m" || missing+=("$m")
    done
    [[ ${#missing[@]} -gt 0 ]] || break
    extract "${missing[@]}"
    want=()
    for m in "${missing[@]}"; do
      f=${file_of[$m]:-}
      [[ -n $f ]] || { echo "test-assets: module $m is neither in $kver's package nor built in" >&2; exit 1; }
      deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p')
      for d in ${deps//,/ }; do want+=("${d//-/_}"); done
    done
  done
  # Dependencies first.
  local order=()
  add() {
    local m=$1 f deps d
    [[ -n ${seen[$m]:-} ]] && return
    seen[$m]=1
    f=${file_of[$m]:-}
    [[ -n $f ]] || return 0  # built in: nothing to load
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

# Writes $1/init: busybox's applets, /proc, /sys and /dev mounted, and say() printing its
# arguments after "$2: " on the console (the lines the tests read), then the rest of the
# script from stdin.
write_init() {
  {
    cat <<'PROLOGUE'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
PROLOGUE
    echo "say() { echo \"$2: \$*\"; }"
    cat
  } > "$1/init"
}

# Copies Debian's program $3 (its path in package $2, e.g. /usr/bin/fio) into the root tree
# $1 with every library it loads and the loader, as ldd names them. The package and the
# library packages it depends on, recursively (lib* and zlib1g; programs, Perl and Python
# are left out), are unpacked here, not installed; the package's own loader lists what the
# program loads from them (ld.so --list is ldd), and those files go to
# $1/lib/x86_64-linux-gnu, where the loader looks without a cache, the loader too, with
# /lib64's link to it (the path the program names). A library that none of the packages
# holds is an error, and the program must then run (--version) with the root tree's
# loader and libraries alone.
debian_program() {
  local rootdir=$1 pkg=$2 prog=$3 tree=$PWD/prog-$2 pkgs lib libdirs
  rm -rf "$tree" "$tree-debs"
  mkdir -p "$tree-debs"
  chmod 755 "$tree-debs"
  pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances "$pkg" 2>/dev/null \
         | grep -E '^(lib[a-z0-9.+-]+|zlib1g)$' | grep -v -E -e '-perl$' -e '^lib(python|perl)' \
         | sort -u)
  # shellcheck disable=SC2086  # one package a word
  (cd "$tree-debs" && apt-get download -q "$pkg" $pkgs >/dev/null)
  for deb in "$tree-debs"/*.deb; do dpkg -x "$deb" "$tree"; done
  rm -rf "$tree-debs"
  [[ -x $tree$prog ]] || { echo "test-assets: $pkg has no $prog" >&2; exit 1; }
  local loader=$tree/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  libdirs=$(find "$tree" -name '*.so*' -printf '%h\n' | sort -u | paste -s -d:)
  "$loader" --inhibit-cache --library-path "$libdirs" --list "$tree$prog" > "$tree.ldd" \
    || { echo "test-assets: ldd $prog failed:" >&2; cat "$tree.ldd" >&2; exit 1; }
  if grep -q 'not found' "$tree.ldd"; then
    echo "test-assets: $prog needs libraries none of its packages ($pkg $pkgs) holds:" >&2
    grep 'not found' "$tree.ldd" >&2
    exit 1
  fi
  mkdir -p "$rootdir$(dirname "$prog")" "$rootdir/lib/x86_64-linux-gnu" "$rootdir/lib64"
  cp "$tree$prog" "$rootdir$prog"
  while read -r lib; do
    [[ $lib == "$tree"/* ]] \
      || { echo "test-assets: $prog loads $lib from this machine, not from its packages" >&2; exit 1; }
    cp -L "$lib" "$rootdir/lib/x86_64-linux-gnu/"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' "$tree.ldd")
  cp -L "$loader" "$rootdir/lib/x86_64-linux-gnu/"
  ln -sfn /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rootdir/lib64/ld-linux-x86-64.so.2"
  "$rootdir/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --inhibit-cache \
    --library-path "$rootdir/lib/x86_64-linux-gnu" "$rootdir$prog" --version >/dev/null \
    || { echo "test-assets: $prog does not run with the initrd's own libraries" >&2; exit 1; }
  rm -rf "$tree" "$tree.ldd"
}

if [[ ! -s $out/storage-initrd.img || ! -s $out/storage-bench-initrd.img ]]; then
  echo "test-assets: building storage-initrd.img and storage-bench-initrd.img (busybox + the cloud kernel's storage modules; fio)" >&2
  modules_rootfs srootfs cloud ata_piix sr_mod cdrom isofs virtio_pci virtio_blk virtio_net
  write_init srootfs vmdesk-storage <<'INIT'
# vmdesk's storage guest: load the storage modules, checksum every file on the CD
# (/dev/sr0, ata_piix + sr_mod), make an ext2 filesystem on the virtio disk (/dev/vda)
# with one file on it, sync, power off. The test reads the lines starting "vmdesk-storage:"
# on COM1 and then the disk image on the host.
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
say "modules loaded for $(cat /lib/modules/kernel-release)"
# Bench mode (vmdesk.bench=1 on the kernel command line; vmm/benches/virtio_blk_guest.rs),
# in storage-bench-initrd.img, which has fio: fio's jobs on the whole /dev/vda with O_DIRECT
# (the guest's page cache out of it) and libaio, one job at a time: sequential reads and
# writes of 1 MiB and random reads of 4 KiB, each at queue depth 1 and 16, each for
# vmdesk.bench_secs= seconds (default 5). Around each job "vmdesk-bench: start JOB" and
# "vmdesk-bench: end JOB" (the host reads its counters when it sees them); fio's figures
# come after "end", so printing them on the UART is outside the job: "vmdesk-bench: result
# JOB kib=KIB ms=MS iops=IOPS err=E" (fio's terse fields: KiB moved, its runtime, its IOPS,
# its error number), or "vmdesk-bench: failed JOB: WHY" and power off. Then "done", power off.
if grep -qw vmdesk.bench=1 /proc/cmdline; then
  bench() { echo "vmdesk-bench: $*"; }
  if [ ! -x /usr/bin/fio ]; then
    bench "failed: no fio here (boot storage-bench-initrd.img)"
    poweroff -f
  fi
  secs=$(sed -n 's/.*vmdesk\.bench_secs=\([0-9]*\).*/\1/p' /proc/cmdline)
  secs=${secs:-5}
  for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
  # The kernel's messages off the console, so none lands inside a job or a line.
  dmesg -n 1
  mkdir -p /tmp
  bench "$(/usr/bin/fio --version) size=$(blockdev --getsize64 /dev/vda) secs=$secs cpus=$(grep -c ^processor /proc/cpuinfo)"
  for spec in "seq-read-1m read 1M" "seq-write-1m write 1M" "rand-read-4k randread 4k"; do
    set -- $spec
    for qd in 1 16; do
      job=$1-qd$qd
      bench "start $job"
      /usr/bin/fio --name="$job" --filename=/dev/vda --direct=1 --ioengine=libaio --rw="$2" --bs="$3" \
        --iodepth="$qd" --time_based --runtime="$secs" --output-format=terse --terse-version=3 \
        > /tmp/fio.out 2> /tmp/fio.err
      rc=$?
      bench "end $job"
      # Terse version 3: fields 6-9 are the reads' KiB, KiB/s, IOPS and runtime (ms),
      # 47-50 the writes'; 5 is the error.
      line=$(grep '^3;' /tmp/fio.out)
      if [ $rc -eq 0 ] && [ -n "$line" ]; then
        echo "$line" | awk -F';' -v job="$job" -v w="$([ "$2" = write ] && echo 1)" '{
          o = w ? 41 : 0
          printf "vmdesk-bench: result %s kib=%s ms=%s iops=%s err=%s\n", job, $(6 + o), $(9 + o), $(8 + o), $5
        }'
      else
        bench "failed $job: fio exit $rc: $(cat /tmp/fio.err /tmp/fio.out | head -c 400 | tr '\n' ' ')"
        poweroff -f
      fi
    done
  done
  bench "done"
  poweroff -f
fi
# Verify mode (vmdesk.verify=MIB on the kernel command line; vmm/tests/storage_linux.rs):
# the interrupts each virtio device bound (one MSI-X vector per queue and one for
# configuration changes when the transport offers them), then MIB MiB of random data
# written through an ext2 filesystem on /dev/vda, read back after a remount with the page
# cache dropped, both checksums said.
verify=$(sed -n 's/.*vmdesk\.verify=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$verify" ]; then
  for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
  say "cpus $(grep -c ^processor /proc/cpuinfo)"
  grep virtio /proc/interrupts | while read -r l; do say "irq $l"; done
  mkdir -p /disk
  if mke2fs -L vmdesk /dev/vda >/dev/null && mount -t ext2 /dev/vda /disk; then
    w=$(dd if=/dev/urandom bs=1M count="$verify" 2>/dev/null | tee /disk/data | sha256sum | cut -d' ' -f1)
    umount /disk
    sync
    echo 3 > /proc/sys/vm/drop_caches
    mount -t ext2 /dev/vda /disk
    r=$(sha256sum < /disk/data | cut -d' ' -f1)
    say "verify size $(stat -c %s /disk/data) wrote $w read $r"
    umount /disk
    sync
  else
    say "verify: no filesystem on /dev/vda"
  fi
  say "done"
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
  pack_initrd srootfs storage-initrd.img
  # The same guest with Debian's fio, for the bench mode.
  debian_program srootfs fio /usr/bin/fio
  pack_initrd srootfs storage-bench-initrd.img
fi
if [[ ! -s $out/display-initrd.img ]]; then
  echo "test-assets: building display-initrd.img (busybox + the generic kernel's display and input modules)" >&2
  # i8042 and atkbd are built into the generic kernel (named to check that they still are).
  # bochs names its DRM helpers as dependencies, so they come first in the order.
  modules_rootfs drootfs generic i8042 atkbd evdev psmouse bochs virtio_pci virtio_input
  write_init drootfs vmdesk-input <<'INIT'
# vmdesk's display/input guest (vmm/tests/display_linux.rs). Loads the modules (all but
# virtio_input with vmdesk.mouse=ps2 on the command line: then the virtio tablet never gets
# a driver, the VMM keeps sending the pointer to the PS/2 mouse, and psmouse's events are
# what this guest reads); reports on COM1 the DRM card bochs-drm made, its connector and
# modes, fb0 (the DRM fbdev emulation), every input device and serio port; draws a white
# band over the top 8 rows of fb0 (the rest black); then prints every event the keyboard,
# the tablet and the PS/2 mouse deliver until it has what the test sends (or 90 s), and
# powers off. The test reads the lines starting "vmdesk-input: ".
mode=tablet
grep -qw vmdesk.mouse=ps2 /proc/cmdline && mode=ps2
say "mouse mode $mode"
# What the firmware framebuffer became before bochs-drm takes the screen over (vesafb,
# built in, binds the VESA framebuffer direct boot describes; nothing under SeaBIOS's
# text mode).
for d in /sys/class/graphics/fb[0-9]*; do
  [ -e "$d" ] && say "before bochs $(basename "$d") $(cat "$d/name")"
done
while read -r m; do
  [ "$mode" = ps2 ] && [ "$m" = virtio_input.ko ] && continue
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
say "modules loaded for $(cat /lib/modules/kernel-release)"
# The event node of the input device whose sysfs path matches the pattern $1 (psmouse on
# serio1, the tablet under a virtio device, the keyboard on serio0), from its block in
# /proc/bus/input/devices.
event_at() {
  awk -v want="$1" '
    /^I:/ { hit = 0 }
    /^S: Sysfs=/ && $0 ~ want { hit = 1 }
    hit && sub(/^H: Handlers=/, "") { for (i = 1; i <= NF; i++) if ($i ~ /^event/) { print $i; exit } }' \
    /proc/bus/input/devices
}
# psmouse probes from the serio thread, after insmod returns: wait for it (and for the
# others: evdev makes the nodes).
kbd=; tab=; mouse=
for i in $(seq 300); do
  kbd=$(event_at /serio0/)
  mouse=$(event_at /serio1/)
  tab=$(event_at /virtio)
  card=$(cat /sys/class/drm/card0-Virtual-1/status 2>/dev/null)
  [ -n "$kbd" ] && [ -c "/dev/input/$kbd" ] && [ -n "$mouse" ] && [ -c "/dev/input/$mouse" ] \
    && [ -n "$card" ] && { [ $mode = ps2 ] || { [ -n "$tab" ] && [ -c "/dev/input/$tab" ]; }; } && break
  sleep 0.1
done
sed -n 's/^N: Name="\(.*\)"$/\1/p' /proc/bus/input/devices | while read -r n; do
  say "input device $n"
done
say "keyboard ${kbd:-none} tablet ${tab:-none} mouse ${mouse:-none}"
for d in /sys/bus/serio/devices/*; do
  [ -e "$d" ] && say "serio $(basename "$d") $(cat "$d/description") driver $(basename "$(readlink "$d/driver")")"
done
# The DRM device: which driver bound which PCI function, then each connector.
for d in /sys/class/drm/card[0-9]; do
  [ -e "$d" ] || continue
  p=$(readlink -f "$d/device")
  say "drm $(basename "$d") driver $(basename "$(readlink "$p/driver")") pci $(basename "$p") $(cat "$p/vendor"):$(cat "$p/device")"
done
for d in /sys/class/drm/card[0-9]-*; do
  [ -e "$d" ] && say "connector $(basename "$d") $(cat "$d/status") $(cat "$d/enabled") modes $(head -n 4 "$d/modes" | tr '\n' ' ')"
done
for d in /sys/class/graphics/fb[0-9]*; do
  [ -e "$d" ] && say "fb $(basename "$d") name $(cat "$d/name") virtual_size $(cat "$d/virtual_size") bpp $(cat "$d/bits_per_pixel") stride $(cat "$d/stride")"
done
# fbcon would draw its cursor and text over what we draw: take it off the framebuffer.
for v in /sys/class/vtconsole/vtcon*; do
  grep -q "frame buffer" "$v/name" 2>/dev/null && echo 0 > "$v/bind"
done
# fb0: the top 8 rows white (0xff bytes: busybox tr turns /dev/zero's), the rest black, in
# ONE write(2): the fbdev emulation copies what a write covered from its shadow buffer to
# the VRAM, and 6.1 computes the width of a write within one scanline from its start and end
# offsets within the line, so a write of exactly one whole line (dd bs=stride) covers no
# columns at all and never reaches the screen.
drawn=0
if [ -c /dev/fb0 ]; then
  stride=$(cat /sys/class/graphics/fb0/stride)
  rows=$(cut -d, -f2 /sys/class/graphics/fb0/virtual_size)
  { dd if=/dev/zero bs="$stride" count=8 2>/dev/null | tr '\000' '\377'
    dd if=/dev/zero bs="$stride" count=$((rows - 8)) 2>/dev/null; } > /frame
  [ "$(wc -c < /frame)" -eq $((stride * rows)) ] \
    && dd if=/frame of=/dev/fb0 bs=$((stride * rows)) count=1 2>/dev/null && drawn=1
  rm -f /frame
fi
if [ $drawn = 1 ]; then say "drew 8 white rows on fb0 $(cat /sys/class/graphics/fb0/name)"; else say "draw failed"; fi
: > /events
# One input_event (24 bytes on x86-64: time, type, code, value) at a time from an open
# node: "type T code C value V" (the value's low 16 bits, all a key or an axis needs;
# negative relative motion shows as 65536 - |v|).
watch() {
  exec 3< "/dev/input/$2"
  while dd bs=24 count=1 <&3 2>/dev/null | od -An -v -tu2 -w24 \
      | { read -r s0 s1 s2 s3 u0 u1 u2 u3 t c v vh && [ -n "$t" ] \
          && say "$1 event type $t code $c value $v" && echo "$1 $t $c $v" >> /events; }; do
    :
  done
}
[ -n "$kbd" ] && watch keyboard "$kbd" &
[ -n "$tab" ] && watch tablet "$tab" &
[ -n "$mouse" ] && watch mouse "$mouse" &
say "ready for input"
# Done once a key came and, by mode, a tablet position or PS/2 motion on both axes and a
# left button press.
for i in $(seq 900); do
  if grep -q "^keyboard 1 " /events; then
    if [ $mode = tablet ]; then
      grep -q "^tablet 3 " /events && break
    else
      grep -q "^mouse 2 0 " /events && grep -q "^mouse 2 1 " /events \
        && grep -q "^mouse 1 272 1$" /events && break
    fi
  fi
  sleep 0.1
done
sleep 2  # what the same client sent right after (the test's second pointer position)
say "done"
poweroff -f
INIT
  pack_initrd drootfs display-initrd.img
fi
if [[ ! -s $out/agent-initrd.img ]]; then
  echo "test-assets: building agent-initrd.img (busybox + the cloud kernel's virtio_console)" >&2
  modules_rootfs arootfs cloud virtio_pci virtio_console
  # The agent's messages, prepared here (busybox's printf has no \x): each is one chunk
  # (port 1 = the client's, size) holding one message (protocol 1, type, opaque 0, size,
  # body). Clipboard bodies start with the selection word (CLIPBOARD = 0), as the guest
  # announces VD_AGENT_CAP_CLIPBOARD_SELECTION; UTF8_TEXT is type 1.
  le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
  agent_message() {  # type, body (printf format) -> stdout
    local body n
    body=$(mktemp)
    printf "$2" > "$body"
    n=$(stat -c %s "$body")
    printf "$(le32 1)$(le32 $((n + 20)))$(le32 1)$(le32 "$1")$(le32 0)$(le32 0)$(le32 "$n")"
    cat "$body"
    rm -f "$body"
  }
  mkdir -p arootfs/agent
  # ANNOUNCE_CAPABILITIES (6), asking for the host's as spice-vdagentd does;
  # CLIPBOARD_BY_DEMAND (5) and CLIPBOARD_SELECTION (6).
  agent_message 6 "$(le32 1)$(le32 $((1 << 5 | 1 << 6)))" > arootfs/agent/caps.bin
  # CLIPBOARD_REQUEST (8) and CLIPBOARD_GRAB (7) of UTF-8 text; CLIPBOARD (4) with the text.
  agent_message 8 "$(le32 0)$(le32 1)" > arootfs/agent/request.bin
  agent_message 7 "$(le32 0)$(le32 1)" > arootfs/agent/grab.bin
  agent_message 4 "$(le32 0)$(le32 1)copied in the linux guest: h\\xc3\\xa9llo \\xe2\\x9c\\x93" > arootfs/agent/data.bin
  write_init arootfs vmdesk-agent <<'INIT'
# vmdesk's guest agent guest (vmm/tests/agent_linux.rs): loads virtio_console, finds the
# virtio-serial port named com.redhat.spice.0 (sysfs; there is no udev for the
# /dev/virtio-ports link) and plays spice-vdagentd's part on it: announces itself, takes
# the host's clipboard when the host grabs it (asks for the text, prints it), then grabs
# the clipboard itself and gives its text when the host asks, and powers off.
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
port=
for i in $(seq 100); do
  for n in /sys/class/virtio-ports/*/name; do
    [ "$(cat "$n" 2>/dev/null)" = com.redhat.spice.0 ] && port=/dev/$(basename "$(dirname "$n")")
  done
  [ -n "$port" ] && [ -c "$port" ] && break
  sleep 0.1
done
if [ ! -c "$port" ]; then
  say "no agent port"
  poweroff -f
fi
say "agent port $port"
mkdir -p /tmp
exec 3<>"$port"
cat /agent/caps.bin >&3
say "agent announced"
# The host's next message: its type in $type, its body in /tmp/body. The host sends
# every message in a chunk of its own. Reads are EOF while the host end is not connected
# (QEMU's qemu-vdagent connects it only when its chardev opens); then wait and read again.
next() {
  while :; do
    dd bs=1 count=8 of=/tmp/chunk <&3 2>/dev/null
    [ "$(wc -c < /tmp/chunk)" -eq 8 ] && break
    sleep 0.1
  done
  size=$(od -An -tu4 -j4 -N4 /tmp/chunk | tr -d ' ')
  dd bs=1 count="$size" of=/tmp/message <&3 2>/dev/null
  type=$(od -An -tu4 -j4 -N4 /tmp/message | tr -d ' ')
  dd if=/tmp/message of=/tmp/body bs=1 skip=20 2>/dev/null
}
while :; do
  next
  case $type in
    7) cat /agent/request.bin >&3 ;;
    4) dd if=/tmp/body of=/tmp/text bs=1 skip=8 2>/dev/null
       say "got $(cat /tmp/text)"
       cat /agent/grab.bin >&3 ;;
    8) cat /agent/data.bin >&3
       say "gave its text"
       break ;;
    6) say "host capabilities" ;;
    *) say "message $type" ;;
  esac
done
sleep 1
say "done"
poweroff -f
INIT
  pack_initrd arootfs agent-initrd.img
fi
if [[ ! -s $out/nested-initrd.img ]]; then
  echo "test-assets: building nested-initrd.img (busybox + the generic kernel's kvm_amd, 9p and overlay)" >&2
  # The nested test host's initramfs (resources/scripts/nested-host.sh boots it with
  # vmlinuz-generic under QEMU's TCG -cpu max, which emulates AMD SVM): kvm_amd gives a
  # hardware-backed /dev/kvm; the host's root arrives read-only over virtio-9p and becomes
  # the root of the command, writable through an overlay on tmpfs; tun and veth are there
  # for commands that make their own network devices.
  modules_rootfs nrootfs generic kvm_amd virtio_pci 9pnet_virtio 9p overlay tun veth
  write_init nrootfs vmdesk-nested <<'INIT'
# vmdesk's nested test host (resources/scripts/nested-host.sh). The kernel command line
# names the share (vmdesk.share=PATH, the host path of a writable 9p share holding cmd.sh):
# /init runs cmd.sh with the host's root as its root, its output on ttyS1, writes its exit
# status into the share, and powers off. Everything it says itself goes to the console
# (ttyS0) with "vmdesk-nested: " in front.
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
share=$(sed -n 's/.*vmdesk\.share=\([^ ]*\).*/\1/p' /proc/cmdline)
fail() { say "$*"; poweroff -f; }
[ -c /dev/kvm ] || fail "no /dev/kvm: kvm_amd did not load (is the outer CPU -cpu max?)"
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower \
  || fail "cannot mount the host's root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "cannot lay the overlay over the host's root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p "/newroot$share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share "/newroot$share" \
  || fail "cannot mount the share (9p tag share)"
ifconfig lo 127.0.0.1 up
# A heartbeat on ttyS2 while the command runs: its stopping tells the script this kernel
# no longer schedules anything (even with every CPU stuck with interrupts off, which its
# own watchdogs cannot report).
while :; do echo .; sleep 5; done > /dev/ttyS2 2>/dev/null &
stty -F /dev/ttyS1 raw -echo
say "running $share/cmd.sh"
# The new root is moved over the initramfs's / (as switch_root does) rather than entered
# with a plain chroot: the kernel refuses a new user namespace to a process whose root is
# not its mount namespace's (unshare(CLONE_NEWUSER) fails with EPERM in a chroot), and
# passt sandboxes itself in one. /init itself keeps the initramfs as its root (its busybox
# for sync, umount and poweroff) and reaches the new root through its working directory.
cd /newroot
mount --move /newroot / || fail "cannot move the new root over /"
chroot . /bin/bash "$share/cmd.sh" < /dev/null > /dev/ttyS1 2>&1
echo $? > ".$share/status"
sync
umount ".$share"
poweroff -f
INIT
  pack_initrd nrootfs nested-initrd.img
fi
if [[ ! -s $out/machine-initrd.img ]]; then
  echo "test-assets: building machine-initrd.img (busybox + the cloud kernel's virtio_pci and virtio_blk)" >&2
  modules_rootfs mrootfs cloud virtio_pci virtio_blk
  write_init mrootfs vmdesk-machine <<'INIT'
# vmdesk's machine guest (vmm/tests/linux_machine.rs). The kernel command line's
# vmdesk.test= says what to do; everything the test reads starts "vmdesk-machine: " on COM1.
#   cpus    the CPUs Linux found (nproc, the online mask, the MADT as hex, the kernel's SMP
#           lines) and the LOC and IO-APIC lines of /proc/interrupts, read twice with one
#           spinner pinned to each CPU in between (an idle CPU stops its tick, NO_HZ), then
#           power off
#   reboot  the boot number, from a marker on /dev/vda: boot 1 writes "vmdesk boot 2" and
#           reboots through the keyboard controller, boot 2 writes "vmdesk boot 3" and
#           reboots through the FADT's reset register, boot 3 powers off
#   spin    wait for a line on tty1 (a key from the VNC client), spin on every CPU, wait for
#           another, report how busy each CPU was meanwhile, power off
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
test=$(sed -n 's/.*vmdesk\.test=\([a-z]*\).*/\1/p' /proc/cmdline)
ncpu=$(nproc)
pids=
# One busy loop pinned to each CPU; their pids in $pids.
spin() {
  i=0
  while [ $i -lt $ncpu ]; do
    taskset -c $i sh -c 'while :; do :; done' &
    pids="$pids $!"
    i=$((i + 1))
  done
}
unspin() { kill $pids; pids=; }
case $test in
cpus)
  say "nproc $ncpu"
  say "online $(cat /sys/devices/system/cpu/online)"
  say "madt $(od -An -v -tx1 /sys/firmware/acpi/tables/APIC | tr -d ' \n')"
  dmesg | grep -e 'smp: Brought up' -e 'smpboot: Allowing' -e 'ACPI Error' -e 'ACPI Warning' \
    | while read -r l; do say "kernel $l"; done
  grep -e 'LOC:' -e 'IO-APIC' /proc/interrupts | while read -r l; do say "interrupts 1 $l"; done
  spin
  sleep 2
  unspin
  grep -e 'LOC:' -e 'IO-APIC' /proc/interrupts | while read -r l; do say "interrupts 2 $l"; done
  say "done"
  ;;
reboot)
  for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
  mark=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -d '\000')
  case $mark in
    "") n=1 ;;
    "vmdesk boot 2") n=2 ;;
    "vmdesk boot 3") n=3 ;;
    *) n=0 ;;
  esac
  say "boot $n (marker '$mark')"
  if [ $n = 1 ] || [ $n = 2 ]; then
    printf 'vmdesk boot %d' $((n + 1)) | dd of=/dev/vda conv=fsync 2>/dev/null
    if [ $n = 1 ]; then kind=kbd; else kind=acpi; fi
    echo $kind > /sys/kernel/reboot/type
    # Linux says it writes the FADT's reset register only in a pr_debug of acpi_reboot()
    # ("ACPI MEMORY or I/O RESET_REG."): turn that on, and KERN_DEBUG on the console.
    echo 'func acpi_reboot +p' > /proc/dynamic_debug/control
    echo 8 > /proc/sys/kernel/printk
    say "boot $n: reboot type $(cat /sys/kernel/reboot/type)"
    reboot -f
    sleep 10
    say "boot $n: still here after reboot -f"
  fi
  ;;
spin)
  # Keys reach tty1 (the VT; the console is ttyS0): opened before saying so, or the
  # first key could come before anyone reads it.
  [ -c /dev/tty1 ] || { say "no tty1"; poweroff -f; }
  exec 3< /dev/tty1
  say "ready for a key"
  read -r line <&3
  cat /proc/stat > /stat1
  spin
  say "spinning on $ncpu CPUs"
  read -r line <&3
  cat /proc/stat > /stat2
  unspin
  say "a key while spinning"
  # Each CPU's busy share between the two keys, in percent: 100 - idle - iowait, of the
  # time in user, nice, system, idle, iowait, irq, softirq and steal (guest time is counted
  # in user already).
  awk '/^cpu[0-9]/ { t = 0; for (i = 2; i <= 9; i++) t += $i
                     if (FILENAME == "/stat1") { t1[$1] = t; i1[$1] = $5 + $6 }
                     else printf "%s %d%% ", $1, 100 - 100 * ($5 + $6 - i1[$1]) / (t - t1[$1]) }' \
    /stat1 /stat2 > /busy
  say "busy $(cat /busy)"
  ;;
*)
  say "unknown test '$test'"
  ;;
esac
poweroff -f
INIT
  pack_initrd mrootfs machine-initrd.img
fi
if [[ ! -s $out/install-initrd.img ]]; then
  echo "test-assets: building install-initrd.img (busybox, extlinux and the cloud kernel's disk modules)" >&2
  modules_rootfs irootfs cloud virtio_pci virtio_blk ata_piix sd_mod sr_mod cdrom isofs
  # The boot loader, unpacked from Debian's packages: extlinux (dynamically linked against
  # libc.so.6 alone) with its MBR code, and the loader and libc from libc6 at the paths
  # extlinux's ELF header names.
  apt-get download -q extlinux libc6 >/dev/null
  dpkg -x ./extlinux_*.deb ext
  dpkg -x ./libc6_*.deb libc
  rm -f ./extlinux_*.deb ./libc6_*.deb
  mkdir -p irootfs/usr/bin irootfs/usr/lib/EXTLINUX irootfs/lib/x86_64-linux-gnu irootfs/lib64
  cp ext/usr/bin/extlinux irootfs/usr/bin/
  cp ext/usr/lib/EXTLINUX/mbr.bin irootfs/usr/lib/EXTLINUX/
  cp libc/lib/x86_64-linux-gnu/libc.so.6 libc/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
    irootfs/lib/x86_64-linux-gnu/
  ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 irootfs/lib64/ld-linux-x86-64.so.2
  write_init irootfs vmdesk-install <<'INIT'
# vmdesk's installer guest (app/tests/install_disk.rs, vmm/benches/install_cycle.rs). The
# kernel command line's vmdesk.mode= says which part it plays; everything the host reads
# starts "vmdesk-install: " on COM1.
#   install    the CD's installer: take the first disk (virtio vda, else IDE sda), refuse
#              one too small for the system, partition it (one bootable primary partition
#              from 1 MiB), make an ext2 filesystem, copy the CD's vmlinuz and initrd.img
#              to /boot with an extlinux.conf, install extlinux there and its MBR code in
#              the disk's first sector, write a stamp, unmount, power off
#   installed  the system booted from that disk: mount its filesystem read-only, say the
#              stamp, power off
fail() { say "failed: $*"; poweroff -f; sleep 10; }
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
mode=$(sed -n 's/.*vmdesk\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
mkdir -p /cd /target /tmp
case $mode in
install)
  disk=
  for i in $(seq 100); do
    for d in sda vda; do [ -b /dev/$d ] && disk=$d; done
    [ -n "$disk" ] && [ -b /dev/sr0 ] && break
    sleep 0.1
  done
  [ -n "$disk" ] || fail "no disk to install to"
  mount -t iso9660 -o ro /dev/sr0 /cd || fail "cannot mount the CD"
  # The system's files, 8 MiB for the filesystem's own, and the first MiB.
  need=$(( ($(stat -c %s /cd/vmlinuz) + $(stat -c %s /cd/initrd.img)) / 1048576 + 9 ))
  have=$(( $(blockdev --getsize64 /dev/$disk) / 1048576 ))
  [ $have -ge $need ] || fail "disk /dev/$disk is $have MiB; the system needs $need MiB"
  say "installing to /dev/$disk ($have MiB)"
  # o: a new DOS label; n p 1 2048 <end>: one primary partition from 1 MiB to the end;
  # a 1: bootable (mbr.bin boots the active partition); w: write and re-read.
  printf 'o\nn\np\n1\n2048\n\na\n1\nw\n' | fdisk /dev/$disk >/dev/null 2>&1
  part=/dev/${disk}1
  for i in $(seq 50); do [ -b $part ] && break; sleep 0.1; done
  [ -b $part ] || fail "no $part after partitioning"
  mke2fs -q -L vmdesk-root $part || fail "mke2fs $part"
  mount -t ext2 $part /target || fail "cannot mount $part"
  mkdir -p /target/boot
  cp /cd/vmlinuz /cd/initrd.img /target/boot/ || fail "cannot copy the system"
  cat > /target/boot/extlinux.conf <<CONF
SERIAL 0 115200
DEFAULT system
PROMPT 0
TIMEOUT 0
LABEL system
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND console=ttyS0 panic=-1 loglevel=4 vmdesk.mode=installed vmdesk.disk=$disk
CONF
  /usr/bin/extlinux --install /target/boot > /tmp/extlinux.out 2>&1 \
    || fail "extlinux: $(tr '\n' ' ' < /tmp/extlinux.out)"
  dd if=/usr/lib/EXTLINUX/mbr.bin of=/dev/$disk bs=440 count=1 conv=notrunc 2>/dev/null \
    || fail "cannot write the MBR"
  echo "installed on $disk by vmdesk's installer" > /target/vmdesk-installed
  umount /target || fail "cannot unmount $part"
  umount /cd
  sync
  say "installed"
  ;;
installed)
  disk=$(sed -n 's/.*vmdesk\.disk=\([a-z]*\).*/\1/p' /proc/cmdline)
  part=/dev/${disk}1
  for i in $(seq 100); do [ -b $part ] && break; sleep 0.1; done
  mount -t ext2 -o ro $part /target || fail "cannot mount $part"
  say "booted from disk: $(cat /target/vmdesk-installed)"
  umount /target
  ;;
*)
  say "unknown mode '$mode'"
  ;;
esac
poweroff -f
INIT
  pack_initrd irootfs install-initrd.img
fi
if [[ ! -s $out/net-initrd.img || ! -s $out/net-bench-initrd.img ]]; then
  echo "test-assets: building net-initrd.img and net-bench-initrd.img (busybox + the cloud kernel's virtio_net; iperf3)" >&2
  modules_rootfs nrootfs-net cloud virtio_pci virtio_net
  mkdir -p nrootfs-net/etc nrootfs-net/tmp
  # udhcpc (busybox) leaves applying a lease to a script: this one sets the MTU, the address,
  # the default route and the DNS servers, and keeps what it applied in /tmp/lease (the
  # line /init says) and the router in /tmp/router.
  cat > nrootfs-net/etc/udhcpc.script <<'SCRIPT'
#!/bin/sh
case $1 in
deconfig)
  ip addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound | renew)
  [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
  ip addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  ip route del default 2>/dev/null
  for r in $router; do
    ip route add default via "$r" dev "$interface"
    echo "$r" > /tmp/router
    break
  done
  : > /etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  echo "address $ip/${mask:-?} router ${router:-none} dns ${dns:-none} mtu ${mtu:-none}" > /tmp/lease
  ;;
esac
exit 0
SCRIPT
  chmod +x nrootfs-net/etc/udhcpc.script
  write_init nrootfs-net vmdesk-net <<'INIT'
# vmdesk's network guest (vmm/tests/net_linux.rs; with iperf3, vmm/benches/net_throughput.rs).
# It loads virtio_net, says what eth0 is (MAC, driver, PCI slot, the virtio features the
# driver took, carrier), and does what the kernel command line's vmdesk.test= says;
# everything the host reads starts "vmdesk-net: " on COM1. "failed: WHY" ends any test.
#   dhcp            get an address by DHCP and say the lease (address, router, DNS, MTU);
#                   power off
#   idle            the same, then say "idle" and wait: the host ends the VM (without a
#                   card: "no card; idle", and wait)
#   fetch:PORT      DHCP, then fetch http://ROUTER:PORT/blob (passt maps the router's
#                   address to the host's loopback) and say its size, time and sha256;
#                   power off
#   serve:PORT      DHCP, then take one TCP connection on PORT (a forward from the host),
#                   keep what comes until the host closes it and say its size and sha256;
#                   power off
#   tap:PORT        no DHCP: 10.9.0.2/24 on eth0, then fetch http://10.9.0.1:PORT/blob
#                   (a server on the host's side of a TAP device) as fetch does; power off
#   bench:PORT:SECS (net-bench-initrd.img, which has iperf3) DHCP, an iperf3 server on
#                   port 5201 and a TCP echo server on port 7 for the host, then iperf3 as
#                   a client of ROUTER:PORT for SECS seconds (guest to host) and its
#                   receiver's figure; then "bench ready" and wait: the host measures its
#                   way through the forwards and ends the VM
fail() { say "failed: $*"; poweroff -f; sleep 10; }
# Microseconds from adjtimex (busybox date has no %N).
now_us() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%.0f\n", s * 1000000 + u }'; }
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
test=$(sed -n 's/.*vmdesk\.test=\([a-z0-9:]*\).*/\1/p' /proc/cmdline)
mode=${test%%:*}
args=${test#"$mode"}
args=${args#:}
port=${args%%:*}
mkdir -p /tmp
ip link set lo up
for i in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
if [ ! -e /sys/class/net/eth0 ]; then
  # A VM without a card idles all the same (the benchmark's baseline).
  if [ "$mode" = idle ]; then
    say "no card; idle"
    while :; do sleep 3600; done
  fi
  fail "no eth0 (virtio_net found no card)"
fi
dev=$(readlink -f /sys/class/net/eth0/device)
say "eth0 mac $(cat /sys/class/net/eth0/address) driver $(basename "$(readlink "$dev/driver")") pci $(basename "$(dirname "$dev")")"
say "eth0 virtio features $(cat "$dev/features")"
ip link set eth0 up
for i in $(seq 50); do [ "$(cat /sys/class/net/eth0/carrier)" = 1 ] && break; sleep 0.1; done
say "eth0 carrier $(cat /sys/class/net/eth0/carrier)"

dhcp() {
  udhcpc -i eth0 -f -q -n -t 20 -T 1 -s /etc/udhcpc.script > /tmp/udhcpc.out 2>&1 \
    || fail "no DHCP lease: $(tr '\n' ' ' < /tmp/udhcpc.out)"
  [ -s /tmp/lease ] || fail "udhcpc got a lease but its script did not run"
  say "dhcp $(cat /tmp/lease)"
  router=$(cat /tmp/router 2>/dev/null)
}
# Fetches URL $1 into /tmp/blob and says its size, the time it took and its sha256.
fetch() {
  t0=$(now_us)
  wget -q -O /tmp/blob "$1" 2> /tmp/wget.out || fail "wget $1: $(tr '\n' ' ' < /tmp/wget.out)"
  t1=$(now_us)
  say "fetched $(wc -c < /tmp/blob) bytes in $(((t1 - t0) / 1000)) ms sha256 $(sha256sum < /tmp/blob | cut -d' ' -f1)"
  rm -f /tmp/blob
}
# Waits until something listens on TCP port $1.
listening() {
  for i in $(seq 100); do
    netstat -ltn | grep -q ":$1 " && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}

case $mode in
dhcp)
  dhcp
  ;;
idle)
  dhcp
  say "idle"
  while :; do sleep 3600; done
  ;;
fetch)
  dhcp
  [ -n "$router" ] || fail "the lease named no router"
  fetch "http://$router:$port/blob"
  ;;
serve)
  dhcp
  # nc's input never ends (a FIFO this shell holds open both ways): busybox nc half-closes
  # the connection when its input ends, and passt (Debian's 2023-03 build) then stalls
  # the host's data to the guest.
  mkfifo /tmp/hold
  exec 3<> /tmp/hold
  nc -l -p "$port" > /tmp/upload <&3 &
  nc=$!
  listening "$port"
  say "listening on $port"
  wait $nc || fail "nc -l -p $port"
  say "received $(wc -c < /tmp/upload) bytes sha256 $(sha256sum < /tmp/upload | cut -d' ' -f1)"
  ;;
tap)
  ip addr add 10.9.0.2/24 dev eth0
  say "static address 10.9.0.2/24"
  fetch "http://10.9.0.1:$port/blob"
  ;;
bench)
  [ -x /usr/bin/iperf3 ] || fail "no iperf3 here: boot net-bench-initrd.img"
  secs=${args#*:}
  dhcp
  /usr/bin/iperf3 -s -D -p 5201 || fail "iperf3 -s"
  nc -ll -p 7 -e cat &
  listening 5201
  listening 7
  /usr/bin/iperf3 -c "$router" -p "$port" -t "$secs" -f k > /tmp/iperf.out 2>&1 \
    || fail "iperf3 -c $router -p $port: $(tr '\n' ' ' < /tmp/iperf.out)"
  kbits=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Kbits/sec") print $(i - 1) }' /tmp/iperf.out)
  [ -n "$kbits" ] || fail "no receiver line from iperf3: $(tr '\n' ' ' < /tmp/iperf.out)"
  say "iperf guest-to-host kbits $kbits"
  say "bench ready"
  while :; do sleep 3600; done
  ;;
*)
  fail "unknown test '$test'"
  ;;
esac
poweroff -f
INIT
  pack_initrd nrootfs-net net-initrd.img
  # The same guest with Debian's iperf3.
  debian_program nrootfs-net iperf3 /usr/bin/iperf3
  pack_initrd nrootfs-net net-bench-initrd.img
fi
# ---- UEFI media: GRUB for x86_64-efi, FAT filesystems, a GPT; made without root ----------
# GRUB's modules come from grub-efi-amd64-bin, grub-mkstandalone and grub-mkrescue from
# grub-common, mkfs.fat from dosfstools, sfdisk from fdisk (those two in /usr/sbin, which not
# every user's PATH has), mformat, mmd and mcopy from mtools: install-deps.sh test installs
# them. FAT filesystems are made in files of their own (mkfs.fat -C) and filled by mtools,
# then written into a disk (dd) or named as an El Torito image: no loop device, no mount.
PATH=$PATH:/usr/sbin:/sbin
export MTOOLS_SKIP_CHECK=1  # mtools: no complaint about a disk geometry no one uses
grub_efi=/usr/lib/grub/x86_64-efi
uefi_tools() {
  local t miss=()
  [[ -s $grub_efi/linux.mod ]] || miss+=("$grub_efi (package grub-efi-amd64-bin)")
  for t in grub-mkstandalone:grub-common grub-mkrescue:grub-common mkfs.fat:dosfstools \
           sfdisk:fdisk mformat:mtools mmd:mtools mcopy:mtools xorriso:xorriso; do
    command -v "${t%%:*}" >/dev/null || miss+=("${t%%:*} (package ${t#*:})")
  done
  ((${#miss[@]} == 0)) && return
  echo "test-assets: the UEFI media need ${miss[*]}: resources/scripts/install-deps.sh test installs them" >&2
  exit 1
}
# GRUB's modules in the standalone images below: built into the image and loaded before its
# grub.cfg runs (grub-mkstandalone adds what they depend on).
grub_modules=(part_gpt part_msdos fat iso9660 search search_fs_file normal configfile echo test
  linux efi_gop all_video sleep halt)
# Writes $1, a GRUB EFI application (what goes to \EFI\BOOT\BOOTX64.EFI) made by
# grub-mkstandalone: grub_modules and the configuration file $2 as its grub.cfg, in its
# memdisk, so it needs no other file to find.
grub_standalone() {
  grub-mkstandalone -O x86_64-efi -d "$grub_efi" -o "$1" --modules="${grub_modules[*]}" \
    --install-modules="${grub_modules[*]}" --locales= --fonts= --themes= "boot/grub/grub.cfg=$2"
}
# Writes the FAT image $1, just large enough, holding the EFI application $2 as
# \EFI\BOOT\BOOTX64.EFI, the path UEFI firmware boots from a removable medium or a disk
# with no boot entry of its own.
efi_fat_image() {
  local kib=$(( ($(stat -c %s "$2") + 1023) / 1024 + 256 ))
  rm -f "$1"
  mkfs.fat -C -n VMDESK_EFI "$1" "$kib" >/dev/null
  mmd -i "$1" ::/EFI ::/EFI/BOOT
  mcopy -i "$1" "$2" ::/EFI/BOOT/BOOTX64.EFI
}

if [[ ! -s $out/efi-initrd.img ]]; then
  echo "test-assets: building efi-initrd.img (busybox + the cloud kernel's efivarfs, virtio_pci and virtio_blk)" >&2
  modules_rootfs erootfs cloud efivarfs virtio_pci virtio_blk
  write_init erootfs vmdesk-efi <<'INIT'
# vmdesk's UEFI guest: efi-disk.img's GRUB boots the cloud kernel with this initrd under
# UEFI firmware (OVMF). Everything the tests read starts "vmdesk-efi: " on the console (COM1),
# in this order:
#   EFI: yes|no            whether UEFI firmware started the kernel (/sys/firmware/efi)
#   VAR: none|TEXT         the test variable VmdeskTest-ddaef68a-1fb4-4cca-aa37-0426c7de331f
#                          in the firmware's variable store (read through efivarfs): none
#                          at the first boot on a fresh store, vmdesk-42 at the next ones
#                          (unavailable without EFI)
#   VAR-SET: done|failed   only when it was not there: created non-volatile, with boot
#                          service and runtime access, holding vmdesk-42
#   IRQ: LINE              each line of /proc/interrupts naming a virtio device (the disk
#                          this booted from when it is virtio); IRQ: none when there is none
#   ACPI: SIG ...          the ACPI tables the kernel found (/sys/firmware/acpi/tables,
#                          sorted), or ACPI: none
#   SMBIOS: yes|no         whether the firmware handed over SMBIOS tables
#                          (/sys/firmware/dmi/tables/DMI)
#   REBOOT: now            at the first boot that found the test variable there (the
#                          second on a store): it sets a second variable,
#                          VmdeskRebooted-ddaef68a-1fb4-4cca-aa37-0426c7de331f, and reboots
#                          (Linux under UEFI resets through the firmware's ResetSystem), so
#                          the boot after says EFI: yes … again and then done
#   done                   and it powers off (ACPI S5 when the tables came)
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/order
# The kernel's messages off the console from here on, so none lands inside a line.
dmesg -n 1
var=/sys/firmware/efi/efivars/VmdeskTest-ddaef68a-1fb4-4cca-aa37-0426c7de331f
rebooted=/sys/firmware/efi/efivars/VmdeskRebooted-ddaef68a-1fb4-4cca-aa37-0426c7de331f
reboot=
if [ -d /sys/firmware/efi ]; then
  say "EFI: yes"
  mount -t efivarfs efivarfs /sys/firmware/efi/efivars || say "cannot mount efivarfs"
  if [ -e "$var" ]; then
    # An efivarfs file is the variable's 4 bytes of attributes, then its data.
    say "VAR: $(tail -c +5 "$var")"
    if [ ! -e "$rebooted" ]; then
      printf '\007\000\000\000yes' > /rebooted.bin
      cat /rebooted.bin > "$rebooted" && sync && reboot=yes
    fi
  else
    say "VAR: none"
    # Attributes 0x7 (non-volatile, boot service and runtime access), little-endian, and
    # the data: efivarfs wants them in one write, which cat does for so short a file.
    printf '\007\000\000\000vmdesk-42' > /var.bin
    if cat /var.bin > "$var" && sync; then say "VAR-SET: done"; else say "VAR-SET: failed"; fi
  fi
else
  say "EFI: no"
  say "VAR: unavailable"
fi
grep -i virtio /proc/interrupts > /irqs
if [ -s /irqs ]; then
  while read -r line; do say "IRQ: $line"; done < /irqs
else
  say "IRQ: none"
fi
acpi=
for t in /sys/firmware/acpi/tables/*; do
  [ -f "$t" ] && acpi="$acpi ${t##*/}"
done
say "ACPI:${acpi:- none}"
if [ -e /sys/firmware/dmi/tables/DMI ]; then say "SMBIOS: yes"; else say "SMBIOS: no"; fi
if [ -n "$reboot" ]; then
  say "REBOOT: now"
  reboot -f
fi
say "done"
poweroff -f
INIT
  pack_initrd erootfs efi-initrd.img
fi
# efi-disk.img: a raw 66 MiB disk with a GPT and one partition, the EFI system partition
# (FAT32, 64 MiB from 1 MiB): \EFI\BOOT\BOOTX64.EFI is GRUB (grub-mkstandalone) whose own
# grub.cfg boots \vmdesk\vmlinuz (the cloud kernel) with \vmdesk\initrd.img (efi-initrd.img)
# and console=ttyS0 at once; when it cannot load them it says so and powers off. Its GUIDs
# and volume serial number are fixed (the files' dates are the build's).
if [[ ! -s $out/efi-disk.img || $out/efi-disk.img -ot $out/vmlinuz
      || $out/efi-disk.img -ot $out/efi-initrd.img ]]; then
  uefi_tools
  echo "test-assets: making efi-disk.img (GPT, an EFI system partition: GRUB, the cloud kernel, efi-initrd.img)" >&2
  cat > efi-disk.cfg <<'CFG'
# efi-disk.img's GRUB (test-assets.sh): boots the kernel and initrd on this partition at once.
set timeout=0
set default=0
search --no-floppy --set=root --file /vmdesk/vmlinuz
menuentry "vmdesk EFI disk" {
	echo "vmdesk-efi-grub: booting /vmdesk/vmlinuz"
	if linux /vmdesk/vmlinuz console=ttyS0 panic=-1 loglevel=4; then
		if initrd /vmdesk/initrd.img; then
			boot
		fi
	fi
	echo "vmdesk-efi-grub: cannot load /vmdesk/vmlinuz and /vmdesk/initrd.img; powering off"
	sleep 1
	halt
}
CFG
  grub_standalone efi-disk-bootx64.efi efi-disk.cfg
  img=$out/efi-disk.img.tmp
  rm -f "$img"
  # 2048 sectors before the partition, 131072 (64 MiB) in it, then the backup GPT.
  truncate -s 66M "$img"
  sfdisk --quiet "$img" <<'GPT'
label: gpt
label-id: 9C3F1E7A-54D2-4B8E-A1C6-3D0B7E2F5A41
first-lba: 2048
start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=4E6B2D90-7A13-4C5F-9E28-B1D7F3A6C054, name="EFI system partition"
GPT
  # The partition's filesystem, made and filled as a file of its own (its hidden sectors:
  # where it starts on the disk), then written into the disk.
  rm -f esp.img
  mkfs.fat -C -F 32 -h 2048 -n VMDESK_ESP -i 766d6465 esp.img $((131072 / 2)) >/dev/null
  mmd -i esp.img ::/EFI ::/EFI/BOOT ::/vmdesk
  mcopy -i esp.img efi-disk-bootx64.efi ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i esp.img "$out/vmlinuz" ::/vmdesk/vmlinuz
  mcopy -i esp.img "$out/efi-initrd.img" ::/vmdesk/initrd.img
  dd if=esp.img of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
  mv "$img" "$out/efi-disk.img"
fi
# grub-efi.iso: GRUB's own rescue CD for UEFI only (grub-mkrescue with x86_64-efi alone: an
# El Torito image for EFI, none for BIOS), whose menu waits for a key: "vmdesk UEFI GRUB
# test" (which only prints a line) and "Power off" (GRUB's halt: the firmware powers off).
if [[ ! -s $out/grub-efi.iso ]]; then
  uefi_tools
  echo "test-assets: making grub-efi.iso (grub-mkrescue, x86_64-efi)" >&2
  mkdir -p grub-cd/boot/grub
  cat > grub-cd/boot/grub/grub.cfg <<'CFG'
# grub-efi.iso's menu (test-assets.sh): it stays until a key is pressed.
set timeout=-1
set default=0
menuentry "vmdesk UEFI GRUB test" {
	echo "vmdesk UEFI GRUB test: chosen"
}
menuentry "Power off" {
	halt
}
CFG
  grub-mkrescue -d "$grub_efi" --locales= --fonts= --themes= -o "$out/grub-efi.iso.tmp" \
    grub-cd -- -volid VMDESK_GRUB_EFI > grub-mkrescue.log 2>&1 \
    || { echo "test-assets: grub-mkrescue failed:" >&2; sed 's/^/  /' grub-mkrescue.log >&2; exit 1; }
  mv "$out/grub-efi.iso.tmp" "$out/grub-efi.iso"
fi
if [[ ! -s $out/isolinux/isolinux.bin || ! -s $out/isolinux/ldlinux.c32 ]]; then
  echo "test-assets: unpacking isolinux.bin and ldlinux.c32 (isolinux, syslinux-common)" >&2
  apt-get download -q isolinux syslinux-common >/dev/null
  dpkg -x ./isolinux_*.deb syslinux
  dpkg -x ./syslinux-common_*.deb syslinux
  rm -rf "$out/isolinux.tmp"
  mkdir -p "$out/isolinux.tmp"
  cp syslinux/usr/lib/ISOLINUX/isolinux.bin syslinux/usr/lib/syslinux/modules/bios/ldlinux.c32 \
    "$out/isolinux.tmp/"
  rm -rf "$out/isolinux"
  mv "$out/isolinux.tmp" "$out/isolinux"
fi
# Debian 12's graphical installer on a CD laid out as the official images are: isolinux
# and the installer's own boot menu (vesamenu, splash, help screens) in /isolinux/, the
# kernel in /install.amd/, the gtk initrd in /install.amd/gtk/. The netboot package carries
# the same kernel, initrd and menu for PXE, with paths from the TFTP root; they are
# rewritten to the CD's. Its ldlinux.c32 is byte for byte the one syslinux-common ships
# with isolinux.bin, so the menu modules fit the isolinux.bin above.
# UEFI boots it too, as the official images do: a second El Torito image, for EFI,
# /boot/grub/efi.img, a FAT filesystem with \EFI\BOOT\BOOTX64.EFI, GRUB (grub-mkstandalone)
# with di_grub_cfg's menu built in; the same menu is on the CD as /boot/grub/grub.cfg. The
# BIOS boot is the catalog's first (default) entry and is what it was before.
di_iso=$out/debian-installer-gtk.iso
# Prints the installer CD's GRUB menu: the default entry of its isolinux menu (Install, the
# first label of txt.cfg, which menu.cfg includes first: the netboot package has no gtk.cfg)
# with the same kernel, initrd and command line (vga=788 --- quiet). It waits for a key
# (isolinux's starts the speech synthesis install after 30 s without one: spk.cfg's
# ontimeout, which no test wants). $1: that txt.cfg as on the CD. The modules built into
# GRUB are named in it, so a CD whose GRUB differs from the one this script makes differs in
# this file too (see below).
di_grub_cfg() {
  local kernel append w initrd= args=()
  kernel=$(awk '$1 == "kernel" {print $2; exit}' "$1")
  append=$(awk '$1 == "append" {$1 = ""; print; exit}' "$1")
  for w in $append; do
    case $w in
      initrd=*) initrd=${w#initrd=} ;;
      *) args+=("$w") ;;
    esac
  done
  [[ -n $kernel && -n $initrd ]] \
    || { echo "test-assets: no kernel and initrd= in the installer's first boot entry ($1)" >&2; exit 1; }
  cat <<CFG
# The UEFI boot menu of this CD (vmdesk's test-assets.sh): isolinux's default entry.
# GRUB: /boot/grub/efi.img's \\EFI\\BOOT\\BOOTX64.EFI, grub-mkstandalone with this file and
# the modules ${grub_modules[*]}.
set timeout=-1
set default=0
insmod all_video
search --no-floppy --set=root --file $kernel
menuentry "Install - Debian GNU/Linux installer menu (UEFI mode)" {
	set gfxpayload=keep
	linux $kernel ${args[*]}
	initrd $initrd
}
CFG
}
# A CD made before its UEFI boot was added, or with another GRUB menu than the one
# di_grub_cfg writes now, is made again.
if [[ -s $di_iso ]]; then
  rm -rf di-old
  mkdir di-old
  if ! xorriso -osirrox on -indev "$di_iso" -extract /isolinux/txt.cfg di-old/txt.cfg \
         -extract /boot/grub/grub.cfg di-old/grub.cfg >/dev/null 2>&1 \
     || ! cmp -s di-old/grub.cfg <(di_grub_cfg di-old/txt.cfg); then
    echo "test-assets: $(basename "$di_iso") lacks this script's UEFI boot menu; making it again" >&2
    rm -f "$di_iso"
  fi
fi
if [[ ! -s $di_iso ]]; then
  uefi_tools
  echo "test-assets: making $(basename "$di_iso") (debian-installer-12-netboot-amd64, gtk)" >&2
  apt-get download -q debian-installer-12-netboot-amd64 >/dev/null
  di=./usr/lib/debian-installer/images/12/amd64/gtk/debian-installer/amd64
  dpkg-deb --fsys-tarfile ./debian-installer-12-netboot-amd64_*.deb \
    | tar -x --wildcards "$di/boot-screens/*" "$di/linux" "$di/initrd.gz"
  rm -f ./debian-installer-12-netboot-amd64_*.deb
  cd_root=di-cd
  mkdir -p $cd_root/isolinux $cd_root/install.amd/gtk $cd_root/boot/grub
  cp "$out/isolinux/isolinux.bin" $cd_root/isolinux/
  cp "$di"/boot-screens/* $cd_root/isolinux/
  mv $cd_root/isolinux/syslinux.cfg $cd_root/isolinux/isolinux.cfg
  sed -i -e 's#debian-installer/amd64/boot-screens/##g' \
    -e 's#debian-installer/amd64/linux#/install.amd/vmlinuz#g' \
    -e 's#debian-installer/amd64/initrd.gz#/install.amd/gtk/initrd.gz#g' \
    $cd_root/isolinux/*.cfg
  mv "$di/linux" $cd_root/install.amd/vmlinuz
  mv "$di/initrd.gz" $cd_root/install.amd/gtk/initrd.gz
  di_grub_cfg $cd_root/isolinux/txt.cfg > $cd_root/boot/grub/grub.cfg
  grub_standalone di-bootx64.efi $cd_root/boot/grub/grub.cfg
  efi_fat_image $cd_root/boot/grub/efi.img di-bootx64.efi
  # isolinux's entry first, unchanged (the boot info table is patched into isolinux.bin
  # alone), then EFI's. No isohybrid MBR or GPT: the tests only ever attach this as a CD.
  xorriso -as mkisofs -quiet -V "Debian 12 gtk" -o "$di_iso.tmp" \
    -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 \
    -boot-info-table \
    -eltorito-alt-boot -e boot/grub/efi.img -no-emul-boot $cd_root
  mv "$di_iso.tmp" "$di_iso"
fi
# The installer's kernel on its own, from that CD, for the boot-log comparison
# (vmm/tests/linux_boot_log.rs boots it with the busybox initrd on both VMMs).
if [[ ! -s $out/vmlinuz-installer || $out/vmlinuz-installer -ot $di_iso ]]; then
  xorriso -osirrox on -indev "$di_iso" -extract /install.amd/vmlinuz "$out/vmlinuz-installer.tmp" \
    2>/dev/null
  chmod 0644 "$out/vmlinuz-installer.tmp"
  mv "$out/vmlinuz-installer.tmp" "$out/vmlinuz-installer"
fi
if [[ ! -x $out/spice-vdagent/usr/sbin/spice-vdagentd ]]; then
  echo "test-assets: unpacking spice-vdagent" >&2
  apt-get download -q spice-vdagent >/dev/null
  rm -rf "$out/spice-vdagent"
  dpkg -x ./spice-vdagent_*.deb "$out/spice-vdagent"
fi
# The browser VNC test's JavaScript (its own script: npm, not apt).
"$root/resources/scripts/novnc-assets.sh"
ls -l "$out"
