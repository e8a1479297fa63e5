//! [`Program`]: the modules of a stopped program (found like gdb's SVR4
//! support: auxv for the executable and the dynamic linker, then the
//! linker's `r_debug`/`link_map` list) and the symbol and line lookups over
//! them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::dwarf::DebugInfo;
use super::elf::ElfImage;
use super::symbols::SymKind;
use super::types::Types;
use super::unwind::read_u64;
use super::Target;

const AT_PHDR: u64 = 3;
const AT_BASE: u64 = 7;
const AT_ENTRY: u64 = 9;
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;

/// One loaded ELF object: the executable, the dynamic linker or a library.
#[derive(Clone)]
pub struct Module {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Load bias: runtime address minus link-time address.
    pub bias: u64,
    /// Runtime address range `[start, end)` of its load segments.
    pub start: u64,
    pub end: u64,
    pub(crate) image: Arc<ElfImage>,
    /// Address of its `link_map` entry, when the dynamic linker lists it.
    link_map: Option<u64>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .field("bias", &format_args!("{:#x}", self.bias))
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .finish()
    }
}

impl Module {
    /// Runtime range of its `.text` section (what gdb's `info sharedlibrary`
    /// shows as From/To).
    pub fn text_range(&self) -> Option<(u64, u64)> {
        let s = self.image.file.section(".text")?;
        let lo = s.addr.wrapping_add(self.bias);
        Some((lo, lo.wrapping_add(s.size)))
    }

    /// Whether the module has DWARF debug info (parses it on first call).
    pub fn has_debug_info(&self) -> bool {
        self.image.debug().is_some()
    }

    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Where an address is in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub function: Option<String>,
    /// Full path of the source file (compilation directory joined).
    pub file: Option<PathBuf>,
    /// The file as the compiler named it: what gdb prints in `at x.c:5`.
    pub file_name: Option<String>,
    pub line: Option<u32>,
    /// The module holding the address.
    pub module: PathBuf,
}

/// A run of line-table rows for one source line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRow {
    pub file: PathBuf,
    pub line: u32,
    /// Runtime addresses `[start, end)` covered by this run of the line.
    pub start: u64,
    pub end: u64,
    /// Whether `start` is a recommended breakpoint location.
    pub is_stmt: bool,
}

/// A breakpoint location: what gdb prints as
/// `Breakpoint 1 at 0x401136: file x.c, line 5.`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakLoc {
    pub addr: u64,
    /// Source file and line, when known.
    pub file: Option<PathBuf>,
    pub line: Option<u32>,
}

/// The program inspector's view of a stopped program: its modules and
/// their (lazily parsed, cached) symbols, lines, types and CFI.
pub struct Program {
    pub(crate) modules: Vec<Module>,
    images: HashMap<PathBuf, Arc<ElfImage>>,
    next_id: u32,
    exe: Option<PathBuf>,
    /// The dynamic linker's `r_debug`, once found (it never moves).
    r_debug: Option<u64>,
    pub(crate) types: Mutex<Types>,
}

impl Default for Program {
    fn default() -> Self {
        Program::new()
    }
}

fn read_cstr(t: &dyn Target, addr: u64, max: usize) -> Option<String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        // Never cross a page boundary in one read.
        let n = (4096 - at % 4096).min(64) as usize;
        let mut b = vec![0u8; n];
        t.read(at, &mut b).ok()?;
        if let Some(i) = b.iter().position(|&c| c == 0) {
            out.extend_from_slice(&b[..i]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&b);
        at = at.wrapping_add(n as u64);
    }
    None
}

impl Program {
    /// An empty program; call [`Program::refresh`] to find its modules.
    pub fn new() -> Program {
        Program {
            modules: Vec::new(),
            images: HashMap::new(),
            next_id: 0,
            exe: None,
            r_debug: None,
            types: Mutex::new(Types::new()),
        }
    }

    /// The loaded modules: the executable first, then the dynamic linker
    /// and libraries in load order.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Address of the dynamic linker's `r_debug` (after a
    /// [`Program::refresh`] found it).
    pub fn r_debug_addr(&self) -> Option<u64> {
        self.r_debug
    }

    fn image(&mut self, path: &Path) -> Result<Arc<ElfImage>, String> {
        if let Some(img) = self.images.get(path) {
            return Ok(img.clone());
        }
        let img = Arc::new(ElfImage::load(self.next_id, path)?);
        self.next_id += 1;
        self.images.insert(path.to_path_buf(), img.clone());
        Ok(img)
    }

