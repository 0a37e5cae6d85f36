#!/usr/bin/env bash
# Installs what vmdesk needs on Debian/Ubuntu, idempotently, then checks that it is there.
#   install-deps.sh run    what the app needs to build and run (SeaBIOS firmware; passt,
#                          the VMs' user-mode network; binutils, which assembles the demo
#                          VM's boot image at build time)
#   install-deps.sh test   + what the test suite, the test assets (test-assets.sh), the nested
#                          test host (nested-host.sh) and the benchmarks need, and a Python
#                          venv with vncdotool ($VMDESK_VENV, default target/venv)
#   install-deps.sh bench  the same as test
# Rust itself is not installed here: vmdesk builds with the stable toolchain (rustup).
#
# The packages a mode lacks are installed in one `apt-get install` (sudo when not root),
# which may not remove anything (--no-remove: apt fails, showing what it wanted to remove).
# Packages already installed are not named, so they are not upgraded, with one exception:
# qemu-system-x86 and qemu-utils must come from one QEMU release (a newer qemu-utils, e.g.
# 10.0 from bookworm-backports, Breaks bookworm's qemu-system-common 7.2, and apt used to
# settle that by removing it: "qemu-img is required"), so when either is to be installed,
# qemu-utils is named at the version qemu-system-x86 has or will have (a downgrade if need be).
# Afterwards every command, file and library the mode promises is checked; each one missing
# gets a line naming its package, and the script exits 1. Nothing is printed when all is there.
#
# Environment: VMDESK_DEPS_CHECK_ONLY=1 only checks (installs nothing); VMDESK_VENV;
# VMDESK_ASSETS (default target/assets: the unpacked spice-vdagent there is checked with ldd).
set -euo pipefail
mode=${1:-run}
case $mode in
  run | test | bench) ;;
  *) echo "install-deps: unknown mode $mode (run, test or bench)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${VMDESK_VENV:-$root/target/venv}
assets=${VMDESK_ASSETS:-$root/target/assets}

