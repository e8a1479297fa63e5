//! Values of the program and where variables live: DWARF location
//! expressions and lists evaluated against a frame, and the scopes of a
//! frame (blocks, parameters, file statics, globals).

use std::sync::Arc;

use gimli::{AttributeValue, Reader as _};

use super::dwarf::{DebugInfo, DieRef, Named};
use super::elf::R;
use super::program::Module;
use super::types::{children, Kind, TypeId, Types};
use super::unwind::reg_get;
use super::{Frame, Program, Target};

/// Largest value read at once (gdb's `max-value-size`).
pub(crate) const MAX_VALUE_SIZE: u64 = 65536;

/// Where a value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lval {
    /// Computed: not in the program.
    None,
    Memory(u64),
    /// In a register (gdb's `$name`).
    Register(String),
}

/// A typed value read from the program (or computed by an expression).
/// Its type lives in the [`Program`] that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub(crate) ty: TypeId,
    pub(crate) data: Vec<u8>,
    pub(crate) lval: Lval,
    pub(crate) optimized_out: bool,
}

impl Value {
    pub(crate) fn new(ty: TypeId, data: Vec<u8>, lval: Lval) -> Value {
        Value {
            ty,
            data,
            lval,
            optimized_out: false,
        }
    }

    pub(crate) fn optimized_out(ty: TypeId) -> Value {
        Value {
            ty,
            data: Vec::new(),
            lval: Lval::None,
            optimized_out: true,
        }
    }

    /// The address of the value, when it lives in memory.
    pub fn address(&self) -> Option<u64> {
        match self.lval {
            Lval::Memory(a) => Some(a),
            _ => None,
        }
    }

    /// The raw bytes (little-endian, the type's size).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Whether the compiler left no location for it here.
    pub fn is_optimized_out(&self) -> bool {
        self.optimized_out
    }
}

pub(crate) fn int_bytes(v: i128, size: u64) -> Vec<u8> {
    let mut b = v.to_le_bytes().to_vec();
    b.resize(size.min(16) as usize, if v < 0 { 0xff } else { 0 });
    b.truncate(size as usize);
    b
}

/// The member at `offset` (and bit field `bits`) of type `ty` in `v`.
pub(crate) fn member(
    types: &Types,
    v: &Value,
    ty: TypeId,
    offset: u64,
    bits: Option<(u64, u64)>,
) -> Value {
    if v.optimized_out {
        return Value::optimized_out(ty);
    }
    let size = types.size(ty).unwrap_or(0).min(MAX_VALUE_SIZE);
    if let Some((bit_off, bit_size)) = bits {
        let mut raw = [0u8; 16];
        let start = offset as usize;
        for (i, b) in raw.iter_mut().enumerate() {
            *b = v.data.get(start.saturating_add(i)).copied().unwrap_or(0);
        }
        let word = u128::from_le_bytes(raw);
        let bit_size = bit_size.clamp(1, 64);
        let mut x = (word >> bit_off.min(127)) & ((1u128 << bit_size) - 1);
        if types.is_signed(ty) && (x >> (bit_size - 1)) & 1 == 1 {
            x |= !0u128 << bit_size;
        }
        return Value::new(ty, int_bytes(x as i128, size), Lval::None);
    }
    let start = offset as usize;
    let data = v
        .data
        .get(start..start.saturating_add(size as usize))
        .map(|d| d.to_vec())
        .unwrap_or_else(|| vec![0; size as usize]);
    let lval = match v.lval {
        Lval::Memory(a) => Lval::Memory(a.wrapping_add(offset)),
        _ => Lval::None,
    };
    Value::new(ty, data, lval)
}

/// Read `size` bytes of the program, with gdb's error.
pub(crate) fn read_mem(t: &dyn Target, addr: u64, size: u64) -> Result<Vec<u8>, String> {
    if size > MAX_VALUE_SIZE {
        return Err(format!(
            "value requires {size} bytes, which is more than max-value-size"
        ));
    }
    let mut buf = vec![0u8; size as usize];
    if size > 0 {
        t.read(addr, &mut buf)
            .map_err(|_| format!("Cannot access memory at address {addr:#x}"))?;
    }
    Ok(buf)
}

