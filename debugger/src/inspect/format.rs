//! Printing values the way gdb does (`print`, `print/x`, `info locals`,
//! frame lines of `bt`).

use super::expr::f80_to_f64;
use super::types::{Kind, TypeId, Types};
use super::value::{member, Lval, Value};
use super::{Frame, Program, Target};

/// gdb's `print elements` limit.
const PRINT_MAX: usize = 200;
/// gdb's `repeat_count_threshold`: runs longer than this are collapsed.
const REPEAT_THRESHOLD: usize = 10;

/// `printf("%.{prec}g")`.
pub(crate) fn fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        let bits = v.to_bits();
        let sign = if bits >> 63 != 0 { "-" } else { "" };
        return format!("{sign}nan({:#x})", bits & ((1u64 << 52) - 1));
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), exp.unsigned_abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        strip(&format!("{v:.decimals$}"))
    }
}

/// A character as gdb shows it inside quotes (`quote` is `'` or `"`).
fn escape_char(c: u8, quote: u8) -> String {
    match c {
        7 => "\\a".into(),
        8 => "\\b".into(),
        12 => "\\f".into(),
        b'\n' => "\\n".into(),
        b'\r' => "\\r".into(),
        b'\t' => "\\t".into(),
        11 => "\\v".into(),
        b'\\' => "\\\\".into(),
        c if c == quote => format!("\\{}", c as char),
        0x20..=0x7e => (c as char).to_string(),
        c => format!("\\{c:03o}"),
    }
}

/// gdb's string printing: quoted runs, long repeats as `'x' <repeats N
/// times>`, `...` when longer than the print limit.
pub(crate) fn format_string(bytes: &[u8], truncated: bool) -> String {
    if bytes.is_empty() {
        return if truncated {
            "\"\"...".into()
        } else {
            "\"\"".into()
        };
    }
    let mut out = String::new();
    let mut open = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let reps = bytes[i..].iter().take_while(|&&b| b == c).count();
        if reps > REPEAT_THRESHOLD {
            if open {
                out.push('"');
                open = false;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "'{}' <repeats {reps} times>",
                escape_char(c, b'\'')
            ));
            i += reps;
        } else {
            if !open {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push('"');
                open = true;
            }
            for _ in 0..reps {
                out.push_str(&escape_char(c, b'"'));
            }
            i += reps;
        }
    }
    if open {
        out.push('"');
    }
    if truncated {
        out.push_str("...");
    }
    out
}

/// Read a NUL-terminated string of at most `max` bytes: (bytes, whether
/// it was cut at `max`).
pub(crate) fn read_c_string(
    t: &dyn Target,
    addr: u64,
    max: usize,
) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let n = ((4096 - at % 4096) as usize).min(max - out.len()).min(256);
        let mut buf = vec![0u8; n];
        if t.read(at, &mut buf).is_err() {
            // Byte by byte up to the fault.
            for _ in 0..n {
                let mut b = [0u8];
                if t.read(at, &mut b).is_err() {
                    if out.is_empty() {
                        return Err(format!("Cannot access memory at address {at:#x}"));
                    }
                    return Ok((out, false));
                }
                if b[0] == 0 {
                    return Ok((out, false));
                }
                out.push(b[0]);
                at += 1;
            }
            continue;
        }
        if let Some(z) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..z]);
            return Ok((out, false));
        }
        out.extend_from_slice(&buf);
        at = at.wrapping_add(n as u64);
    }
    Ok((out, true))
}

/// A variable's name and value (or why it could not be read).
type NamedValue = (String, Result<Value, String>);

struct Printer<'a> {
    prog: &'a Program,
    t: &'a dyn Target,
    types: &'a Types,
    fmt: Option<char>,
}

fn le_u128(d: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = d.len().min(16);
    b[..n].copy_from_slice(&d[..n]);
    u128::from_le_bytes(b)
}

/// The integer `size` bytes of `raw` hold.
fn int_value(raw: u128, size: u64, signed: bool) -> i128 {
    if signed {
        sign_extend(raw, size)
    } else {
        raw as i128
    }
}

fn sign_extend(raw: u128, size: u64) -> i128 {
    let bits = (size.clamp(1, 16) * 8) as u32;
    if bits >= 128 {
        raw as i128
    } else {
        let shift = 128 - bits;
        ((raw << shift) as i128) >> shift
    }
}