# What each mode promises, a package a line: the package, then what the check looks for
# from it: a command on PATH, a file (/...), or a shared library (lib*.so*, in ld.so's cache).
promises=(
  "seabios /usr/share/seabios/bios-256k.bin /usr/share/seabios/vgabios-stdvga.bin"
  # User-mode networking (NAT, the default): vmdesk-vmm starts one passt per VM.
  "passt passt"
  # The build assembles the demo VM's boot image; real-mode test programs are assembled at
  # test time too.
  "binutils as ld"
  # OS detection from an installer ISO (app/src/osinfo): libosinfo's database.
  "osinfo-db /usr/share/osinfo/os/debian.org/debian-11.xml"
)
if [[ $mode == test || $mode == bench ]]; then
  promises+=(
    # QEMU: the reference for parity tests and benchmarks, and the nested test host
    # (qemu-system-x86_64 with virtio-9p); qemu-img and qemu-io: disk images.
    "qemu-system-x86 qemu-system-x86_64"
    # nested-host.sh builds the shim its outer QEMU preloads (tcg-bql-shim.c); libc6-dev
    # for its headers and -ldl.
    "gcc gcc"
    "libc6-dev /usr/include/dlfcn.h"
    "qemu-utils qemu-img qemu-io"
    "e2fsprogs mke2fs e2fsck debugfs"
    # ISO images; ACPI tables disassembled.
    "xorriso xorriso"
    # UEFI: QEMU's reference firmware (OVMF) and test-assets.sh's UEFI media: GRUB for
    # x86_64-efi (grub-efi-amd64-bin's modules; grub-mkstandalone and grub-mkrescue are
    # grub-common's), FAT filesystems made and filled inside image files without mounting
    # (mkfs.fat --offset, mtools; grub-mkrescue needs mformat too) and the GPT of the EFI
    # disk (sfdisk). mkfs.fat and sfdisk are checked as files: /usr/sbin is not on every
    # user's PATH, and test-assets.sh adds it.
    "ovmf /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd"
    "grub-efi-amd64-bin /usr/lib/grub/x86_64-efi/linux.mod /usr/lib/grub/x86_64-efi/part_gpt.mod"
    "grub-common grub-mkstandalone grub-mkrescue"
    "mtools mformat mmd mcopy mdir"
    "dosfstools /usr/sbin/mkfs.fat"
    "fdisk /usr/sbin/sfdisk"
    "acpica-tools iasl"
    # Real X and VNC clients and servers; the X clipboard of the guest agent's test.
    "xvfb Xvfb"
    "x11-apps xwd"
    "imagemagick import display"
    "xdotool xdotool"
    "tigervnc-viewer vncviewer"
    "tigervnc-standalone-server Xtigervnc"
    "xclip xclip"
    # The real noVNC against our VNC port over WebSocket (display/tests/novnc.rs): Debian's
    # Chromium, headless, driven by puppeteer-core under Node.js; test-assets.sh fetches
    # noVNC and puppeteer-core with npm (see below for npm's package).
    "chromium chromium"
    "nodejs node"
    # The launcher entry's check (app/tests/desktop_entry.rs).
    "desktop-file-utils desktop-file-validate"
    # OCR: which screen of Debian's graphical installer is showing (graphical_install.rs,
    # the installer_screen benchmark), in English.
    "tesseract-ocr tesseract"
    "tesseract-ocr-eng /usr/share/tesseract-ocr/5/tessdata/eng.traineddata"
    # The venv below (vncdotool's vncdo).
    "python3-venv python3"
    # test-assets.sh packs initrds and decompresses kernel modules; nested-host.sh runs one
    # nested host at a time (flock); bench-vnc.sh looks for free ports and compares files;
    # the tests stop processes and bound commands in time.
    "cpio cpio"
    "gzip gzip"
    "xz-utils xz"
    "zstd zstd"
    "util-linux flock"
    "iproute2 ss"
    "diffutils cmp"
    "procps kill"
    "coreutils timeout sha256sum"
    # The network benchmark's TCP throughput, on the host beside vmdesk-vmm and QEMU.
    "iperf3 iperf3"
    # The SPICE guest agent's binaries (test-assets.sh unpacks Debian's spice-vdagent into
    # target/assets/spice-vdagent, without installing it; vmm/tests/guest_agent.rs runs them
    # here): the libraries of the package's Depends (apt-cache depends spice-vdagent), with
    # the sonames its two binaries are linked against.
    "libgtk-3-0 libgtk-3.so.0 libgdk-3.so.0"
    "libx11-6 libX11.so.6"
    "libxinerama1 libXinerama.so.1"
    "libxrandr2 libXrandr.so.2"
    "libasound2 libasound.so.2"
    "libdrm2 libdrm.so.2"
    "libglib2.0-0 libglib-2.0.so.0 libgobject-2.0.so.0 libgio-2.0.so.0"
    "libdbus-1-3 libdbus-1.so.3"
    "libpciaccess0 libpciaccess.so.0"
    "libsystemd0 libsystemd.so.0"
  )
fi

# npm: Debian's nodejs leaves it to a package of its own (npm); NodeSource's nodejs carries
# it and conflicts with that package. So it is promised only where no npm is there yet.
if [[ $mode == test || $mode == bench ]] && ! command -v npm >/dev/null; then
  promises+=("npm npm")
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
installed_version() { installed "$1" && dpkg-query -W -f='${Version}' "$1"; }