/// What location expressions need from a frame.
pub(crate) struct FrameCtx<'a> {
    pub t: &'a dyn Target,
    pub regs: libc::user_regs_struct,
    pub cfa: u64,
    /// Link-time pc for location lists (the frame's lookup pc).
    pub pc: u64,
    pub module: &'a Module,
    pub info: &'a Arc<DebugInfo>,
    /// The function DIE (for DW_AT_frame_base).
    pub func: Option<DieRef>,
}

/// The result of a location description.
enum Place {
    Memory(u64),
    Register(u16),
    Bytes(Vec<u8>),
    OptimizedOut,
}

impl FrameCtx<'_> {
    /// The expression of a DW_AT_location (or DW_AT_frame_base) value at
    /// this frame's pc; `None`: not available here (optimized out).
    fn expression_of(
        &self,
        unit: usize,
        v: AttributeValue<R>,
    ) -> Result<Option<gimli::Expression<R>>, String> {
        let u = self.info.units.get(unit).ok_or("bad DWARF unit")?;
        if let AttributeValue::Exprloc(e) = v {
            return Ok(Some(e));
        }
        let Ok(Some(mut locs)) = self.info.dwarf.attr_locations(u, v) else {
            return Ok(None);
        };
        let mut guard = 0;
        while let Ok(Some(entry)) = locs.next() {
            guard += 1;
            if guard > 100_000 {
                break;
            }
            if entry.range.begin <= self.pc && self.pc < entry.range.end {
                return Ok(Some(entry.data));
            }
        }
        Ok(None)
    }

    fn frame_base(&self, depth: u32) -> Result<u64, String> {
        let func = self.func.ok_or("no frame base outside a function")?;
        let (die, v) = self
            .info
            .attr_inherited(func, gimli::DW_AT_frame_base)
            .ok_or("function has no frame base")?;
        let expr = self
            .expression_of(die.unit, v)?
            .ok_or("frame base not available here")?;
        match self.evaluate(die.unit, expr, depth + 1)? {
            Place::Memory(a) => Ok(a),
            Place::Register(r) => {
                reg_get(&self.regs, r).ok_or_else(|| format!("register {r} unavailable"))
            }
            Place::Bytes(b) => {
                let mut w = [0u8; 8];
                let n = b.len().min(8);
                w[..n].copy_from_slice(&b[..n]);
                Ok(u64::from_le_bytes(w))
            }
            Place::OptimizedOut => Err("frame base optimized out".into()),
        }
    }

    fn evaluate(
        &self,
        unit: usize,
        expr: gimli::Expression<R>,
        depth: u32,
    ) -> Result<Place, String> {
        if depth > 4 {
            return Err("DWARF expression nests too deeply".into());
        }
        let u = self.info.units.get(unit).ok_or("bad DWARF unit")?;
        let mut eval = expr.evaluation(u.encoding());
        eval.set_max_iterations(100_000);
        let dwarf_err = |e: gimli::Error| format!("bad DWARF expression: {e}");
        let mut state = eval.evaluate().map_err(dwarf_err)?;
        loop {
            use gimli::EvaluationResult as E;
            state = match state {
                E::Complete => break,
                E::RequiresMemory { address, size, .. } => {
                    let n = usize::from(size).min(8);
                    let mut b = [0u8; 8];
                    self.t
                        .read(address, &mut b[..n])
                        .map_err(|_| format!("Cannot access memory at address {address:#x}"))?;
                    eval.resume_with_memory(gimli::Value::Generic(u64::from_le_bytes(b)))
                        .map_err(dwarf_err)?
                }
                E::RequiresRegister { register, .. } => {
                    let v = reg_get(&self.regs, register.0)
                        .ok_or_else(|| "<optimized out>".to_string())?;
                    eval.resume_with_register(gimli::Value::Generic(v))
                        .map_err(dwarf_err)?
                }
                E::RequiresFrameBase => {
                    let fb = self.frame_base(depth)?;
                    eval.resume_with_frame_base(fb).map_err(dwarf_err)?
                }
                E::RequiresCallFrameCfa => {
                    if self.cfa == 0 {
                        return Err("frame address unknown".into());
                    }
                    eval.resume_with_call_frame_cfa(self.cfa)
                        .map_err(dwarf_err)?
                }
                E::RequiresRelocatedAddress(a) => eval
                    .resume_with_relocated_address(a.wrapping_add(self.module.bias))
                    .map_err(dwarf_err)?,
                E::RequiresIndexedAddress { index, relocate } => {
                    let a = self.info.dwarf.address(u, index).map_err(dwarf_err)?;
                    let a = if relocate {
                        a.wrapping_add(self.module.bias)
                    } else {
                        a
                    };
                    eval.resume_with_indexed_address(a).map_err(dwarf_err)?
                }
                E::RequiresBaseType(_) => eval
                    .resume_with_base_type(gimli::ValueType::Generic)
                    .map_err(dwarf_err)?,
                E::RequiresTls(_) => return Err("Cannot access thread-local variables here".into()),
                E::RequiresEntryValue(_) | E::RequiresParameterRef(_) => {
                    return Ok(Place::OptimizedOut)
                }
                _ => return Err("unsupported DWARF expression".into()),
            };
        }
        let pieces = eval.result();
        if pieces.len() == 1 && pieces[0].size_in_bits.is_none() {
            return Ok(match &pieces[0].location {
                gimli::Location::Address { address } => Place::Memory(*address),
                gimli::Location::Register { register } => Place::Register(register.0),
                gimli::Location::Value { value } => Place::Bytes(value_bytes(*value)),
                gimli::Location::Bytes { value } => {
                    Place::Bytes(value.to_slice().map(|c| c.to_vec()).unwrap_or_default())
                }
                _ => Place::OptimizedOut,
            });
        }
        // A composite: concatenate whole-byte pieces.
        let mut out = Vec::new();
        for p in &pieces {
            let bits = p.size_in_bits.unwrap_or(64);
            if bits % 8 != 0 || p.bit_offset.is_some_and(|o| o != 0) {
                return Ok(Place::OptimizedOut);
            }
            if bits / 8 > MAX_VALUE_SIZE {
                return Ok(Place::OptimizedOut);
            }
            let n = (bits / 8) as usize;
            let bytes = match &p.location {
                gimli::Location::Address { address } => read_mem(self.t, *address, n as u64)?,
                gimli::Location::Register { register } => match reg_get(&self.regs, register.0) {
                    Some(v) => v.to_le_bytes().to_vec(),
                    None => return Ok(Place::OptimizedOut),
                },
                gimli::Location::Value { value } => value_bytes(*value),
                gimli::Location::Bytes { value } => {
                    value.to_slice().map(|c| c.to_vec()).unwrap_or_default()
                }
                _ => return Ok(Place::OptimizedOut),
            };
            let mut bytes = bytes;
            bytes.resize(n, 0);
            out.extend_from_slice(&bytes);
        }
        Ok(Place::Bytes(out))
    }

    /// The value of a variable DIE (DW_AT_location or DW_AT_const_value).
    pub fn variable(&self, types: &mut Types, die: DieRef) -> Result<Value, String> {
        let ty = types.type_attr(self.info, die, 0);
        let ty = complete(types, self.info, ty);
        if let Some((_, v)) = self.info.attr_inherited(die, gimli::DW_AT_const_value) {
            let data = match v {
                AttributeValue::Block(b) => b.to_slice().map(|c| c.to_vec()).unwrap_or_default(),
                AttributeValue::Sdata(x) => x.to_le_bytes().to_vec(),
                AttributeValue::Udata(x) => x.to_le_bytes().to_vec(),
                other => match other.udata_value() {
                    Some(x) => x.to_le_bytes().to_vec(),
                    None => return Ok(Value::optimized_out(ty)),
                },
            };
            let mut data = data;
            let size = types
                .size(ty)
                .unwrap_or(data.len() as u64)
                .min(MAX_VALUE_SIZE);
            data.resize(size as usize, 0);
            return Ok(Value::new(ty, data, Lval::None));
        }
        let Some(entry) = self.info.entry(die) else {
            return Ok(Value::optimized_out(ty));
        };
        let Some(v) = entry.attr_value(gimli::DW_AT_location) else {
            return Ok(Value::optimized_out(ty));
        };
        let Some(expr) = self.expression_of(die.unit, v)? else {
            return Ok(Value::optimized_out(ty));
        };
        let size = types.size(ty).unwrap_or(0);
        let small = size.min(MAX_VALUE_SIZE) as usize;
        match self.evaluate(die.unit, expr, 0) {
            Ok(Place::Memory(addr)) => Ok(Value::new(
                ty,
                read_mem(self.t, addr, size)?,
                Lval::Memory(addr),
            )),
            Ok(Place::Register(r)) => match reg_get(&self.regs, r) {
                Some(v) => {
                    let mut data = v.to_le_bytes().to_vec();
                    data.resize(small, 0);
                    Ok(Value::new(
                        ty,
                        data,
                        Lval::Register(dwarf_reg_name(r).to_string()),
                    ))
                }
                None => Ok(Value::optimized_out(ty)),
            },
            Ok(Place::Bytes(mut b)) => {
                b.resize(small, 0);
                Ok(Value::new(ty, b, Lval::None))
            }
            Ok(Place::OptimizedOut) => Ok(Value::optimized_out(ty)),
            Err(e) if e == "<optimized out>" => Ok(Value::optimized_out(ty)),
            Err(e) => Err(e),
        }
    }
}