/// rflags as gdb shows them: `[ ZF PF IF ]`.
pub fn eflags_text(raw: u64) -> String {
    let names: Vec<&str> = EFLAGS
        .iter()
        .filter(|(bit, _)| raw >> bit & 1 == 1)
        .map(|(_, n)| *n)
        .collect();
    format!("[ {} ]", names.join(" "))
}

const EFLAGS: &[(u32, &str)] = &[
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
    (19, "VIF"),
    (20, "VIP"),
    (21, "ID"),
];

impl Printer<'_> {
    fn is_plain_char(&self, ty: TypeId) -> bool {
        // gdb omits `(char *)` only for pointers to a type named "char".
        let mut t = ty;
        while let Kind::Const(x) | Kind::Volatile(x) = self.types.get(t) {
            t = *x;
        }
        matches!(self.types.get(t), Kind::Int { name, char_like: true, .. } if name == "char")
    }

    fn is_char_like(&self, ty: TypeId) -> bool {
        matches!(
            self.types.kind(ty),
            Kind::Int {
                char_like: true,
                ..
            }
        )
    }

    /// Top-level value, as `print` shows it.
    fn top(&self, v: &Value) -> String {
        if v.optimized_out {
            return "<optimized out>".into();
        }
        match self.types.kind(v.ty).clone() {
            Kind::Pointer(target) if self.fmt.is_none() => {
                let body = self.value(v, 0);
                if matches!(self.types.get(self.types.strip(v.ty)), Kind::Pointer(_))
                    && !matches!(self.types.get(v.ty), Kind::Typedef { .. })
                    && self.is_plain_char(target)
                {
                    body
                } else {
                    format!("({}) {body}", self.types.name(v.ty))
                }
            }
            Kind::Func { .. } | Kind::NoDebugText => {
                let addr = v.address().unwrap_or(0);
                format!(
                    "{{{}}} {addr:#x}{}",
                    self.types.name(self.types.strip(v.ty)),
                    self.prog.symbol_suffix(addr)
                )
            }
            _ => self.value(v, 0),
        }
    }

    fn value(&self, v: &Value, depth: u32) -> String {
        if v.optimized_out {
            return "<optimized out>".into();
        }
        if depth > 32 {
            return "...".into();
        }
        let kind = self.types.kind(v.ty).clone();
        if let Some(f) = self.fmt {
            if let Some(s) = self.formatted_scalar(v, &kind, f) {
                return s;
            }
        }
        match kind {
            Kind::Void => "void".into(),
            Kind::Int {
                size,
                signed,
                char_like,
                bool_like,
                ..
            } => {
                let raw = le_u128(&v.data);
                let n = int_value(raw, size, signed);
                if bool_like {
                    match n {
                        0 => "false".into(),
                        1 => "true".into(),
                        n => n.to_string(),
                    }
                } else if char_like {
                    format!("{n} '{}'", escape_char(raw as u8, b'\''))
                } else {
                    n.to_string()
                }
            }
            Kind::Enum {
                size,
                signed,
                values,
                ..
            } => {
                let raw = le_u128(&v.data);
                let n = int_value(raw, size, signed);
                match values.iter().find(|(_, x)| i128::from(*x) == n) {
                    Some((name, _)) => name.clone(),
                    None => n.to_string(),
                }
            }
            Kind::Float { size, .. } => float_text(&v.data, size),
            Kind::Pointer(target) => {
                let addr = le_u128(&v.data) as u64;
                let mut s = format!("{addr:#x}");
                if addr != 0 {
                    s.push_str(&self.prog.symbol_suffix(addr));
                }
                if self.is_char_like(target) && addr != 0 {
                    match read_c_string(self.t, addr, PRINT_MAX) {
                        Ok((bytes, cut)) => {
                            s.push(' ');
                            s.push_str(&format_string(&bytes, cut));
                        }
                        Err(e) => s.push_str(&format!(" <error: {e}>")),
                    }
                }
                s
            }
            Kind::Flags => eflags_text(le_u128(&v.data) as u64),
            Kind::Array { elem, count } => self.array(v, elem, count.unwrap_or(0), depth),
            Kind::Struct { fields, .. } => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        let fv = member(self.types, v, f.ty, f.offset, f.bits);
                        let text = self.value(&fv, depth + 1);
                        match &f.name {
                            Some(n) => format!("{n} = {text}"),
                            None => text,
                        }
                    })
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Kind::Func { .. } | Kind::NoDebugText => {
                let addr = v.address().unwrap_or(0);
                format!(
                    "{{{}}} {addr:#x}{}",
                    self.types.name(self.types.strip(v.ty)),
                    self.prog.symbol_suffix(addr)
                )
            }
            Kind::Typedef { .. } | Kind::Const(_) | Kind::Volatile(_) => "?".into(),
        }
    }

    fn array(&self, v: &Value, elem: TypeId, count: u64, depth: u32) -> String {
        let size = self.types.size(elem).unwrap_or(0) as usize;
        let count = v
            .data
            .len()
            .checked_div(size)
            .map_or(0, |n| (count as usize).min(n));
        if self.is_char_like(elem) && size == 1 && matches!(self.fmt, None | Some('s')) {
            let mut bytes = &v.data[..count];
            let truncated = bytes.len() > PRINT_MAX;
            if truncated {
                bytes = &bytes[..PRINT_MAX];
            } else if bytes.last() == Some(&0) {
                bytes = &bytes[..bytes.len() - 1];
            }
            return format_string(bytes, truncated);
        }
        let mut parts = Vec::new();
        let mut i = 0;
        let mut printed = 0;
        while i < count {
            if printed >= PRINT_MAX {
                return format!("{{{}...}}", parts.join(", "));
            }
            let chunk = &v.data[i * size..(i + 1) * size];
            let mut reps = 1;
            while i + reps < count && &v.data[(i + reps) * size..(i + reps + 1) * size] == chunk {
                reps += 1;
            }
            let lval = match v.lval {
                Lval::Memory(a) => Lval::Memory(a.wrapping_add((i * size) as u64)),
                _ => Lval::None,
            };
            let ev = Value::new(elem, chunk.to_vec(), lval);
            let text = self.value(&ev, depth + 1);
            if reps > REPEAT_THRESHOLD {
                parts.push(format!("{text} <repeats {reps} times>"));
                i += reps;
                printed += REPEAT_THRESHOLD;
            } else {
                parts.push(text);
                i += 1;
                printed += 1;
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// `print/FMT` for scalars (None: not a scalar, or format 's').
    fn formatted_scalar(&self, v: &Value, kind: &Kind, f: char) -> Option<String> {
        let (raw, size, signed) = match kind {
            Kind::Int { size, signed, .. } | Kind::Enum { size, signed, .. } => {
                (le_u128(&v.data), *size, *signed)
            }
            Kind::Pointer(_) | Kind::Flags => (le_u128(&v.data), 8, false),
            Kind::Float { size, .. } => {
                if f == 'f' {
                    return Some(float_text(&v.data, *size));
                }
                // gdb 13 shows a float's bits in integer formats.
                (le_u128(&v.data), *size, true)
            }
            _ => return None,
        };
        let bits = (size.clamp(1, 16) * 8) as u32;
        let masked = if bits >= 128 {
            raw
        } else {
            raw & ((1u128 << bits) - 1)
        };
        Some(match f {
            'x' => format!("{masked:#x}"),
            'z' => format!("0x{:0width$x}", masked, width = (size.min(16) * 2) as usize),
            'o' => {
                if masked == 0 {
                    "0".into()
                } else {
                    format!("0{masked:o}")
                }
            }
            't' => format!("{masked:b}"),
            'd' => sign_extend(raw, size).to_string(),
            'u' => masked.to_string(),
            'c' => {
                let c = masked as u8;
                format!("{} '{}'", c as i8, escape_char(c, b'\''))
            }
            'a' => {
                let a = masked as u64;
                format!("{a:#x}{}", self.prog.symbol_suffix(a))
            }
            'f' => match size {
                // An integer's bits read as a float of its size.
                4 | 8 => float_text(&v.data, size),
                _ if signed => sign_extend(raw, size).to_string(),
                _ => masked.to_string(),
            },
            _ => return None,
        })
    }
}

fn float_value(data: &[u8], size: u64) -> f64 {
    match size {
        4 => f32::from_le_bytes(
            data.get(..4)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 4]),
        ) as f64,
        _ => f64::from_le_bytes(
            data.get(..8)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 8]),
        ),
    }
}

