//! The seccomp-bpf filter of restarted (and later recorded) programs: only
//! the syscalls plugins declared stop in the tracer; everything else runs at
//! native speed, and syscalls injected from the trampoline always pass.

/// struct seccomp_data offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
/// Low 32 bits of args[1] (an ioctl's request number).
const ARG1_LO: u32 = 24;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const AND_K: u16 = 0x54;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_le_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_le_bytes());
    b
}

/// ioctls to trap, by the type byte of their request number (`_IOC_TYPE`),
/// except the listed full request numbers (hot ones a plugin need not see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoctlTrap {
    pub ty: u8,
    pub except: &'static [u32],
}

/// The filter as raw `struct sock_filter` bytes: syscalls in `traced`, and
/// ioctls matching `ioctls`, stop with SECCOMP_RET_TRACE unless made from
/// `trampoline_ip` (the address after the trampoline's `syscall`
/// instruction).
pub fn filter(traced: &[i64], ioctls: &[IoctlTrap], trampoline_ip: u64) -> Vec<u8> {
    let mut prog: Vec<[u8; 8]> = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, IP_HI),
        insn(JEQ_K, 0, 3, (trampoline_ip >> 32) as u32),
        insn(LD_W_ABS, 0, 0, IP_LO),
        insn(JEQ_K, 0, 1, trampoline_ip as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
        insn(LD_W_ABS, 0, 0, NR),
        // x32 syscalls are not ours to translate.
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    // Everything after the syscall list, up to (not including) the final
    // RET_ALLOW, RET_TRACE pair.
    let mut ioctl_part: Vec<[u8; 8]> = Vec::new();
    if !ioctls.is_empty() && !traced.contains(&libc::SYS_ioctl) {
        let excepts: Vec<u32> = ioctls
            .iter()
            .flat_map(|t| t.except.iter().copied())
            .collect();
        let types: Vec<u8> = ioctls.iter().map(|t| t.ty).collect();
        // Instructions after the first JEQ: load, excepts, and, types.
        let rest = 1 + excepts.len() + 1 + types.len();
        ioctl_part.push(insn(JEQ_K, 0, rest as u8, libc::SYS_ioctl as u32));
        ioctl_part.push(insn(LD_W_ABS, 0, 0, ARG1_LO));
        for (i, &e) in excepts.iter().enumerate() {
            // To the RET_ALLOW just after the type checks.
            let to_allow = excepts.len() - i - 1 + 1 + types.len();
            ioctl_part.push(insn(JEQ_K, to_allow as u8, 0, e));
        }
        ioctl_part.push(insn(AND_K, 0, 0, 0xff00));
        for (i, &t) in types.iter().enumerate() {
            let to_trace = types.len() - i - 1 + 1;
            ioctl_part.push(insn(JEQ_K, to_trace as u8, 0, u32::from(t) << 8));
        }
    }
    let n = traced.len();
    for (i, &nr) in traced.iter().enumerate() {
        // On a match jump to the RET_TRACE after the remaining checks and
        // the final RET_ALLOW.
        let to_trace = n - i - 1 + ioctl_part.len() + 1;
        prog.push(insn(JEQ_K, to_trace as u8, 0, nr as u32));
    }
    prog.extend(ioctl_part);
    prog.push(insn(RET_K, 0, 0, RET_ALLOW));
    prog.push(insn(RET_K, 0, 0, RET_TRACE));
    prog.concat()
}

/// The filter of recorded and replayed programs: every syscall stops in
/// the tracer except those in `allowed` (and those made from
/// `trampoline_ip`, when given).
pub fn filter_all_but(allowed: &[i64], trampoline_ip: Option<u64>) -> Vec<u8> {
    filter_all_but_ranges(allowed, trampoline_ip, None)
}