fn value_bytes(v: gimli::Value) -> Vec<u8> {
    use gimli::Value as V;
    match v {
        V::Generic(x) | V::U64(x) => x.to_le_bytes().to_vec(),
        V::I8(x) => x.to_le_bytes().to_vec(),
        V::U8(x) => x.to_le_bytes().to_vec(),
        V::I16(x) => x.to_le_bytes().to_vec(),
        V::U16(x) => x.to_le_bytes().to_vec(),
        V::I32(x) => x.to_le_bytes().to_vec(),
        V::U32(x) => x.to_le_bytes().to_vec(),
        V::I64(x) => x.to_le_bytes().to_vec(),
        V::F32(x) => x.to_le_bytes().to_vec(),
        V::F64(x) => x.to_le_bytes().to_vec(),
    }
}

/// gdb's name for a DWARF register number.
pub(crate) fn dwarf_reg_name(n: u16) -> &'static str {
    const NAMES: [&str; 17] = [
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip",
    ];
    NAMES.get(n as usize).copied().unwrap_or("?")
}

/// If `ty` is a declaration-only struct, the complete definition of the
/// same name from this file's DWARF.
pub(crate) fn complete(types: &mut Types, info: &DebugInfo, ty: TypeId) -> TypeId {
    let (union, name) = match types.kind(ty) {
        Kind::Struct {
            incomplete: true,
            union,
            name: Some(name),
            ..
        } => (*union, name.clone()),
        _ => return ty,
    };
    let key = format!("{} {name}", if union { "union" } else { "struct" });
    for &die in info.types.get(&key).into_iter().flatten() {
        let cand = types.of_die(info, die);
        if matches!(
            types.kind(cand),
            Kind::Struct {
                incomplete: false,
                ..
            }
        ) {
            return cand;
        }
    }
    ty
}