/// A float as gdb prints it: 9 significant digits for float, 17 for
/// double, 18 for long double.
pub(crate) fn float_text(data: &[u8], size: u64) -> String {
    match size {
        4 => fmt_g(float_value(data, 4), 9),
        8 => fmt_g(float_value(data, 8), 17),
        _ => fmt_g(f80_to_f64(data), 18),
    }
}

fn with_types<T>(prog: &Program, f: impl FnOnce(&Types) -> T) -> T {
    match prog.types.lock() {
        Ok(g) => f(&g),
        Err(p) => f(&p.into_inner()),
    }
}

/// A value as gdb's `print` shows it after `$N = `.
pub fn format_value(prog: &Program, t: &dyn Target, v: &Value) -> String {
    with_types(prog, |types| {
        Printer {
            prog,
            t,
            types,
            fmt: None,
        }
        .top(v)
    })
}

/// `print/FMT`: FMT one of x d u o t a c f s z. An error for other letters.
pub fn format_value_as(
    prog: &Program,
    t: &dyn Target,
    v: &Value,
    fmt: char,
) -> Result<String, String> {
    if !"xduotacfsz".contains(fmt) {
        return Err(format!("Undefined output format \"{fmt}\"."));
    }
    let is_function = with_types(prog, |types| {
        matches!(types.kind(v.ty), Kind::Func { .. } | Kind::NoDebugText)
    });
    if is_function && fmt != 's' {
        return Err("Value can't be converted to integer.".into());
    }
    Ok(with_types(prog, |types| {
        Printer {
            prog,
            t,
            types,
            fmt: Some(fmt),
        }
        .top(v)
    }))
}

