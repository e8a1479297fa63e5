//! Disassembly (capstone, AT&T syntax like gdb's default) and the
//! instruction questions stepping needs: length, call, return.

use capstone::arch::x86::{ArchMode, ArchSyntax, X86OperandType, X86Reg};
use capstone::arch::{ArchDetail, BuildsCapstone, BuildsCapstoneSyntax, DetailsArchInsn};
use capstone::{Capstone, InsnDetail, InsnGroupType, RegId};

use super::{Program, Target};

/// One decoded instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insn {
    pub addr: u64,
    pub len: usize,
    pub bytes: Vec<u8>,
    /// gdb-style text: `mov    %rsp,%rbp`, `call   0x401030 <puts@plt>`,
    /// `lea    0xe9c(%rip),%rax        # 0x402004`. `(bad)` when the bytes
    /// do not decode.
    pub text: String,
}

fn capstone(detail: bool) -> Option<Capstone> {
    Capstone::new()
        .x86()
        .mode(ArchMode::Mode64)
        .syntax(ArchSyntax::Att)
        .detail(detail)
        .build()
        .ok()
}

/// Read up to `len` bytes at `addr`, stopping at the first unreadable page.
fn read_code(t: &dyn Target, addr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = addr;
    while out.len() < len {
        let n = ((4096 - at % 4096) as usize).min(len - out.len());
        let mut b = vec![0u8; n];
        if t.read(at, &mut b).is_err() {
            // Maybe only part of the page is readable: try byte by byte.
            for i in 0..n {
                let mut one = [0u8];
                if t.read(at + i as u64, &mut one).is_err() {
                    return out;
                }
                out.push(one[0]);
            }
            return out;
        }
        out.extend_from_slice(&b);
        at = at.wrapping_add(n as u64);
    }
    out
}

/// One instruction at `addr` with detail: (length, is_call, is_ret).
fn decode_one(t: &dyn Target, addr: u64) -> Option<(usize, bool, bool)> {
    let cs = capstone(true)?;
    let code = read_code(t, addr, 16);
    let insns = cs.disasm_count(&code, addr, 1).ok()?;
    let insn = insns.iter().next()?;
    let detail = cs.insn_detail(insn).ok()?;
    let groups = detail.groups();
    let call = groups
        .iter()
        .any(|g| u32::from(g.0) == InsnGroupType::CS_GRP_CALL);
    let ret = groups
        .iter()
        .any(|g| u32::from(g.0) == InsnGroupType::CS_GRP_RET);
    Some((insn.len(), call, ret))
}

/// Length of the instruction at `addr`, `None` if it does not decode.
pub fn insn_len(t: &dyn Target, addr: u64) -> Option<usize> {
    decode_one(t, addr).map(|(len, _, _)| len)
}

/// If the instruction at `addr` is a call, its length (for `nexti`: stop
/// at `addr + len`).
pub fn is_call(t: &dyn Target, addr: u64) -> Option<usize> {
    decode_one(t, addr).and_then(|(len, call, _)| call.then_some(len))
}

/// Whether the instruction at `addr` is a return.
pub fn is_ret(t: &dyn Target, addr: u64) -> bool {
    decode_one(t, addr).is_some_and(|(_, _, ret)| ret)
}

impl Program {
    /// Disassemble `count` instructions from `addr` (fewer if memory ends
    /// or bytes do not decode; an undecodable byte becomes `(bad)`).
    pub fn disassemble(&self, t: &dyn Target, addr: u64, count: usize) -> Vec<Insn> {
        let Some(cs) = capstone(true) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < count {
            let code = read_code(t, at, 16);
            if code.is_empty() {
                break;
            }
            let Ok(insns) = cs.disasm_count(&code, at, 1) else {
                break;
            };
            let Some(insn) = insns.iter().next() else {
                out.push(Insn {
                    addr: at,
                    len: 1,
                    bytes: code[..1].to_vec(),
                    text: "(bad)".to_string(),
                });
                at = at.wrapping_add(1);
                continue;
            };
            let text = match cs.insn_detail(insn) {
                Ok(detail) => self.gnu_text(&cs, insn, &detail),
                Err(_) => None,
            };
            let text = text.unwrap_or_else(|| {
                let mnemonic = insn.mnemonic().unwrap_or("");
                let ops = insn.op_str().unwrap_or("").replace(", ", ",");
                if ops.is_empty() {
                    mnemonic.to_string()
                } else {
                    format!("{mnemonic:<6} {ops}")
                }
            });
            out.push(Insn {
                addr: at,
                len: insn.len(),
                bytes: insn.bytes().to_vec(),
                text,
            });
            at = at.wrapping_add(insn.len() as u64);
        }
        out
    }
}

