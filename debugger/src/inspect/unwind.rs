//! Call frame information (`.eh_frame`, `.debug_frame`) and the unwinder:
//! CFI first, then the `rbp` chain when no CFI covers a pc.

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, Register, RegisterRule, UnwindContext,
    UnwindSection,
};

use super::dwarf::DieRef;
use super::elf::{FileData, R};
use super::{Loc, Program, Target};

/// One FDE's address range, for binary search.
#[derive(Debug, Clone, Copy)]
struct FdeSpan {
    start: u64,
    end: u64,
    offset: usize,
    eh: bool,
}

/// A file's CFI, indexed by address (link-time).
pub(crate) struct Cfi {
    eh_frame: Option<(EhFrame<R>, BaseAddresses)>,
    debug_frame: Option<(DebugFrame<R>, BaseAddresses)>,
    index: Vec<FdeSpan>,
}

/// The unwind rules at one pc, detached from gimli's context.
pub(crate) struct Rules {
    cfa: CfaRule<usize>,
    regs: Vec<(Register, RegisterRule<usize>)>,
    /// The FDE describes a signal trampoline (`S` augmentation).
    signal: bool,
    eh: bool,
}

fn bases_for(file: &FileData) -> BaseAddresses {
    let addr = |name: &str| file.section(name).map(|s| s.addr).unwrap_or(0);
    BaseAddresses::default()
        .set_eh_frame(addr(".eh_frame"))
        .set_eh_frame_hdr(addr(".eh_frame_hdr"))
        .set_text(addr(".text"))
        .set_got(addr(".got"))
}

fn index_section<S: UnwindSection<R>>(
    section: &S,
    bases: &BaseAddresses,
    eh: bool,
    out: &mut Vec<FdeSpan>,
) where
    S::Offset: gimli::UnwindOffset<usize>,
{
    let mut entries = section.entries(bases);
    let mut guard = 0usize;
    while let Ok(Some(entry)) = entries.next() {
        guard += 1;
        if guard > 5_000_000 {
            break;
        }
        if let gimli::CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(S::cie_from_offset) {
                let start = fde.initial_address();
                let end = start.saturating_add(fde.len());
                if end > start {
                    out.push(FdeSpan {
                        start,
                        end,
                        offset: fde.offset(),
                        eh,
                    });
                }
            }
        }
    }
}

impl Cfi {
    pub fn load(file: &FileData) -> Cfi {
        let bases = bases_for(file);
        let mut index = Vec::new();
        let eh_frame = file.section(".eh_frame").and_then(|s| s.file).map(|_| {
            let mut eh = EhFrame::from(file.reader(".eh_frame"));
            eh.set_address_size(8);
            index_section(&eh, &bases, true, &mut index);
            (eh, bases.clone())
        });
        let debug_frame = file.section(".debug_frame").and_then(|s| s.file).map(|_| {
            let mut df = DebugFrame::from(file.reader(".debug_frame"));
            df.set_address_size(8);
            index_section(&df, &bases, false, &mut index);
            (df, bases.clone())
        });
        // .eh_frame first at equal starts (stable sort keeps insertion order).
        index.sort_by_key(|f| f.start);
        Cfi {
            eh_frame,
            debug_frame,
            index,
        }
    }

    /// The rules at link-time address `pc`.
    pub fn rules(&self, pc: u64) -> Option<Rules> {
        let i = self.index.partition_point(|f| f.start <= pc);
        let span = self.index[..i].iter().rev().take(8).find(|f| pc < f.end)?;
        if span.eh {
            let (eh, bases) = self.eh_frame.as_ref()?;
            rules_in(eh, bases, gimli::EhFrameOffset(span.offset), pc, true)
        } else {
            let (df, bases) = self.debug_frame.as_ref()?;
            rules_in(df, bases, gimli::DebugFrameOffset(span.offset), pc, false)
        }
    }

    fn expression(
        &self,
        eh: bool,
        e: &gimli::UnwindExpression<usize>,
    ) -> Option<gimli::Expression<R>> {
        if eh {
            e.get(&self.eh_frame.as_ref()?.0).ok()
        } else {
            e.get(&self.debug_frame.as_ref()?.0).ok()
        }
    }
}