/// The C name of a value's type (`whatis`).
pub fn type_name(prog: &Program, v: &Value) -> String {
    with_types(prog, |types| types.name(v.ty))
}

impl Program {
    /// A value's address for `x ADDR`, `break *ADDR`: a pointer's or
    /// integer's value, an array's or function's address.
    pub fn value_as_address(&self, v: &Value) -> Result<u64, String> {
        with_types(self, |types| match types.kind(v.ty) {
            Kind::Array { .. } | Kind::Func { .. } | Kind::NoDebugText | Kind::Struct { .. } => v
                .address()
                .ok_or_else(|| "Attempt to take address of value not located in memory.".into()),
            Kind::Float { size, .. } => Ok(float_value(&v.data, *size) as u64),
            _ if v.optimized_out => Err("value has been optimized out".into()),
            _ => Ok(le_u128(&v.data) as u64),
        })
    }

    /// Whether a value is non-zero (breakpoint conditions).
    pub fn value_is_true(&self, v: &Value) -> Result<bool, String> {
        if v.optimized_out {
            return Err("value has been optimized out".into());
        }
        with_types(self, |types| match types.kind(v.ty) {
            Kind::Float { size, .. } => Ok(float_value(&v.data, *size) != 0.0),
            Kind::Int { .. } | Kind::Enum { .. } | Kind::Pointer(_) | Kind::Flags => {
                Ok(le_u128(&v.data) != 0)
            }
            _ => Err("Argument to arithmetic operation not a number or boolean.".into()),
        })
    }

    /// Parameters and locals of frame `frame`: (name, value), locals from
    /// the innermost block outwards.
    fn frame_vars(
        &self,
        t: &dyn Target,
        frame: &Frame,
        params: bool,
    ) -> Result<Vec<NamedValue>, String> {
        let scope = self
            .scope(t, frame)
            .ok_or_else(|| "No symbol table info available.".to_string())?;
        let mut guard = match self.types.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Ok(scope
            .vars
            .iter()
            .filter(|v| v.is_param == params)
            .map(|v| (v.name.clone(), scope.ctx.variable(&mut guard, v.die)))
            .collect())
    }

    fn vars_text(&self, t: &dyn Target, frame: usize, params: bool) -> Result<String, String> {
        let f = self.frame(t, frame).ok_or("No stack.")?;
        let vars = self.frame_vars(t, &f, params)?;
        if vars.is_empty() {
            return Ok(if params {
                "No arguments."
            } else {
                "No locals."
            }
            .into());
        }
        let lines: Vec<String> = with_types(self, |types| {
            let p = Printer {
                prog: self,
                t,
                types,
                fmt: None,
            };
            vars.iter()
                .map(|(name, v)| match v {
                    Ok(v) => format!("{name} = {}", p.value(v, 0)),
                    Err(e) => format!("{name} = <error: {e}>"),
                })
                .collect()
        });
        Ok(lines.join("\n"))
    }