/// A variable visible in a frame.
pub(crate) struct ScopeVar {
    pub name: String,
    pub die: DieRef,
    pub is_param: bool,
}

/// The scope of a frame: its variables, innermost block first, then the
/// parameters.
pub(crate) struct Scope<'a> {
    pub ctx: FrameCtx<'a>,
    /// Variables from the innermost block outwards, then parameters.
    pub vars: Vec<ScopeVar>,
}

impl Program {
    /// The scope of `frame`: `None` without debug info for its pc.
    pub(crate) fn scope<'a>(&'a self, t: &'a dyn Target, frame: &Frame) -> Option<Scope<'a>> {
        let (module, info) = self.debug_at(frame.lookup_pc)?;
        let pc = frame.lookup_pc.wrapping_sub(module.bias);
        let func = info.func_at(pc).map(|f| f.die);
        let mut vars = Vec::new();
        if let Some(f) = frame.block.or(func) {
            // Blocks from the function inwards, then reversed.
            let mut blocks: Vec<Vec<ScopeVar>> = Vec::new();
            let mut params = Vec::new();
            collect_scope(info, f, pc, true, &mut blocks, &mut params, 0);
            for block in blocks.into_iter().rev() {
                vars.extend(block);
            }
            vars.extend(params);
        }
        Some(Scope {
            ctx: FrameCtx {
                t,
                regs: frame.regs,
                cfa: frame.cfa,
                pc,
                module,
                info,
                func,
            },
            vars,
        })
    }

