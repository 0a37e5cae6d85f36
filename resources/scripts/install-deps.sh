#!/usr/bin/env bash
# Installs what vmdesk needs on Debian/Ubuntu, idempotently.
#   install-deps.sh run    what the app needs to build and run (SeaBIOS firmware; binutils,
#                          which assembles the demo VM's boot image at build time)
#   install-deps.sh test   + what the test suite and benchmarks need
# Rust itself is not installed here: vmdesk builds with the stable toolchain (rustup).
set -euo pipefail
mode=${1:-run}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

apt_pkgs=(seabios binutils)
if [[ $mode == test || $mode == bench ]]; then
  # qemu-system-x86: the reference for parity tests and benchmarks; binutils (above): real-mode
  # test programs are assembled at test time too; xorriso: ISO images; the X/VNC tools: real clients;
  # xclip: the X clipboard of the guest agent's test.
  apt_pkgs+=(qemu-system-x86 qemu-utils e2fsprogs cpio xorriso acpica-tools xvfb x11-apps imagemagick xdotool
             tigervnc-viewer tigervnc-standalone-server python3-venv xclip)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) != 0 ]] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || true
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $mode == test || $mode == bench ]]; then
  venv=${VMDESK_VENV:-$root/target/venv}
  if [[ ! -x $venv/bin/vncdo ]]; then
    echo "install-deps: creating $venv with vncdotool" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q vncdotool
  fi
fi