install_packages() {
  local line missing=() p sudo="" sysv utilsv pin allow=() log
  for line in "${promises[@]}"; do
    p=${line%% *}
    installed "$p" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) != 0 ]] && sudo=sudo
  $sudo apt-get update -qq \
    || echo "install-deps: apt-get update failed; going on with the package lists there are" >&2

  # One QEMU release (see the top): qemu-utils at the version of qemu-system-x86, the
  # installed one or else the one apt would install.
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* || " ${missing[*]} " == *" qemu-utils "* ]]; then
    sysv=$(installed_version qemu-system-x86 \
           || apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    utilsv=$(installed_version qemu-utils || true)
    if [[ -n $sysv && $sysv != "(none)" && $utilsv != "$sysv" ]] \
       && apt-cache show "qemu-utils=$sysv" >/dev/null 2>&1; then
      pin="qemu-utils=$sysv"
      for p in "${!missing[@]}"; do
        if [[ ${missing[p]} == qemu-utils ]]; then unset 'missing[p]'; fi
      done
      missing+=("$pin")
      if [[ -n $utilsv ]]; then
        echo "install-deps: qemu-utils $utilsv -> $sysv, the release of qemu-system-x86" >&2
        if dpkg --compare-versions "$utilsv" gt "$sysv"; then allow=(--allow-downgrades); fi
      fi
    fi
  fi

  echo "install-deps: installing ${missing[*]}" >&2
  log=$(mktemp)
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       --no-remove "${allow[@]}" "${missing[@]}" > "$log" 2>&1; then
    echo "install-deps: apt-get install failed:" >&2
    grep -v -e '^Reading ' -e '^Building ' -e '^Selecting ' -e '^Preparing ' -e '^Unpacking ' \
      -e '^Setting up ' -e '^Processing ' "$log" | sed 's/^/  /' >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

make_venv() {
  if [[ ! -x $venv/bin/vncdo ]]; then
    echo "install-deps: creating $venv with vncdotool" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q vncdotool
  fi
}

# The package of a promised library or command $1, or empty.
package_of() {
  local line
  for line in "${promises[@]}"; do
    [[ " ${line#* } " == *" $1 "* ]] && { echo "${line%% *}"; return; }
  done
  return 0
}

check() {
  local line pkg item misses=() ldconfig libs bin so dir
  ldconfig=$(PATH=$PATH:/usr/sbin:/sbin command -v ldconfig || true)
  libs=$([[ -n $ldconfig ]] && "$ldconfig" -p 2>/dev/null | awk 'NR > 1 {print $1}' || true)
  for line in "${promises[@]}"; do
    pkg=${line%% *}
    for item in ${line#* }; do
      case $item in
        /*) [[ -e $item ]] || misses+=("file $item (package $pkg)") ;;
        lib*.so*) grep -qxF "$item" <<< "$libs" || misses+=("library $item (package $pkg)") ;;
        *)
          # type -P: the program on PATH, not a shell builtin of the same name (kill).
          type -P "$item" >/dev/null && continue
          dir=
          for so in /usr/sbin /sbin /usr/bin /bin; do [[ -x $so/$item ]] && { dir=$so; break; }; done
          if [[ -n $dir ]]; then
            misses+=("command $item (package $pkg): it is in $dir, which is not on PATH")
          else
            misses+=("command $item (package $pkg)")
          fi
          ;;
      esac
    done
  done
  if [[ $mode == test || $mode == bench ]]; then
    [[ -x $venv/bin/vncdo ]] \
      || misses+=("command $venv/bin/vncdo (pip package vncdotool in the venv $venv; python3-venv)")
    # The unpacked agent's binaries, once test-assets.sh has made them: every library they
    # need (their own and what those need) must load.
    for bin in "$assets/spice-vdagent/usr/bin/spice-vdagent" "$assets/spice-vdagent/usr/sbin/spice-vdagentd"; do
      [[ -e $bin ]] || continue
      while read -r so; do
        pkg=$(package_of "$so")
        if [[ -n $pkg ]]; then pkg="package $pkg"
        else pkg="from one of spice-vdagent's Depends: apt-cache depends spice-vdagent"; fi
        misses+=("library $so for $bin ($pkg)")
      done < <(ldd "$bin" 2>&1 | awk '/=> not found/ {print $1}')
    done
  fi
  ((${#misses[@]})) || return 0
  for item in "${misses[@]}"; do echo "install-deps: missing $item" >&2; done
  echo "install-deps: ${#misses[@]} of what \`install-deps.sh $mode\` promises missing" >&2
  return 1
}

if [[ ${VMDESK_DEPS_CHECK_ONLY:-} != 1 ]]; then
  install_packages
  [[ $mode == run ]] || make_venv
fi
check
