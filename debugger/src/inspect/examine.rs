//! gdb's `x/NFU ADDR`: memory shown as numbers, characters, strings,
//! addresses, floats or instructions.

use super::format::{float_text, format_string, read_c_string};
use super::{Program, Target};

/// The state gdb keeps between `x` commands: the last format and unit
/// size, and where the next plain `x` continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examiner {
    /// Last format letter (x d u o t a c f s i z).
    pub format: char,
    /// Last unit size letter (b h w g).
    pub size: char,
    /// Address after the last unit shown.
    pub next: Option<u64>,
}

impl Default for Examiner {
    fn default() -> Self {
        Examiner {
            format: 'x',
            size: 'w',
            next: None,
        }
    }
}

/// `x/FMT ADDR` with gdb's defaults (`x/1xw`). See [`Examiner::examine`].
pub fn examine(prog: &Program, t: &dyn Target, fmt: &str, addr: u64) -> Result<String, String> {
    Examiner::default().examine(prog, t, fmt, Some(addr))
}

/// Largest `N` of `x/N`: keeps a typo from producing gigabytes of text.
const MAX_UNITS: u64 = 1 << 16;

fn unit_bytes(size: char) -> u64 {
    match size {
        'b' => 1,
        'h' => 2,
        'w' => 4,
        _ => 8,
    }
}

impl Examiner {
    /// Show memory like `x/NFU ADDR` (`fmt` is `NFU`, with or without the
    /// slash; empty for the last format). `addr` `None` continues after the
    /// last `x`. Rows are `ADDR <sym+off>:\tVALUE\tVALUE...`. When memory
    /// becomes unreadable the error is `Err` with the rows shown so far
    /// followed by `Cannot access memory at address 0x...`.
    pub fn examine(
        &mut self,
        prog: &Program,
        t: &dyn Target,
        fmt: &str,
        addr: Option<u64>,
    ) -> Result<String, String> {
        let spec = fmt.trim().trim_start_matches('/');
        let digits: String = spec.chars().take_while(|c| c.is_ascii_digit()).collect();
        let count: u64 = if digits.is_empty() {
            1
        } else {
            digits
                .parse()
                .map_err(|_| format!("Invalid number \"{digits}\"."))?
        };
        if count > MAX_UNITS {
            return Err(format!("At most {MAX_UNITS} units at a time."));
        }
        let mut format = None;
        let mut size = None;
        for c in spec[digits.len()..].chars() {
            match c {
                'b' | 'h' | 'w' | 'g' => size = Some(c),
                'x' | 'd' | 'u' | 'o' | 't' | 'a' | 'c' | 'f' | 's' | 'i' | 'z' => format = Some(c),
                _ => return Err(format!("Invalid format letter '{c}'.")),
            }
        }
        let format = format.unwrap_or(self.format);
        let size = match (format, size) {
            ('a', _) => 'g',
            (_, Some(s)) => s,
            ('c' | 's', None) => 'b',
            ('f', None) => {
                if self.size == 'w' || self.size == 'g' {
                    self.size
                } else {
                    'g'
                }
            }
            (_, None) => self.size,
        };
        let mut at = match addr.or(self.next) {
            Some(a) => a,
            None => return Err("Argument required (starting display address).".into()),
        };
        self.format = format;
        if format != 'i' && format != 's' {
            self.size = size;
        }
        let mut out: Vec<String> = Vec::new();
        let label = |a: u64| format!("{a:#x}{}:", prog.symbol_suffix(a));
        let fail = |out: &[String], msg: String| -> String {
            let mut text = out.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&msg);
            text
        };
        match format {
            'i' => {
                let pc = t.regs().rip;
                let insns = prog.disassemble(t, at, count as usize);
                if insns.is_empty() && count > 0 {
                    self.next = Some(at);
                    return Err(format!("Cannot access memory at address {at:#x}"));
                }
                for insn in &insns {
                    let marker = if insn.addr == pc { "=> " } else { "   " };
                    out.push(format!("{marker}{}\t{}", label(insn.addr), insn.text));
                    at = insn.addr.wrapping_add(insn.len as u64);
                }
                self.next = Some(at);
                if (insns.len() as u64) < count {
                    return Err(fail(
                        &out,
                        format!("Cannot access memory at address {at:#x}"),
                    ));
                }
            }
            's' => {
                for _ in 0..count {
                    match read_c_string(t, at, 200) {
                        Ok((bytes, cut)) => {
                            out.push(format!("{}\t{}", label(at), format_string(&bytes, cut)));
                            at = at.wrapping_add(bytes.len() as u64 + u64::from(!cut));
                        }
                        Err(e) => {
                            self.next = Some(at);
                            return Err(fail(&out, e));
                        }
                    }
                }
                self.next = Some(at);
            }
            _ => {
                let unit = unit_bytes(size);
                let per_line = match size {
                    'b' | 'h' => 8,
                    'w' => 4,
                    _ => 2,
                };
                let mut line = String::new();
                for i in 0..count {
                    if i % per_line == 0 {
                        if !line.is_empty() {
                            out.push(std::mem::take(&mut line));
                        }
                        line = label(at);
                    }
                    let mut buf = vec![0u8; unit as usize];
                    if t.read(at, &mut buf).is_err() {
                        // gdb: the row so far, a tab, then the error.
                        line.push_str(&format!("\tCannot access memory at address {at:#x}"));
                        out.push(line);
                        self.next = Some(at);
                        return Err(out.join("\n"));
                    }
                    line.push('\t');
                    line.push_str(&unit_text(prog, &buf, format));
                    at = at.wrapping_add(unit);
                }
                if !line.is_empty() {
                    out.push(line);
                }
                self.next = Some(at);
            }
        }
        Ok(out.join("\n"))
    }
}

/// One unit of memory in format `f`.
fn unit_text(prog: &Program, buf: &[u8], f: char) -> String {
    let mut b = [0u8; 8];
    let n = buf.len().min(8);
    b[..n].copy_from_slice(&buf[..n]);
    let raw = u64::from_le_bytes(b);
    let bits = (n * 8) as u32;
    let signed = if bits >= 64 {
        raw as i64
    } else {
        ((raw << (64 - bits)) as i64) >> (64 - bits)
    };
    match f {
        'x' | 'z' => format!("0x{raw:0width$x}", width = n * 2),
        'd' => signed.to_string(),
        'u' => raw.to_string(),
        'o' => {
            if raw == 0 {
                "0".into()
            } else {
                format!("0{raw:o}")
            }
        }
        't' => format!("{raw:0width$b}", width = n * 8),
        'c' => {
            let c = buf.first().copied().unwrap_or(0);
            let esc = match c {
                0x20..=0x7e if c != b'\'' && c != b'\\' => (c as char).to_string(),
                b'\'' => "\\'".into(),
                b'\\' => "\\\\".into(),
                b'\n' => "\\n".into(),
                b'\t' => "\\t".into(),
                b'\r' => "\\r".into(),
                _ => format!("\\{c:03o}"),
            };
            format!("{} '{esc}'", c as i8)
        }
        'a' => format!("{raw:#x}{}", prog.symbol_suffix(raw)),
        'f' => match n {
            4 | 8 => float_text(buf, n as u64),
            _ => signed.to_string(),
        },
        _ => format!("{raw:#x}"),
    }
}