/// A register of `user_regs_struct` by DWARF number (x86-64 psABI).
pub(crate) fn reg_get(regs: &libc::user_regs_struct, n: u16) -> Option<u64> {
    Some(match n {
        0 => regs.rax,
        1 => regs.rdx,
        2 => regs.rcx,
        3 => regs.rbx,
        4 => regs.rsi,
        5 => regs.rdi,
        6 => regs.rbp,
        7 => regs.rsp,
        8 => regs.r8,
        9 => regs.r9,
        10 => regs.r10,
        11 => regs.r11,
        12 => regs.r12,
        13 => regs.r13,
        14 => regs.r14,
        15 => regs.r15,
        16 => regs.rip,
        49 => regs.eflags,
        _ => return None,
    })
}

fn reg_set(regs: &mut libc::user_regs_struct, n: u16, v: u64) {
    match n {
        0 => regs.rax = v,
        1 => regs.rdx = v,
        2 => regs.rcx = v,
        3 => regs.rbx = v,
        4 => regs.rsi = v,
        5 => regs.rdi = v,
        6 => regs.rbp = v,
        7 => regs.rsp = v,
        8 => regs.r8 = v,
        9 => regs.r9 = v,
        10 => regs.r10 = v,
        11 => regs.r11 = v,
        12 => regs.r12 = v,
        13 => regs.r13 = v,
        14 => regs.r14 = v,
        15 => regs.r15 = v,
        16 => regs.rip = v,
        49 => regs.eflags = v,
        _ => {}
    }
}

pub(crate) fn read_u64(t: &dyn Target, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    t.read(addr, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Evaluate a CFI expression to a number (the address or value it leaves).
fn eval_cfi_expr(
    t: &dyn Target,
    expr: gimli::Expression<R>,
    regs: &libc::user_regs_struct,
    initial: Option<u64>,
) -> Option<u64> {
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf32,
        version: 4,
        address_size: 8,
    };
    let mut eval = expr.evaluation(encoding);
    if let Some(v) = initial {
        eval.set_initial_value(v);
    }
    eval.set_max_iterations(10_000);
    let mut state = eval.evaluate().ok()?;
    loop {
        state = match state {
            gimli::EvaluationResult::Complete => break,
            gimli::EvaluationResult::RequiresRegister { register, .. } => {
                let v = reg_get(regs, register.0)?;
                eval.resume_with_register(gimli::Value::Generic(v)).ok()?
            }
            gimli::EvaluationResult::RequiresMemory { address, size, .. } => {
                let mut b = [0u8; 8];
                let n = usize::from(size).min(8);
                t.read(address, &mut b[..n]).ok()?;
                eval.resume_with_memory(gimli::Value::Generic(u64::from_le_bytes(b)))
                    .ok()?
            }
            _ => return None,
        };
    }
    let pieces = eval.result();
    match pieces.first()?.location {
        gimli::Location::Address { address } => Some(address),
        gimli::Location::Value { value } => value.to_u64(!0).ok(),
        _ => None,
    }
}

/// One frame of a backtrace.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 0 for the innermost frame.
    pub level: usize,
    /// The frame's pc: the current rip for frame 0, the return address for
    /// callers.
    pub pc: u64,
    /// The address used for symbol and line lookups: `pc - 1` for callers
    /// (inside the call instruction), `pc` for frame 0 and for frames
    /// interrupted by a signal.
    pub lookup_pc: u64,
    /// The canonical frame address (the caller's rsp before the call), or 0
    /// when unknown.
    pub cfa: u64,
    /// The frame's registers: exact for frame 0; for callers rip, rsp, rbp,
    /// rbx and r12-r15 are recovered, the others are carried over.
    pub regs: libc::user_regs_struct,
    pub function: Option<String>,
    pub loc: Option<Loc>,
    /// This frame is a call the compiler inlined into the next frame's
    /// function: both are the same machine frame (same registers and
    /// CFA). `finish` from it means running to the end of its block, not
    /// to a return address.
    pub inlined: bool,
    /// This frame is the kernel's signal trampoline (`__restore_rt`): the
    /// next frame was interrupted by a signal whose handler is the previous
    /// frame. gdb shows it as `<signal handler called>`.
    pub signal_frame: bool,
    /// The scope of an inlined frame (its DW_TAG_inlined_subroutine).
    pub(crate) block: Option<DieRef>,
    /// The previous (inner) frame is inlined into this one: gdb then
    /// shows no address for this frame.
    pub(crate) callee_inlined: bool,
}