    fn module(image: Arc<ElfImage>, bias: u64, link_map: Option<u64>) -> Module {
        let (lo, hi) = image.vaddr_range();
        Module {
            path: image.path.clone(),
            bias,
            start: lo.wrapping_add(bias),
            end: hi.wrapping_add(bias),
            image,
            link_map,
        }
    }

    /// Bring the module list up to date: the executable and dynamic linker
    /// from the auxiliary vector, libraries from the dynamic linker's
    /// `link_map` list. Only modules not seen before are loaded; modules no
    /// longer listed are dropped. After an exec (a different executable),
    /// everything is reloaded.
    pub fn refresh(&mut self, t: &dyn Target) -> Result<(), String> {
        let exe = t.exe();
        if self.exe.as_ref() != Some(&exe) {
            self.modules.clear();
            self.r_debug = None;
            self.exe = Some(exe.clone());
            if let Ok(mut types) = self.types.lock() {
                *types = Types::new();
            }
        }
        let auxv = t.auxv();
        let aux = |key: u64| auxv.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
        if self.modules.is_empty() {
            let image = self.image(&exe)?;
            let bias = match (aux(AT_PHDR), image.phdr_vaddr, aux(AT_ENTRY)) {
                (Some(at), Some(ph), _) => at.wrapping_sub(ph),
                (_, _, Some(entry)) => entry.wrapping_sub(image.entry),
                _ => 0,
            };
            let interp = image.interp.clone();
            self.modules.push(Self::module(image, bias, None));
            if let (Some(interp), Some(base)) = (interp, aux(AT_BASE).filter(|&b| b != 0)) {
                if let Ok(ld) = self.image(&interp) {
                    let lo = ld.vaddr_range().0 & !0xfff;
                    self.modules
                        .push(Self::module(ld, base.wrapping_sub(lo), None));
                }
            }
        }
        let Some(r_debug) = self.r_debug.or_else(|| self.find_r_debug(t)) else {
            return Ok(());
        };
        // DT_DEBUG is only filled in once the linker runs; the fallback
        // (ld.so's `_r_debug` symbol) is final at once.
        self.r_debug = Some(r_debug);
        // Walk the link_map list.
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        let mut lm = read_u64(t, r_debug + 8).unwrap_or(0);
        while lm != 0 && listed.len() < 4096 && seen.insert(lm) {
            let (Some(l_addr), Some(l_name), Some(next)) =
                (read_u64(t, lm), read_u64(t, lm + 8), read_u64(t, lm + 24))
            else {
                break;
            };
            let name = if l_name == 0 {
                String::new()
            } else {
                read_cstr(t, l_name, 4096).unwrap_or_default()
            };
            listed.push((lm, l_addr, name));
            lm = next;
        }
        // Drop modules the linker no longer lists (dlclose).
        let keys: HashSet<(u64, u64)> = listed.iter().map(|(lm, addr, _)| (*lm, *addr)).collect();
        self.modules
            .retain(|m| m.link_map.is_none_or(|lm| keys.contains(&(lm, m.bias))));
        for (lm, l_addr, name) in listed {
            if name.is_empty() {
                continue; // the executable
            }
            if let Some(m) = self
                .modules
                .iter_mut()
                .find(|m| m.bias == l_addr && m.link_map.is_none() && m.path != exe)
            {
                m.link_map = Some(lm); // the dynamic linker, found through AT_BASE
                continue;
            }
            if self
                .modules
                .iter()
                .any(|m| m.link_map == Some(lm) && m.bias == l_addr)
            {
                continue;
            }
            let path = PathBuf::from(&name);
            if !path.is_file() {
                continue; // linux-vdso.so.1 and the like
            }
            if let Ok(image) = self.image(&path) {
                self.modules.push(Self::module(image, l_addr, Some(lm)));
            }
        }
        Ok(())
    }

    /// `r_debug`: from the executable's DT_DEBUG (in memory), else the
    /// dynamic linker's `_r_debug` symbol.
    fn find_r_debug(&self, t: &dyn Target) -> Option<u64> {
        let exe = self.modules.first()?;
        if let Some(dynamic) = exe.image.dynamic_vaddr {
            let at = dynamic.wrapping_add(exe.bias);
            for i in 0..1024u64 {
                let Some(tag) = read_u64(t, at.wrapping_add(i * 16)) else {
                    break;
                };
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_DEBUG {
                    match read_u64(t, at.wrapping_add(i * 16 + 8)) {
                        Some(v) if v != 0 => return Some(v),
                        _ => break,
                    }
                }
            }
        }
        let ld = self.modules.get(1)?;
        let sym = ld.image.symbols.named("_r_debug").next()?;
        Some(sym.addr.wrapping_add(ld.bias))
    }

