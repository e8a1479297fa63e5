//! The parts of `<linux/kvm.h>` (x86-64) the plugin uses: request numbers
//! (each `_IOR`/`_IOW` one carries its structure's size, so state moves as
//! opaque bytes) and the few `struct kvm_run` fields it reads.

pub const TYPE: u8 = 0xae;

// System ioctls (on /dev/kvm).
pub const KVM_CREATE_VM: u32 = 0xae01;
pub const KVM_GET_MSR_INDEX_LIST: u32 = 0xc004_ae02;
pub const KVM_CHECK_EXTENSION: u32 = 0xae03;

// VM ioctls.
pub const KVM_CREATE_VCPU: u32 = 0xae41;
pub const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_ae46;
/// `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)` (160 bytes).
pub const KVM_SET_USER_MEMORY_REGION2: u32 = 0x40a0_ae49;
pub const KVM_SET_TSS_ADDR: u32 = 0xae47;
pub const KVM_SET_IDENTITY_MAP_ADDR: u32 = 0x4008_ae48;
pub const KVM_CREATE_IRQCHIP: u32 = 0xae60;
pub const KVM_CREATE_PIT2: u32 = 0x4040_ae77;
pub const KVM_GET_IRQCHIP: u32 = 0xc208_ae62;
pub const KVM_SET_IRQCHIP: u32 = 0x8208_ae63;
pub const KVM_GET_PIT2: u32 = 0x8070_ae9f;
pub const KVM_SET_PIT2: u32 = 0x4070_aea0;
pub const KVM_GET_CLOCK: u32 = 0x8030_ae7c;
pub const KVM_SET_CLOCK: u32 = 0x4030_ae7b;
pub const KVM_ENABLE_CAP: u32 = 0x4068_aea3;
pub const KVM_IRQFD: u32 = 0x4020_ae76;
pub const KVM_IOEVENTFD: u32 = 0x4040_ae79;
pub const KVM_SET_GSI_ROUTING: u32 = 0x4008_ae6a;
pub const KVM_SET_BOOT_CPU_ID: u32 = 0xae78;
pub const KVM_REGISTER_COALESCED_MMIO: u32 = 0x4010_ae67;
pub const KVM_UNREGISTER_COALESCED_MMIO: u32 = 0x4010_ae68;

// vCPU ioctls.
pub const KVM_RUN: u32 = 0xae80;
pub const KVM_GET_REGS: u32 = 0x8090_ae81;
pub const KVM_SET_REGS: u32 = 0x4090_ae82;
pub const KVM_GET_SREGS: u32 = 0x8138_ae83;
pub const KVM_SET_SREGS: u32 = 0x4138_ae84;
pub const KVM_GET_FPU: u32 = 0x81a0_ae8c;
pub const KVM_SET_FPU: u32 = 0x41a0_ae8d;
pub const KVM_GET_XSAVE: u32 = 0x9000_aea4;
pub const KVM_SET_XSAVE: u32 = 0x5000_aea5;
pub const KVM_GET_XSAVE2: u32 = 0x9000_aecf;
pub const KVM_GET_XCRS: u32 = 0x8188_aea6;
pub const KVM_SET_XCRS: u32 = 0x4188_aea7;
pub const KVM_GET_MSRS: u32 = 0xc008_ae88;
pub const KVM_SET_MSRS: u32 = 0x4008_ae89;
pub const KVM_GET_LAPIC: u32 = 0x8400_ae8e;
pub const KVM_SET_LAPIC: u32 = 0x4400_ae8f;
pub const KVM_SET_CPUID2: u32 = 0x4008_ae90;
pub const KVM_SET_CPUID: u32 = 0x4008_ae8a;
pub const KVM_GET_VCPU_EVENTS: u32 = 0x8040_ae9f;
pub const KVM_SET_VCPU_EVENTS: u32 = 0x4040_aea0;
pub const KVM_GET_MP_STATE: u32 = 0x8004_ae98;
pub const KVM_SET_MP_STATE: u32 = 0x4004_ae99;
pub const KVM_GET_DEBUGREGS: u32 = 0x8080_aea1;
pub const KVM_SET_DEBUGREGS: u32 = 0x4080_aea2;
pub const KVM_SET_SIGNAL_MASK: u32 = 0x4004_ae8b;
pub const KVM_SET_GUEST_DEBUG: u32 = 0x4048_ae9b;
pub const KVM_X86_SETUP_MCE: u32 = 0x4008_ae9c;
pub const KVM_SET_TSC_KHZ: u32 = 0xaea2;

pub const KVM_CAP_XSAVE2: u64 = 0xd0;