impl Program {
    /// Apply CFI rules at `lookup` (runtime) to `regs`. Returns the caller's
    /// registers, this frame's CFA and whether this frame is a signal frame.
    /// `None`: no CFI here. `Some(None)`: CFI says the stack ends here.
    #[allow(clippy::type_complexity)]
    fn unwind_cfi(
        &self,
        t: &dyn Target,
        lookup: u64,
        regs: &libc::user_regs_struct,
    ) -> Option<Option<(libc::user_regs_struct, u64, bool)>> {
        let module = self.module_at(lookup)?;
        let cfi = module.image.cfi();
        let rules = cfi.rules(lookup.wrapping_sub(module.bias))?;
        let cfa = match &rules.cfa {
            CfaRule::RegisterAndOffset { register, offset } => {
                reg_get(regs, register.0)?.wrapping_add(*offset as u64)
            }
            CfaRule::Expression(e) => {
                let expr = cfi.expression(rules.eh, e)?;
                eval_cfi_expr(t, expr, regs, None)?
            }
        };
        let mut out = *regs;
        out.rsp = cfa;
        let mut ra_defined = false;
        for (reg, rule) in &rules.regs {
            let v = match rule {
                RegisterRule::Undefined => {
                    if reg.0 == 16 {
                        return Some(None);
                    }
                    continue;
                }
                RegisterRule::SameValue | RegisterRule::Architectural => continue,
                RegisterRule::Offset(n) => read_u64(t, cfa.wrapping_add(*n as u64))?,
                RegisterRule::ValOffset(n) => cfa.wrapping_add(*n as u64),
                RegisterRule::Register(r) => reg_get(regs, r.0)?,
                RegisterRule::Expression(e) => {
                    let expr = cfi.expression(rules.eh, e)?;
                    let addr = eval_cfi_expr(t, expr, regs, Some(cfa))?;
                    read_u64(t, addr)?
                }
                RegisterRule::ValExpression(e) => {
                    let expr = cfi.expression(rules.eh, e)?;
                    eval_cfi_expr(t, expr, regs, Some(cfa))?
                }
                RegisterRule::Constant(c) => *c,
            };
            if reg.0 == 16 {
                ra_defined = true;
            }
            reg_set(&mut out, reg.0, v);
        }
        if !ra_defined {
            // No rule for the return address: the stack ends here.
            return Some(None);
        }
        Some(Some((out, cfa, rules.signal)))
    }

    /// Without CFI: the frame-pointer chain (or, at a function's first
    /// instruction, the return address on top of the stack).
    fn unwind_fp(
        &self,
        t: &dyn Target,
        level: usize,
        regs: &libc::user_regs_struct,
    ) -> Option<(libc::user_regs_struct, u64)> {
        let mut out = *regs;
        let at_entry = level == 0 && self.symbolize(regs.rip).is_some_and(|(_, off)| off == 0);
        if at_entry {
            out.rip = read_u64(t, regs.rsp)?;
            out.rsp = regs.rsp.wrapping_add(8);
            return Some((out, out.rsp));
        }
        if regs.rbp == 0 || regs.rbp < regs.rsp {
            return None;
        }
        out.rip = read_u64(t, regs.rbp.wrapping_add(8))?;
        out.rbp = read_u64(t, regs.rbp)?;
        out.rsp = regs.rbp.wrapping_add(16);
        Some((out, out.rsp))
    }