    /// A file-scope variable or enumerator named `name`: the frame's own
    /// file first, then its module, then the other modules (executable
    /// first). Returns the module, its DWARF and what the name denotes.
    pub(crate) fn global_named<'a>(
        &'a self,
        name: &str,
        prefer: Option<(&'a Module, usize)>,
    ) -> Option<(&'a Module, &'a Arc<DebugInfo>, Named)> {
        let pick = |info: &DebugInfo, unit: Option<usize>| -> Option<Named> {
            let list = info.globals.get(name)?;
            let in_unit = |n: &Named| match n {
                Named::Variable(d) | Named::Enumerator(d, _) => unit.is_none_or(|u| u == d.unit),
            };
            // Definitions (with a location) win over declarations.
            let has_loc = |n: &Named| match n {
                Named::Variable(d) => info.entry(*d).is_some_and(|e| {
                    e.attr_value(gimli::DW_AT_location).is_some()
                        || e.attr_value(gimli::DW_AT_const_value).is_some()
                }),
                Named::Enumerator(..) => true,
            };
            list.iter()
                .copied()
                .filter(in_unit)
                .find(has_loc)
                .or_else(|| list.iter().copied().find(in_unit))
        };
        if let Some((m, unit)) = prefer {
            if let Some(info) = m.image.debug() {
                if let Some(n) = pick(info, Some(unit)).or_else(|| pick(info, None)) {
                    return Some((m, info, n));
                }
            }
        }
        for m in &self.modules {
            let Some(info) = m.image.debug() else {
                continue;
            };
            if let Some(n) = pick(info, None) {
                return Some((m, info, n));
            }
        }
        None
    }
}

/// Gather the variables of `die` (a function or block) visible at `pc`.
fn collect_scope(
    info: &DebugInfo,
    die: DieRef,
    pc: u64,
    is_function: bool,
    blocks: &mut Vec<Vec<ScopeVar>>,
    params: &mut Vec<ScopeVar>,
    depth: u32,
) {
    if depth > 64 {
        return;
    }
    let mut mine = Vec::new();
    let mut inner = None;
    for child in children(info, die) {
        let Some(entry) = info.entry(child) else {
            continue;
        };
        match entry.tag() {
            gimli::DW_TAG_formal_parameter if is_function => {
                params.extend(scope_var(info, child, &entry, true));
            }
            gimli::DW_TAG_variable => {
                mine.extend(scope_var(info, child, &entry, false));
            }
            gimli::DW_TAG_lexical_block
                if inner.is_none() && info.die_contains(child, &entry, pc) =>
            {
                inner = Some(child);
            }
            _ => {}
        }
    }
    if is_function {
        inherit_abstract(info, die, &mut mine, params);
    }
    blocks.push(mine);
    if let Some(b) = inner {
        collect_scope(info, b, pc, false, blocks, params, depth + 1);
    }
}

/// Like gdb's inherit_abstract_dies: children of a concrete instance's
/// abstract origin that no concrete child stands for are still in scope
/// (as `<optimized out>`), variables of uncovered blocks included.
fn inherit_abstract(
    info: &DebugInfo,
    die: DieRef,
    vars: &mut Vec<ScopeVar>,
    params: &mut Vec<ScopeVar>,
) {
    let Some(origin) = info
        .entry(die)
        .and_then(|e| e.attr_value(gimli::DW_AT_abstract_origin))
        .and_then(|v| info.resolve(die.unit, v))
    else {
        return;
    };
    let covered: Vec<DieRef> = children(info, die)
        .into_iter()
        .filter_map(|c| {
            let e = info.entry(c)?;
            info.resolve(c.unit, e.attr_value(gimli::DW_AT_abstract_origin)?)
        })
        .collect();
    let mut todo: Vec<(DieRef, bool)> = children(info, origin)
        .into_iter()
        .rev()
        .map(|c| (c, true))
        .collect();
    let mut steps = 0;
    while let Some((child, top)) = todo.pop() {
        steps += 1;
        if steps > 100_000 {
            break;
        }
        if top && covered.contains(&child) {
            continue;
        }
        let Some(entry) = info.entry(child) else {
            continue;
        };
        match entry.tag() {
            gimli::DW_TAG_formal_parameter if top => {
                params.extend(scope_var(info, child, &entry, true));
            }
            gimli::DW_TAG_variable => {
                vars.extend(scope_var(info, child, &entry, false));
            }
            gimli::DW_TAG_lexical_block => {
                for c in children(info, child).into_iter().rev() {
                    todo.push((c, false));
                }
            }
            _ => {}
        }
    }
}

/// A named variable or parameter of a scope.
fn scope_var(
    info: &DebugInfo,
    die: DieRef,
    entry: &gimli::DebuggingInformationEntry<R>,
    is_param: bool,
) -> Option<ScopeVar> {
    let name = info.name_of(die.unit, entry)?;
    Some(ScopeVar {
        name,
        die,
        is_param,
    })
}