/// `struct kvm_run` offsets.
pub const RUN_IMMEDIATE_EXIT: usize = 1;
pub const RUN_EXIT_REASON: usize = 8;
/// The exit union (io, mmio...).
pub const RUN_EXIT: usize = 32;

pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_MMIO: u32 = 6;

/// Bytes a request moves (`_IOC_SIZE`).
pub fn size(req: u32) -> usize {
    ((req >> 16) & 0x3fff) as usize
}

/// Whether the kernel reads a structure from the argument (`_IOC_WRITE`).
pub fn writes_arg(req: u32) -> bool {
    req & 0x4000_0000 != 0
}

/// Size of a variable-length argument given its fixed header: the count
/// in the header's first u32 times the entry size, for the requests that
/// have one.
pub fn entries(req: u32) -> Option<(usize, usize)> {
    // (header bytes, entry bytes)
    match req {
        KVM_SET_CPUID2 => Some((8, 40)),
        KVM_SET_CPUID => Some((8, 24)),
        KVM_SET_GSI_ROUTING => Some((8, 48)),
        KVM_SET_MSRS | KVM_GET_MSRS => Some((8, 16)),
        // struct kvm_signal_mask { u32 len; u8 sigset[len]; }
        KVM_SET_SIGNAL_MASK => Some((4, 1)),
        _ => None,
    }
}

/// The name of a request, for messages.
pub fn name(req: u32) -> String {
    let known = [
        (KVM_CREATE_VM, "KVM_CREATE_VM"),
        (KVM_CREATE_VCPU, "KVM_CREATE_VCPU"),
        (KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION"),
        (KVM_SET_USER_MEMORY_REGION2, "KVM_SET_USER_MEMORY_REGION2"),
        (KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR"),
        (KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR"),
        (KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP"),
        (KVM_CREATE_PIT2, "KVM_CREATE_PIT2"),
        (KVM_ENABLE_CAP, "KVM_ENABLE_CAP"),
        (KVM_IRQFD, "KVM_IRQFD"),
        (KVM_IOEVENTFD, "KVM_IOEVENTFD"),
        (KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING"),
        (KVM_SET_CPUID2, "KVM_SET_CPUID2"),
        (KVM_SET_REGS, "KVM_SET_REGS"),
        (KVM_SET_SREGS, "KVM_SET_SREGS"),
        (KVM_SET_XSAVE, "KVM_SET_XSAVE"),
        (KVM_SET_FPU, "KVM_SET_FPU"),
        (KVM_SET_XCRS, "KVM_SET_XCRS"),
        (KVM_SET_LAPIC, "KVM_SET_LAPIC"),
        (KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS"),
        (KVM_SET_MP_STATE, "KVM_SET_MP_STATE"),
        (KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS"),
        (KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP"),
        (KVM_SET_PIT2, "KVM_SET_PIT2"),
        (KVM_SET_CLOCK, "KVM_SET_CLOCK"),
        (KVM_RUN, "KVM_RUN"),
    ];
    known
        .iter()
        .find(|(r, _)| *r == req)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("KVM ioctl {req:#x}"))
}

/// VM ioctls that configure the VM: replayed, in order, at restart.
pub const VM_CONFIG: &[u32] = &[
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_CREATE_PIT2,
    KVM_ENABLE_CAP,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_SET_GSI_ROUTING,
    KVM_SET_BOOT_CPU_ID,
    KVM_REGISTER_COALESCED_MMIO,
    KVM_UNREGISTER_COALESCED_MMIO,
];

/// vCPU ioctls that configure a vCPU: replayed after its creation.
pub const VCPU_CONFIG: &[u32] = &[
    KVM_SET_CPUID2,
    KVM_SET_CPUID,
    KVM_ENABLE_CAP,
    KVM_SET_SIGNAL_MASK,
    KVM_SET_GUEST_DEBUG,
    KVM_X86_SETUP_MCE,
    KVM_SET_TSC_KHZ,
];

/// Read a little-endian u32 at `off`, 0 when out of range.
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// Read a little-endian u64 at `off`, 0 when out of range.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_the_request_numbers() {
        assert_eq!(size(KVM_GET_REGS), 144);
        assert_eq!(size(KVM_GET_SREGS), 312);
        assert_eq!(size(KVM_GET_XSAVE), 4096);
        assert_eq!(size(KVM_GET_LAPIC), 1024);
        assert_eq!(size(KVM_GET_IRQCHIP), 520);
        assert_eq!(size(KVM_SET_USER_MEMORY_REGION), 32);
        assert_eq!(size(KVM_SET_USER_MEMORY_REGION2), 160);
        assert!(writes_arg(KVM_SET_REGS) && !writes_arg(KVM_GET_REGS));
        assert!(!writes_arg(KVM_CREATE_VCPU));
    }
}
