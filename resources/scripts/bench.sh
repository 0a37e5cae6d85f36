#!/usr/bin/env bash
# Every benchmark, each printing its figures beside QEMU's (or the floor it is measured
# against) from the same run. Installs QEMU and the other references first.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
resources/scripts/install-deps.sh bench
cargo bench -p vmm --bench pio_exit
cargo bench -p vmm --bench boot
cargo bench -p vmm --bench key_echo
cargo bench -p vmm --bench static_screen
cargo bench -p vmm --bench virtio_blk
cargo bench -p vmm --bench virtio_blk_guest
# Guest kernels on hardware-backed KVM (in the nested test host on kvm_pvm machines).
cargo bench -p vmm --bench nested_boot
# UEFI: start to OVMF's first screen and to GRUB's menu on VNC, and memory beyond guest RAM,
# beside QEMU with the same OVMF files (in the nested test host on kvm_pvm).
cargo bench -p vmm --bench uefi_boot
# The network card beside QEMU's, both behind passt (in the nested test host on kvm_pvm).
cargo bench -p vmm --bench net_throughput
# The console beside TigerVNC's vncviewer (frame rate, idle CPU, cold start), under Xvfb.
cargo bench -p vmdesk --bench console
# noVNC in headless Chromium beside TigerVNC's vncviewer (updates per second), Raw for both.
resources/scripts/novnc-assets.sh
cargo bench -p display --bench novnc
BENCH_VNC_SKIP_DEPS=1 resources/scripts/bench-vnc.sh