/// Mnemonics whose size suffix GNU objdump never prints in 64-bit code.
const SUFFIX_NEVER: &[&str] = &[
    "push", "pop", "call", "ret", "leave", "jmp", "enter", "iret",
];
/// Mnemonics whose size suffix GNU objdump drops when a register operand
/// already gives the size.
const SUFFIX_IF_REG: &[&str] = &[
    "mov", "add", "sub", "and", "or", "xor", "cmp", "test", "lea", "inc", "dec", "neg", "not",
    "shl", "shr", "sar", "sal", "rol", "ror", "rcl", "rcr", "imul", "mul", "div", "idiv", "xchg",
    "adc", "sbb", "cmpxchg", "xadd", "bsf", "bsr", "bt", "bts", "btr", "btc", "bswap", "tzcnt",
    "lzcnt", "popcnt", "movabs", "shld", "shrd", "andn", "movbe",
];

/// Capstone's AT&T mnemonic as GNU objdump spells it.
fn gnu_mnemonic(m: &str, has_reg: bool) -> String {
    let (prefix, word) = match m.rsplit_once(' ') {
        Some((p, w)) => (Some(p), w),
        None => (None, m),
    };
    let stripped = word
        .strip_suffix(['b', 'w', 'l', 'q'])
        .filter(|base| {
            SUFFIX_NEVER.contains(base)
                || (has_reg && (SUFFIX_IF_REG.contains(base) || base.starts_with("cmov")))
        })
        .unwrap_or(word);
    match prefix {
        Some(p) => format!("{p} {stripped}"),
        None => stripped.to_string(),
    }
}

fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

impl Program {
    /// GNU-style AT&T text from capstone's operand details (capstone's own
    /// text differs in immediates, displacements and suffixes).
    fn gnu_text(
        &self,
        cs: &Capstone,
        insn: &capstone::Insn,
        detail: &InsnDetail,
    ) -> Option<String> {
        let ArchDetail::X86Detail(x86) = detail.arch_detail() else {
            return None;
        };
        let groups = detail.groups();
        let branch = groups.iter().any(|g| {
            let g = u32::from(g.0);
            g == InsnGroupType::CS_GRP_JUMP || g == InsnGroupType::CS_GRP_CALL
        });
        let next = insn.address().wrapping_add(insn.len() as u64);
        let reg = |r: RegId| cs.reg_name(r).map(|n| format!("%{n}"));
        let ops: Vec<_> = x86.operands().collect();
        let has_reg = ops
            .iter()
            .any(|o| matches!(o.op_type, X86OperandType::Reg(_)));
        let mut texts = Vec::new();
        let mut comment = String::new();
        for op in &ops {
            let text = match &op.op_type {
                X86OperandType::Reg(r) => {
                    let r = reg(*r)?;
                    if branch {
                        format!("*{r}")
                    } else {
                        r
                    }
                }
                X86OperandType::Imm(v) => {
                    if branch {
                        let target = *v as u64;
                        format!("{target:#x}{}", self.symbol_suffix(target))
                    } else {
                        let bits = u32::from(op.size.clamp(1, 8)) * 8;
                        let mask = if bits >= 64 {
                            u64::MAX
                        } else {
                            (1u64 << bits) - 1
                        };
                        format!("${:#x}", (*v as u64) & mask)
                    }
                }
                X86OperandType::Mem(mem) => {
                    let mut t = String::new();
                    if branch {
                        t.push('*');
                    }
                    if mem.segment().0 != 0 {
                        t.push_str(&reg(mem.segment())?);
                        t.push(':');
                    }
                    let base = mem.base();
                    let index = mem.index();
                    let has_disp = x86.encoding().disp.is_some();
                    if base.0 == 0 && index.0 == 0 {
                        t.push_str(&format!("{:#x}", mem.disp() as u64));
                    } else {
                        if mem.disp() != 0 || has_disp {
                            t.push_str(&signed_hex(mem.disp()));
                        }
                        t.push('(');
                        if base.0 != 0 {
                            t.push_str(&reg(base)?);
                        }
                        if index.0 != 0 {
                            t.push(',');
                            t.push_str(&reg(index)?);
                            t.push_str(&format!(",{}", mem.scale()));
                        }
                        t.push(')');
                    }
                    if u32::from(base.0) == X86Reg::X86_REG_RIP {
                        let target = next.wrapping_add(mem.disp() as u64);
                        comment = format!("        # {target:#x}{}", self.symbol_suffix(target));
                    }
                    t
                }
                X86OperandType::Invalid => return None,
            };
            texts.push(text);
        }
        let mnemonic = gnu_mnemonic(insn.mnemonic()?, has_reg);
        if texts.is_empty() {
            return Some(mnemonic);
        }
        Some(format!("{mnemonic:<6} {}{comment}", texts.join(",")))
    }
}
