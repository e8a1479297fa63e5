//! What the CPU says about itself (CPUID).

/// Where this CPU's standard (non-compacted) XSAVE layout, the one of
/// ptrace's NT_X86_XSTATE regset, places state component `i` (an XCR0 bit
/// number): (offset, size) in bytes, from CPUID leaf 0xD. None for the
/// legacy components 0 and 1 (x87, SSE: fixed offsets in the first 512
/// bytes) and for components this CPU does not have.
///
/// The offsets are the CPU's own: AMD processors with AVX-512 but without
/// MPX place the AVX-512 state at 832, 896 and 1408, where Intel's place it
/// at 1088, 1152 and 1664.
pub fn xsave_component(i: u32) -> Option<(usize, usize)> {
    if !(2..63).contains(&i) {
        return None;
    }
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.eax != 0).then_some((r.ebx as usize, r.eax as usize))
}

#[cfg(test)]
mod tests {
    use super::xsave_component;

    #[test]
    fn avx_state_is_where_every_x86_64_cpu_puts_it() {
        if std::arch::is_x86_feature_detected!("avx") {
            assert_eq!(xsave_component(2), Some((576, 256)));
        }
        assert_eq!(xsave_component(0), None);
        assert_eq!(xsave_component(1), None);
    }
}