/// `filter_all_but`, also letting through every syscall made from
/// `[base, base + len)` (`base` 4 GiB-aligned, `len` below 4 GiB): the
/// syscall buffer's code.
pub fn filter_all_but_ranges(
    allowed: &[i64],
    trampoline_ip: Option<u64>,
    code: Option<(u64, u64)>,
) -> Vec<u8> {
    let mut prog: Vec<[u8; 8]> = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
    ];
    if let Some(ip) = trampoline_ip {
        prog.extend([
            insn(LD_W_ABS, 0, 0, IP_HI),
            insn(JEQ_K, 0, 3, (ip >> 32) as u32),
            insn(LD_W_ABS, 0, 0, IP_LO),
            insn(JEQ_K, 0, 1, ip as u32),
            insn(RET_K, 0, 0, RET_ALLOW),
        ]);
    }
    if let Some((base, len)) = code {
        prog.extend([
            insn(LD_W_ABS, 0, 0, IP_HI),
            insn(JEQ_K, 0, 3, (base >> 32) as u32),
            insn(LD_W_ABS, 0, 0, IP_LO),
            insn(JGE_K, 1, 0, len as u32),
            insn(RET_K, 0, 0, RET_ALLOW),
        ]);
    }
    prog.push(insn(LD_W_ABS, 0, 0, NR));
    // Jumps are 8-bit: check in groups, each group ending in its own RET.
    for group in allowed.chunks(200) {
        let n = group.len();
        for (i, &nr) in group.iter().enumerate() {
            prog.push(insn(JEQ_K, (n - i) as u8, 0, nr as u32));
        }
        // No match in this group: skip its RET_ALLOW.
        prog.push(insn(JEQ_K, 0, 1, u32::MAX));
        prog.push(insn(RET_K, 0, 0, RET_ALLOW));
    }
    prog.push(insn(RET_K, 0, 0, RET_TRACE));
    prog.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions the filter uses.
    fn run(prog: &[u8], nr: u32, ip: u64) -> u32 {
        run_arg(prog, nr, ip, 0)
    }

    fn run_arg(prog: &[u8], nr: u32, ip: u64, arg1: u32) -> u32 {
        let data = |off: u32| match off {
            NR => nr,
            ARG1_LO => arg1,
            ARCH => AUDIT_ARCH_X86_64,
            IP_LO => ip as u32,
            IP_HI => (ip >> 32) as u32,
            _ => 0,
        };
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            let i = &prog[pc * 8..pc * 8 + 8];
            let code = u16::from_le_bytes([i[0], i[1]]);
            let (jt, jf) = (i[2] as usize, i[3] as usize);
            let k = u32::from_le_bytes([i[4], i[5], i[6], i[7]]);
            pc += 1;
            match code {
                LD_W_ABS => acc = data(k),
                JEQ_K => pc += if acc == k { jt } else { jf },
                JGE_K => pc += if acc >= k { jt } else { jf },
                AND_K => acc &= k,
                RET_K => return k,
                _ => panic!("unknown opcode"),
            }
        }
    }

    #[test]
    fn traces_everything_but_the_allowed() {
        let allowed: Vec<i64> = (0..450).filter(|n| n % 2 == 0).collect();
        let prog = filter_all_but(&allowed, Some(0x7f00_0000_1002));
        for nr in 0..450u32 {
            let want = if nr % 2 == 0 { RET_ALLOW } else { RET_TRACE };
            assert_eq!(run(&prog, nr, 0x401000), want, "syscall {nr}");
        }
        assert_eq!(run(&prog, 1, 0x7f00_0000_1002), RET_ALLOW);
        let prog = filter_all_but(&[], None);
        assert_eq!(run(&prog, 0, 0x401000), RET_TRACE);
    }

    #[test]
    fn lets_the_buffer_code_through() {
        let base = 0x2000_0000_0000;
        let prog = filter_all_but_ranges(&[39], Some(0x7f00_0000_1002), Some((base, 0x10000)));
        assert_eq!(run(&prog, 0, base + 0x100), RET_ALLOW);
        assert_eq!(run(&prog, 0, base + 0xffff), RET_ALLOW);
        assert_eq!(run(&prog, 0, base + 0x10000), RET_TRACE);
        assert_eq!(run(&prog, 0, 0x2001_0000_0100), RET_TRACE);
        assert_eq!(run(&prog, 0, 0x401000), RET_TRACE);
        assert_eq!(run(&prog, 39, 0x401000), RET_ALLOW);
        assert_eq!(run(&prog, 1, 0x7f00_0000_1002), RET_ALLOW);
    }

    #[test]
    fn traces_listed_syscalls_except_from_trampoline() {
        let prog = filter(&[39, 62, 186], &[], 0x7f00_0000_1002);
        assert_eq!(run(&prog, 39, 0x401000), RET_TRACE);
        assert_eq!(run(&prog, 62, 0x401000), RET_TRACE);
        assert_eq!(run(&prog, 186, 0x401000), RET_TRACE);
        assert_eq!(run(&prog, 0, 0x401000), RET_ALLOW);
        assert_eq!(run(&prog, 1, 0x401000), RET_ALLOW);
        assert_eq!(run(&prog, 39, 0x7f00_0000_1002), RET_ALLOW);
        assert_eq!(run(&prog, 39, 0x7f01_0000_1002), RET_TRACE);
        assert_eq!(run(&prog, 39 | X32_SYSCALL_BIT, 0x401000), RET_ALLOW);
    }

    #[test]
    fn traces_ioctls_by_type_but_the_exceptions() {
        let traps = [
            IoctlTrap {
                ty: 0xae,
                except: &[0xae80],
            },
            IoctlTrap {
                ty: b'T',
                except: &[],
            },
        ];
        let ip = 0x7f00_0000_1002;
        let ioctl = libc::SYS_ioctl as u32;
        for traced in [&[39i64, 62][..], &[][..]] {
            let prog = filter(traced, &traps, ip);
            assert_eq!(run_arg(&prog, ioctl, 0x401000, 0xae01), RET_TRACE);
            assert_eq!(run_arg(&prog, ioctl, 0x401000, 0x4040_ae41), RET_TRACE);
            assert_eq!(run_arg(&prog, ioctl, 0x401000, 0xae80), RET_ALLOW);
            assert_eq!(run_arg(&prog, ioctl, 0x401000, 0x4004_54ca), RET_TRACE);
            assert_eq!(run_arg(&prog, ioctl, 0x401000, 0x8912), RET_ALLOW);
            assert_eq!(run_arg(&prog, ioctl, ip, 0xae01), RET_ALLOW);
            assert_eq!(run_arg(&prog, 0, 0x401000, 0xae01), RET_ALLOW);
            for &nr in traced {
                assert_eq!(run_arg(&prog, nr as u32, 0x401000, 0xae01), RET_TRACE);
            }
        }
    }
}
