//! CPUID for each vCPU: what KVM supports, with a topology that matches the vCPU count
//! (one socket, N cores, one thread per core) so firmware and guests count CPUs right, and
//! what KVM leaves to the VMM, filled as QEMU's `-cpu host` fills it: the TSC-deadline bit
//! (the in-kernel LAPIC emulates that timer), the host CPU's brand string, and (from KVMs
//! before Linux 6.2, which report it empty) AMD's L1 cache and TLB leaf.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_ADDR_SIZES: u32 = 0x8000_0008;

const LEAF_BRAND: [u32; 3] = [0x8000_0002, 0x8000_0003, 0x8000_0004];
const LEAF_AMD_L1: u32 = 0x8000_0005;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Bits needed to hold `n - 1` (the width of an APIC-ID field for `n` units).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// What KVM_GET_SUPPORTED_CPUID leaves out but the machine has: the TSC-deadline timer
/// when KVM's LAPIC offers it (`tsc_deadline`), the brand string (leaves 0x8000_0002-4,
/// which KVM does not report) and, where KVM reports it empty, the L1 cache and TLB leaf
/// 0x8000_0005 (Linux reads its TLB sizes there on AMD); `host` answers CPUID `leaf` on
/// this machine.
pub fn complete(cpuid: &mut CpuId, tsc_deadline: bool, host: impl Fn(u32) -> [u32; 4]) {
    for e in cpuid.as_mut_slice() {
        if e.function == LEAF_FEATURES && tsc_deadline {
            e.ecx |= ECX_TSC_DEADLINE;
        }
    }
    let kvm_l1_empty = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == LEAF_AMD_L1)
        .is_none_or(|e| [e.eax, e.ebx, e.ecx, e.edx] == [0; 4]);
    let from_host = LEAF_BRAND
        .iter()
        .copied()
        .chain(kvm_l1_empty.then_some(LEAF_AMD_L1));
    for leaf in from_host {
        let [eax, ebx, ecx, edx] = host(leaf);
        let entry = kvm_cpuid_entry2 {
            function: leaf,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        match cpuid.as_mut_slice().iter_mut().find(|e| e.function == leaf) {
            Some(e) => *e = entry,
            // Only a full table (KVM_MAX_CPUID_ENTRIES) refuses; the guest then sees
            // KVM's answer for the leaf, which is no worse than before.
            None => {
                let _ = cpuid.push(entry);
            }
        }
    }
}

/// CPUID `leaf` (subleaf 0) on this machine.
pub fn host_leaf(leaf: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Rewrites the topology leaves of `cpuid` for vCPU `id` of `count`.
pub fn set_topology(cpuid: &mut CpuId, id: u32, count: u32) {
    let core_bits = id_bits(count);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | ((count.max(1) & 0xff) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                let level = (e.eax >> 5) & 0x7;
                // Cores per package, and how many share this cache (L3 is shared by all).
                let shared = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((shared & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => topology_subleaf(e, id, count, core_bits),
            LEAF_EXT_ADDR_SIZES => {
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff) | (core_bits << 12);
            }
            _ => {}
        }
    }
}

fn topology_subleaf(e: &mut kvm_cpuid_entry2, id: u32, count: u32, core_bits: u32) {
    const SMT: u32 = 1;
    const CORE: u32 = 2;
    e.edx = id;
    match e.index {
        0 => {
            e.eax = 0;
            e.ebx = 1;
            e.ecx = (SMT << 8) | e.index;
        }
        1 => {
            e.eax = core_bits;
            e.ebx = count;
            e.ecx = (CORE << 8) | e.index;
        }
        _ => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = e.index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(0x1, 0),
            entry(0x4, 0),
            kvm_cpuid_entry2 {
                function: 0x4,
                index: 3,
                eax: 3 << 5,
                ..Default::default()
            },
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
        ])
        .unwrap()
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn two_vcpus_have_their_own_apic_ids_and_a_shared_count() {
        let mut c = sample();
        set_topology(&mut c, 1, 2);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].eax >> 26, 1, "two cores per package");
        assert_eq!((e[2].eax >> 14) & 0xfff, 1, "L3 shared by both");
        assert_eq!((e[3].ebx, e[3].edx), (1, 1));
        assert_eq!((e[4].eax, e[4].ebx, e[4].ecx >> 8), (1, 2, 2));
        assert_eq!(e[5].ecx >> 8, 0, "no third level");
        assert_eq!(e[6].ecx & 0xff, 1);
    }

    #[test]
    fn completion_sets_tsc_deadline_the_brand_string_and_an_empty_l1_leaf() {
        let host = |leaf: u32| [leaf, leaf + 1, leaf + 2, leaf + 3];
        let mut c = sample();
        complete(&mut c, true, host);
        assert_ne!(c.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
        for leaf in LEAF_BRAND.into_iter().chain([LEAF_AMD_L1]) {
            let e = c.as_slice().iter().find(|e| e.function == leaf).unwrap();
            assert_eq!([e.eax, e.ebx, e.ecx, e.edx], host(leaf), "{leaf:#x}");
        }
        // KVM's own L1 leaf (Linux 6.2 on) stays; no TSC-deadline bit without KVM's.
        let mut c = sample();
        let l1 = kvm_cpuid_entry2 {
            function: LEAF_AMD_L1,
            eax: 0xff40_ff18,
            ..Default::default()
        };
        c.push(l1).unwrap();
        complete(&mut c, false, host);
        assert_eq!(c.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
        let e = c.as_slice().iter().find(|e| e.function == LEAF_AMD_L1);
        assert_eq!(e.map(|e| e.eax), Some(0xff40_ff18));
        let brand: Vec<u8> = LEAF_BRAND
            .iter()
            .flat_map(|&l| host_leaf(l))
            .flat_map(u32::to_le_bytes)
            .collect();
        assert!(
            brand.iter().any(|c| c.is_ascii_alphanumeric()),
            "this CPU names itself: {brand:?}"
        );
    }

    #[test]
    fn one_vcpu_has_no_htt() {
        let mut c = sample();
        c.as_mut_slice()[0].edx = EDX_HTT;
        set_topology(&mut c, 0, 1);
        assert_eq!(c.as_slice()[0].edx & EDX_HTT, 0);
    }
}