    /// `info locals` for frame `frame`: `name = value` lines, innermost
    /// block first, or `No locals.`.
    pub fn info_locals(&self, t: &dyn Target, frame: usize) -> Result<String, String> {
        self.vars_text(t, frame, false)
    }

    /// `info args` for frame `frame`: `name = value` lines or
    /// `No arguments.`.
    pub fn info_args(&self, t: &dyn Target, frame: usize) -> Result<String, String> {
        self.vars_text(t, frame, true)
    }

    /// A frame as gdb's `bt` and `frame` show it:
    /// `#1  0x000055555555519e in walk (list=0x4c6f10 <n1>, limit=100) at x.c:58`.
    /// The address is shown unless the pc is at the start of a line.
    pub fn describe_frame(&self, t: &dyn Target, frame: &Frame) -> String {
        let mut s = format!("#{:<3}", frame.level);
        if frame.signal_frame {
            s.push_str("<signal handler called>");
            return s;
        }
        // gdb shows the address unless pc starts a line: a run of rows of
        // the same line counts as one (the return address after a call in
        // the middle of a line starts a row, not a line).
        let at_line_start = frame.lookup_pc == frame.pc
            && self.line_info(frame.pc).map(|r| r.start) == Some(frame.pc);
        if !at_line_start && !frame.callee_inlined {
            s.push_str(&format!("{:#018x} in ", frame.pc));
        }
        let name = frame.function.clone().unwrap_or_else(|| "??".into());
        s.push_str(&name);
        let args = self
            .frame_vars(t, frame, true)
            .map(|vars| {
                with_types(self, |types| {
                    let p = Printer {
                        prog: self,
                        t,
                        types,
                        fmt: None,
                    };
                    vars.iter()
                        .map(|(n, v)| match v {
                            Ok(v) if !v.optimized_out && !types.is_scalar(v.ty) => {
                                format!("{n}=...")
                            }
                            Ok(v) => format!("{n}={}", p.value(v, 0)),
                            Err(e) => format!("{n}=<error: {e}>"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
            .unwrap_or_default();
        s.push_str(&format!(" ({args})"));
        match &frame.loc {
            Some(loc) if loc.line.is_some() => {
                let file = loc.file_name.clone().unwrap_or_default();
                s.push_str(&format!(" at {file}:{}", loc.line.unwrap_or(0)));
            }
            // gdb names the library for frames without line info.
            Some(loc)
                if self
                    .modules
                    .first()
                    .is_none_or(|exe| exe.path != loc.module) =>
            {
                s.push_str(&format!(" from {}", loc.module.display()));
            }
            _ => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_printf_g() {
        assert_eq!(fmt_g(1.25, 17), "1.25");
        assert_eq!(fmt_g(1.0 / 3.0, 17), "0.33333333333333331");
        assert_eq!(fmt_g(0.1f32 as f64, 9), "0.100000001");
        assert_eq!(fmt_g(1e10, 17), "10000000000");
        assert_eq!(fmt_g(1e100, 17), "1e+100");
        assert_eq!(fmt_g(1.5e-7, 17), "1.4999999999999999e-07");
        assert_eq!(fmt_g(100.0, 17), "100");
        assert_eq!(fmt_g(2.5, 17), "2.5");
        assert_eq!(fmt_g(f64::INFINITY, 17), "inf");
        assert_eq!(
            fmt_g(f64::from_bits(0xfff8_0000_0000_0000), 17),
            "-nan(0x8000000000000)"
        );
    }

    #[test]
    fn strings_like_gdb() {
        assert_eq!(
            format_string(b"abc\0\0\0\0", false),
            "\"abc\\000\\000\\000\\000\""
        );
        assert_eq!(format_string(&[0; 15], false), "'\\000' <repeats 15 times>");
        assert_eq!(format_string(b"DCBA", false), "\"DCBA\"");
        let mut s = b"ab".to_vec();
        s.extend([b'x'; 12]);
        s.push(b'"');
        assert_eq!(
            format_string(&s, false),
            "\"ab\", 'x' <repeats 12 times>, \"\\\"\""
        );
        assert_eq!(format_string(b"hi", true), "\"hi\"...");
    }
}
