//! The value a function just returned, where the x86-64 System V ABI
//! leaves it (gdb's "Value returned is" after `finish`): integers,
//! pointers and enums in rax; float and double in xmm0; a struct or union
//! of up to 16 bytes split in eightbytes, each in the next of rax/rdx
//! (integer ones) or xmm0/xmm1 (floating-point ones); a larger one (or one
//! with a misaligned field) in memory, at the address the function returns
//! in rax.

use super::types::{Kind, TypeId, Types};
use super::value::{Lval, Value};
use super::{evaluate, Program, Target};

/// Class of an eightbyte (ABI §3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Padding only (the ABI's NO_CLASS).
    Padding,
    Integer,
    Sse,
}

/// Deepest nesting of aggregates looked into.
const MAX_DEPTH: u32 = 32;

/// What `function` (a name the inspector knows, with its type) returned,
/// as the program's registers show it right after it returned. None when
/// it returns nothing, or something this does not read (long double,
/// complex numbers, a function without debug information).
pub fn returned_value(function: &str, prog: &Program, t: &dyn Target) -> Option<Value> {
    let f = evaluate(function, prog, t, 0).ok()?;
    let types = match prog.types.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let Kind::Func { ret, .. } = types.kind(f.ty) else {
        return None;
    };
    let ret = *ret;
    let regs = t.regs();
    let size = types.size(ret)?;
    match types.kind(ret) {
        Kind::Int { .. } | Kind::Enum { .. } | Kind::Pointer(_) => {
            let bytes = regs.rax.to_le_bytes();
            let n = (size as usize).min(8);
            Some(Value::new(
                ret,
                bytes[..n].to_vec(),
                Lval::Register("rax".into()),
            ))
        }
        Kind::Float { .. } if size == 4 || size == 8 => {
            let xmm0 = t.xmm(0)?;
            Some(Value::new(
                ret,
                xmm0[..size as usize].to_vec(),
                Lval::Register("xmm0".into()),
            ))
        }
        Kind::Struct { .. } | Kind::Array { .. } => {
            let mut classes = [Class::Padding; 2];
            let in_registers =
                size <= 16 && classify(&types, ret, 0, &mut classes, 0).unwrap_or(false);
            if !in_registers {
                // In memory: the caller's buffer, whose address the
                // function returns in rax.
                let mut data = vec![0u8; size as usize];
                t.read(regs.rax, &mut data).ok()?;
                return Some(Value::new(ret, data, Lval::Memory(regs.rax)));
            }
            let ints = [regs.rax, regs.rdx];
            let sse = [t.xmm(0), t.xmm(1)];
            let (mut next_int, mut next_sse) = (0, 0);
            let mut data = Vec::with_capacity(16);
            for class in classes.iter().take(size.div_ceil(8) as usize) {
                match class {
                    Class::Integer => {
                        data.extend_from_slice(&ints[next_int].to_le_bytes());
                        next_int += 1;
                    }
                    Class::Sse => {
                        data.extend_from_slice(&sse[next_sse]?[..8]);
                        next_sse += 1;
                    }
                    // An eightbyte of padding only: nothing there.
                    Class::Padding => return None,
                }
            }
            data.truncate(size as usize);
            Some(Value::new(ret, data, Lval::None))
        }
        _ => None,
    }
}

/// Classify the scalars of `ty` (at byte `offset` of the returned value)
/// into `classes`. Some(false): it goes in memory (a misaligned field, a
/// long double); None: a type this does not know.
fn classify(
    types: &Types,
    ty: TypeId,
    offset: u64,
    classes: &mut [Class; 2],
    depth: u32,
) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let size = types.size(ty)?;
    let scalar = |class: Class, classes: &mut [Class; 2]| {
        if size == 0 || !offset.is_multiple_of(size) {
            return Some(false);
        }
        let i = (offset / 8) as usize;
        let slot = classes.get_mut(i)?;
        *slot = match (*slot, class) {
            (Class::Integer, _) | (_, Class::Integer) => Class::Integer,
            _ => class,
        };
        Some(true)
    };
    match types.kind(ty) {
        Kind::Int { .. } | Kind::Enum { .. } | Kind::Pointer(_) => scalar(Class::Integer, classes),
        Kind::Float { .. } if size == 4 || size == 8 => scalar(Class::Sse, classes),
        // long double (x87 class): returned in st0, not read here.
        Kind::Float { .. } => Some(false),
        Kind::Struct { fields, .. } => {
            for f in fields {
                let ok = match f.bits {
                    // A bit field: its bytes are an integer's.
                    Some(_) => {
                        let i = ((offset + f.offset) / 8) as usize;
                        let slot = classes.get_mut(i)?;
                        *slot = Class::Integer;
                        true
                    }
                    None => classify(types, f.ty, offset + f.offset, classes, depth + 1)?,
                };
                if !ok {
                    return Some(false);
                }
            }
            Some(true)
        }
        Kind::Array { elem, count } => {
            let elem_size = types.size(*elem)?;
            for i in 0..(*count)? {
                if !classify(types, *elem, offset + i * elem_size, classes, depth + 1)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        _ => None,
    }
}