    /// The call stack of the selected thread, innermost first, at most
    /// `max` frames. Frame 0 uses the current registers. Calls inlined by
    /// the compiler get their own frames (`inlined`), like in gdb. Like gdb
    /// (without `set backtrace past-main`), it ends at `main`; otherwise it
    /// stops at the end of the CFI chain (`_start`), a zero return address,
    /// unreadable memory, or a stack that does not grow.
    pub fn backtrace(&self, t: &dyn Target, max: usize) -> Vec<Frame> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut regs = t.regs();
        let mut exact = true;
        let mut physical = 0;
        while frames.len() < max {
            let pc = regs.rip;
            if physical > 0 && pc == 0 {
                break;
            }
            let lookup = if exact { pc } else { pc.wrapping_sub(1) };
            let step = self.unwind_cfi(t, lookup, &regs);
            let (next, cfa, signal, end) = match step {
                Some(Some((next, cfa, signal))) => (Some(next), cfa, signal, false),
                Some(None) => (None, 0, false, true),
                None => match self.unwind_fp(t, physical, &regs) {
                    Some((next, cfa)) => (Some(next), cfa, false, false),
                    None => (None, 0, false, true),
                },
            };
            let function = self.function_name(lookup);
            let is_main = function.as_deref() == Some("main")
                && self.modules.first().is_some_and(|m| m.contains(lookup));
            let (inlined, physical_loc) = self.inline_frames(lookup);
            let has_inlined = !inlined.is_empty();
            for (name, loc, block) in inlined {
                if frames.len() >= max {
                    break;
                }
                let callee_inlined = frames
                    .last()
                    .is_some_and(|f: &Frame| f.inlined && f.pc == pc);
                frames.push(Frame {
                    level: frames.len(),
                    pc,
                    lookup_pc: lookup,
                    cfa,
                    regs,
                    function: Some(name),
                    loc,
                    inlined: true,
                    signal_frame: false,
                    block: Some(block),
                    callee_inlined,
                });
            }
            if frames.len() >= max {
                break;
            }
            frames.push(Frame {
                level: frames.len(),
                pc,
                lookup_pc: lookup,
                cfa,
                regs,
                function,
                loc: if has_inlined {
                    physical_loc
                } else {
                    self.location(lookup)
                },
                inlined: false,
                signal_frame: signal,
                block: None,
                callee_inlined: has_inlined,
            });
            physical += 1;
            let Some(next) = next else { break };
            if end || is_main || next.rip == 0 {
                break;
            }
            // The stack must grow towards higher addresses as we unwind.
            if next.rsp <= regs.rsp {
                break;
            }
            exact = signal;
            regs = next;
        }
        frames
    }

    /// The inlined calls at `lookup` (runtime), innermost first, as
    /// (function, location, scope DIE), and the location of the physical
    /// frame (the call site of the outermost inlined call).
    #[allow(clippy::type_complexity)]
    fn inline_frames(&self, lookup: u64) -> (Vec<(String, Option<Loc>, DieRef)>, Option<Loc>) {
        let Some((m, d)) = self.debug_at(lookup) else {
            return (Vec::new(), None);
        };
        let pc = lookup.wrapping_sub(m.bias);
        let Some(func) = d.func_at(pc) else {
            return (Vec::new(), None);
        };
        let chain = d.inline_chain(func.die, pc);
        if chain.is_empty() {
            return (Vec::new(), None);
        }
        let call_loc = |die: DieRef, function: Option<String>| -> Option<Loc> {
            let (file, line) = d.call_site(die)?;
            Some(Loc {
                function,
                file: d.files.get(file as usize).cloned(),
                file_name: d.file_names.get(file as usize).cloned(),
                line: Some(line),
                module: m.path.clone(),
            })
        };
        let name_of = |die: DieRef| {
            d.entry(die)
                .and_then(|e| d.name_of(die.unit, &e))
                .unwrap_or_else(|| "??".to_string())
        };
        let mut out = Vec::new();
        for (k, &die) in chain.iter().enumerate().rev() {
            let name = name_of(die);
            let loc = match chain.get(k + 1) {
                None => self.location(lookup).map(|l| Loc {
                    function: Some(name.clone()),
                    ..l
                }),
                Some(&inner) => call_loc(inner, Some(name.clone())),
            };
            out.push((name, loc, die));
        }
        let physical = call_loc(chain[0], Some(func.name.clone()));
        (out, physical)
    }

    /// Frame `n` of the current stack (frame 0 is always available).
    pub fn frame(&self, t: &dyn Target, n: usize) -> Option<Frame> {
        self.backtrace(t, n + 1).into_iter().nth(n)
    }
}

/// The unwind rules at `pc` of the FDE at `offset` of `section`
/// (.eh_frame or .debug_frame).
fn rules_in<S>(
    section: &S,
    bases: &BaseAddresses,
    offset: S::Offset,
    pc: u64,
    eh: bool,
) -> Option<Rules>
where
    S: gimli::UnwindSection<R>,
{
    let mut ctx = UnwindContext::new();
    let fde = section
        .fde_from_offset(bases, offset, S::cie_from_offset)
        .ok()?;
    let row = fde
        .unwind_info_for_address(section, bases, &mut ctx, pc)
        .ok()?;
    Some(Rules {
        cfa: row.cfa().clone(),
        regs: row
            .registers()
            .map(|(r, rule)| (*r, rule.clone()))
            .collect(),
        signal: fde.is_signal_trampoline(),
        eh,
    })
}
