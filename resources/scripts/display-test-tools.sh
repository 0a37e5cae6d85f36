#!/usr/bin/env bash
# Installs the real VNC clients the display tests drive: vncdotool (PyPI) into a venv at
# ${VMDESK_VENV:-target/venv}, and the Debian packages xvfb, tigervnc-viewer and
# imagemagick when their programs are missing. Safe to run again: it only adds what is
# absent. Uses sudo for apt only when not already root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${VMDESK_VENV:-$root/target/venv}"

apt_pkgs=()
command -v Xvfb >/dev/null 2>&1 || apt_pkgs+=(xvfb)
command -v vncviewer >/dev/null 2>&1 || apt_pkgs+=(tigervnc-viewer)
command -v import >/dev/null 2>&1 || apt_pkgs+=(imagemagick)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_pkgs+=(python3-venv)
fi
if ((${#apt_pkgs[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "display-test-tools: installing ${apt_pkgs[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >&2
fi

if [ ! -x "$venv/bin/vncdo" ]; then
    echo "display-test-tools: installing vncdotool into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check vncdotool >&2
fi
echo "display-test-tools: vncdo at $venv/bin/vncdo" >&2