    /// The module whose load segments contain `addr`.
    pub fn module_at(&self, addr: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.contains(addr))
    }

    /// `(module, its DWARF)` for `addr`.
    pub(crate) fn debug_at(&self, addr: u64) -> Option<(&Module, &Arc<DebugInfo>)> {
        let m = self.module_at(addr)?;
        Some((m, m.image.debug()?))
    }

    /// The ELF symbol containing `addr`, as gdb shows it: `("main", 16)`
    /// for `<main+16>`.
    pub fn symbolize(&self, addr: u64) -> Option<(String, u64)> {
        let m = self.module_at(addr)?;
        let link = addr.wrapping_sub(m.bias);
        if let Some(s) = m.image.symbols.containing(link) {
            return Some((s.name.clone(), link - s.addr));
        }
        let d = m.image.debug()?;
        let f = d.func_at(link)?;
        Some((f.name.clone(), link - f.low))
    }

    /// ` <sym+off>` (with the leading space) for `addr`, or "".
    pub fn symbol_suffix(&self, addr: u64) -> String {
        match self.symbolize(addr) {
            Some((name, 0)) => format!(" <{name}>"),
            Some((name, off)) => format!(" <{name}+{off}>"),
            None => String::new(),
        }
    }

    /// The name of the function containing `addr` (DWARF, else ELF symbol).
    pub fn function_name(&self, addr: u64) -> Option<String> {
        let m = self.module_at(addr)?;
        let link = addr.wrapping_sub(m.bias);
        if let Some(f) = m.image.debug().and_then(|d| d.func_at(link)) {
            return Some(f.name.clone());
        }
        let s = m.image.symbols.containing(link)?;
        (s.kind != SymKind::Data).then(|| s.name.clone())
    }

    /// Runtime address of a data or function symbol (ELF symbol tables,
    /// executable first).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.modules.iter().find_map(|m| {
            let s = m
                .image
                .symbols
                .named(name)
                .min_by_key(|s| (s.kind == SymKind::Other, s.rank))?;
            Some(s.addr.wrapping_add(m.bias))
        })
    }

    /// `[start, end)` and name of the function containing `addr`, from
    /// DWARF, else from a sized ELF symbol.
    pub fn function_range(&self, addr: u64) -> Option<(u64, u64, String)> {
        let m = self.module_at(addr)?;
        let link = addr.wrapping_sub(m.bias);
        if let Some(f) = m.image.debug().and_then(|d| d.func_at(link)) {
            return Some((
                f.low.wrapping_add(m.bias),
                f.high.wrapping_add(m.bias),
                f.name.clone(),
            ));
        }
        let s = m.image.symbols.containing(link)?;
        if s.size == 0 || s.kind == SymKind::Data {
            return None;
        }
        let lo = s.addr.wrapping_add(m.bias);
        Some((lo, lo.wrapping_add(s.size), s.name.clone()))
    }

    /// Function, file and line of `addr`. For a caller frame pass its
    /// `lookup_pc` (the return address minus one).
    pub fn location(&self, addr: u64) -> Option<Loc> {
        let m = self.module_at(addr)?;
        let mut loc = Loc {
            function: self.function_name(addr),
            file: None,
            file_name: None,
            line: None,
            module: m.path.clone(),
        };
        if let Some(d) = m.image.debug() {
            if let Some((si, ri)) = d.row_at(addr.wrapping_sub(m.bias)) {
                let row = d.seqs[si].rows[ri];
                if row.line != 0 {
                    loc.file = d.files.get(row.file as usize).cloned();
                    loc.file_name = d.file_names.get(row.file as usize).cloned();
                    loc.line = Some(row.line);
                }
            }
        }
        Some(loc)
    }

    /// The line-table run containing `addr`: consecutive rows of the same
    /// file and line, as `[start, end)`. `None` without line info (or on a
    /// row with line 0).
    pub fn line_info(&self, addr: u64) -> Option<LineRow> {
        let (m, d) = self.debug_at(addr)?;
        let (si, ri) = d.row_at(addr.wrapping_sub(m.bias))?;
        let seq = &d.seqs[si];
        let row = seq.rows[ri];
        if row.line == 0 {
            return None;
        }
        let same = |r: &super::dwarf::Row| r.file == row.file && r.line == row.line;
        let mut first = ri;
        while first > 0 && same(&seq.rows[first - 1]) {
            first -= 1;
        }
        let mut last = ri;
        while last + 1 < seq.rows.len() && same(&seq.rows[last + 1]) {
            last += 1;
        }
        let start = seq.rows[first].addr;
        let end = d.row_end(si, last);
        Some(LineRow {
            file: d.files.get(row.file as usize)?.clone(),
            line: row.line,
            start: start.wrapping_add(m.bias),
            end: end.wrapping_add(m.bias),
            is_stmt: seq.rows[first].is_stmt,
        })
    }

    /// Link-time address after the prologue of the function spanning
    /// `[low, high)`, like gdb on amd64: past `[endbr64] push %rbp; mov
    /// %rsp,%rbp` and then to the start of the next line-table row if that
    /// left us mid-row; the entry itself for frameless functions.
    fn skip_prologue(m: &Module, d: Option<&DebugInfo>, low: u64, high: u64) -> u64 {
        let code = m.image.bytes_at(low, 16).unwrap_or(&[]);
        let mut p = 0;
        if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            p = 4;
        }
        let framed = code.get(p) == Some(&0x55)
            && matches!(
                code.get(p + 1..p + 4),
                Some([0x48, 0x89, 0xe5]) | Some([0x48, 0x8b, 0xec])
            );
        if !framed {
            return low;
        }
        let mut pc = low + p as u64 + 4;
        if let Some(d) = d {
            if let Some((si, ri)) = d.row_at(pc) {
                let row = d.seqs[si].rows[ri];
                if row.addr != pc {
                    let end = d.row_end(si, ri);
                    if low <= end && end < high {
                        pc = end;
                    }
                }
            }
        }
        pc
    }

    /// Where gdb stops for a function with DWARF: past the prologue, except
    /// in units where gcc emitted location lists (optimized code), where
    /// gdb trusts the entry.
    fn func_start(m: &Module, d: &DebugInfo, f: &super::dwarf::Func) -> u64 {
        if d.locations_valid.get(f.die.unit).copied().unwrap_or(false) {
            f.entry
        } else {
            Self::skip_prologue(m, Some(d), f.entry, f.high)
        }
    }

    /// Runtime addresses where `break NAME` stops, like gdb: after the
    /// prologue (at the entry of inlined copies and of optimized code). Functions with DWARF first, then ELF symbols (`.symtab`,
    /// `.dynsym`), executable first then libraries.
    pub fn function_breakpoint(&self, name: &str) -> Result<Vec<BreakLoc>, String> {
        let mut out = Vec::new();
        for m in &self.modules {
            let debug = m.image.debug();
            let mut found = false;
            if let Some(d) = debug {
                let mut entries: Vec<u64> = Vec::new();
                for f in d.funcs.iter().filter(|f| f.name == name) {
                    // The range holding the entry point.
                    if f.low <= f.entry && f.entry < f.high {
                        entries.push(Self::func_start(m, d, f));
                    }
                }
                // Inlined copies stop at their entry.
                entries.extend(d.inlined.get(name).into_iter().flatten().copied());
                entries.sort_unstable();
                entries.dedup();
                for pc in entries {
                    found = true;
                    out.push(pc.wrapping_add(m.bias));
                }
            }
            if !found {
                let mut addrs: Vec<(u64, u64)> = m
                    .image
                    .symbols
                    .named(name)
                    .filter(|s| {
                        s.kind == SymKind::Func
                            || (s.kind == SymKind::Other && m.image.is_code(s.addr))
                    })
                    .map(|s| (s.addr, s.addr.saturating_add(s.size.max(1))))
                    .collect();
                addrs.sort_unstable();
                addrs.dedup_by_key(|e| e.0);
                for (low, high) in addrs {
                    out.push(
                        Self::skip_prologue(m, debug.map(|d| &**d), low, high).wrapping_add(m.bias),
                    );
                }
            }
        }
        if out.is_empty() {
            return Err(format!("Function \"{name}\" not defined."));
        }
        out.dedup();
        Ok(out
            .into_iter()
            .map(|addr| self.break_loc(addr, None))
            .collect())
    }

    fn break_loc(&self, addr: u64, line: Option<(PathBuf, u32)>) -> BreakLoc {
        let (file, line) = match line {
            Some((f, l)) => (Some(f), Some(l)),
            None => match self.location(addr) {
                Some(loc) => (loc.file, loc.line),
                None => (None, None),
            },
        };
        BreakLoc { addr, file, line }
    }

    /// Runtime addresses where `break FILE:LINE` stops, like gdb: the
    /// lowest is_stmt address of the line in each function (if the line has
    /// no code, the next line that has), moved past the prologue when it
    /// falls inside one. `file` matches by basename or path suffix.
    pub fn line_breakpoint(&self, file: &str, line: u32) -> Result<Vec<BreakLoc>, String> {
        let want = Path::new(file);
        let matches_file = |p: &Path| p.ends_with(want) || p == want;
        let mut any_file = false;
        // (module index, file ids) with that file.
        let mut candidates = Vec::new();
        for (mi, m) in self.modules.iter().enumerate() {
            let Some(d) = m.image.debug() else { continue };
            let ids: HashSet<u32> = d
                .files
                .iter()
                .enumerate()
                .filter(|(_, p)| matches_file(p))
                .map(|(i, _)| i as u32)
                .collect();
            if !ids.is_empty() {
                any_file = true;
                candidates.push((mi, ids));
            }
        }
        if !any_file {
            return Err(format!("No source file named {file}."));
        }
        // The exact line if some row has it, else the smallest line after.
        let mut best: Option<u32> = None;
        for (mi, ids) in &candidates {
            let Some(d) = self.modules[*mi].image.debug() else {
                continue;
            };
            for seq in &d.seqs {
                for r in &seq.rows {
                    if r.is_stmt && r.line >= line && ids.contains(&r.file) {
                        best = Some(best.map_or(r.line, |b: u32| b.min(r.line)));
                    }
                }
            }
        }
        let Some(target) = best else {
            return Err(format!("No line {line} in file \"{file}\"."));
        };
        let mut out = Vec::new();
        for (mi, ids) in &candidates {
            let m = &self.modules[*mi];
            let Some(d) = m.image.debug() else { continue };
            // Lowest address per function (or per address when outside any).
            let mut per_func: HashMap<Option<(u64, u64)>, (u64, u32)> = HashMap::new();
            for seq in &d.seqs {
                for r in &seq.rows {
                    if r.is_stmt && r.line == target && ids.contains(&r.file) {
                        let key = d
                            .func_at(r.addr)
                            .map(|f| (f.low, f.high))
                            .or(Some((r.addr, r.addr)));
                        let e = per_func.entry(key).or_insert((r.addr, r.file));
                        if r.addr < e.0 {
                            *e = (r.addr, r.file);
                        }
                    }
                }
            }
            for (_, (addr, file_id)) in per_func {
                let mut moved = None;
                if let Some(f) = d.func_at(addr) {
                    if f.low <= f.entry && f.entry < f.high {
                        let post = Self::func_start(m, d, f);
                        if addr < post {
                            moved = Some(post);
                        }
                    }
                }
                let loc = match moved {
                    Some(pc) => self.break_loc(pc.wrapping_add(m.bias), None),
                    None => {
                        let path = d.files.get(file_id as usize).cloned().unwrap_or_default();
                        self.break_loc(addr.wrapping_add(m.bias), Some((path, target)))
                    }
                };
                out.push(loc);
            }
        }
        out.sort_by_key(|b| b.addr);
        out.dedup_by_key(|b| b.addr);
        Ok(out)
    }

    /// The full path of the source file `file` (basename or path suffix)
    /// as the debug info names it.
    pub fn source_path(&self, file: &Path) -> Option<PathBuf> {
        if file.is_absolute() && file.is_file() {
            return Some(file.to_path_buf());
        }
        self.modules.iter().find_map(|m| {
            let d = m.image.debug()?;
            d.files.iter().find(|p| p.ends_with(file)).cloned()
        })
    }

    /// Lines `from..=to` (1-based, clamped to the file) of a source file,
    /// for `list`.
    pub fn source_lines(
        &self,
        file: &Path,
        from: u32,
        to: u32,
    ) -> Result<Vec<(u32, String)>, String> {
        let path = self
            .source_path(file)
            .ok_or_else(|| format!("No source file named {}.", file.display()))?;
        let bytes = std::fs::read(&path).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
            format!("{}: {msg}.", path.display())
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let from = from.max(1);
        if from as usize > lines.len() {
            return Err(format!(
                "Line number {from} out of range; \"{}\" has {} lines.",
                file.display(),
                lines.len()
            ));
        }
        Ok(lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32 + 1, l.to_string()))
            .filter(|(n, _)| *n >= from && *n <= to)
            .collect())
    }
}
