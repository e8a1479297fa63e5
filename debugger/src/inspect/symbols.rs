//! ELF symbol tables (`.symtab`, `.dynsym`) plus synthetic `name@plt`
//! symbols, at link-time addresses.

use std::collections::HashMap;

use object::read::elf::ElfFile64;
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationFlags,
    RelocationTarget, SymbolKind,
};

/// What a symbol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymKind {
    Func,
    Data,
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Sym {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub kind: SymKind,
    /// Preference among symbols at one address: lower is better.
    pub rank: u8,
    /// End of the symbol's section: gdb never lets a symbol name an
    /// address in a later section.
    pub sec_end: u64,
}

/// A file's symbols, sorted by address and indexed by name.
#[derive(Default)]
pub(crate) struct Symbols {
    by_addr: Vec<Sym>,
    by_name: HashMap<String, Vec<usize>>,
}

fn rank(sym: &object::read::elf::ElfSymbol64<'_, '_, Endianness>, name: &str) -> u8 {
    let binding = if sym.is_global() && !sym.is_weak() {
        0
    } else if sym.is_weak() {
        1
    } else {
        2
    };
    let sized = if sym.size() > 0 { 0 } else { 4 };
    let underscores = name.bytes().take_while(|&b| b == b'_').count().min(3) as u8;
    binding + sized + underscores * 8
}

impl Symbols {
    pub fn from_elf(elf: &ElfFile64<Endianness>, data: &[u8]) -> Symbols {
        let mut syms = Vec::new();
        for sym in elf.symbols().chain(elf.dynamic_symbols()) {
            let kind = match sym.kind() {
                SymbolKind::Text => SymKind::Func,
                SymbolKind::Data => SymKind::Data,
                SymbolKind::Unknown => SymKind::Other,
                _ => continue,
            };
            if sym.is_undefined() || sym.section_index().is_none() {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let name = name.split('@').next().unwrap_or(name);
            let sec_end = sym
                .section_index()
                .and_then(|i| elf.section_by_index(i).ok())
                .map(|sec| sec.address().saturating_add(sec.size()))
                .filter(|&end| end > 0)
                .unwrap_or(u64::MAX);
            syms.push(Sym {
                sec_end,
                name: name.to_string(),
                addr: sym.address(),
                size: sym.size(),
                kind,
                rank: rank(&sym, name),
            });
        }
        syms.extend(plt_symbols(elf, data));
        let mut out = Symbols::default();
        out.set(syms);
        out
    }

    fn set(&mut self, mut syms: Vec<Sym>) {
        syms.sort_by(|a, b| {
            (a.addr, a.rank, &a.name, a.size).cmp(&(b.addr, b.rank, &b.name, b.size))
        });
        syms.dedup_by(|a, b| a.addr == b.addr && a.name == b.name);
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in syms.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().push(i);
        }
        self.by_addr = syms;
        self.by_name = by_name;
    }

    /// Add another table's symbols (a separate debug file's `.symtab`).
    pub fn merge(&mut self, other: Symbols) {
        let mut all = std::mem::take(&mut self.by_addr);
        all.extend(other.by_addr);
        self.set(all);
    }

    pub fn named(&self, name: &str) -> impl Iterator<Item = &Sym> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.by_addr.get(i))
    }

    /// The symbol containing link-time address `addr`.
    pub fn containing(&self, addr: u64) -> Option<&Sym> {
        // gdb's lookup_minimal_symbol_by_pc_section: the nearest preceding
        // symbol of the same section; zero-sized ones only when no sized
        // symbol covers the address.
        let syms = &self.by_addr;
        let mut hi = syms.partition_point(|s| s.addr <= addr);
        let mut best_zero: Option<usize> = None;
        let mut steps = 0;
        let found = loop {
            let Some(i) = hi.checked_sub(1) else {
                break None;
            };
            steps += 1;
            if steps > 4096 {
                break None;
            }
            let s = &syms[i];
            if addr >= s.sec_end {
                hi = i;
                continue;
            }
            if s.size == 0 {
                best_zero.get_or_insert(i);
                hi = i;
                continue;
            }
            let end = s.addr.saturating_add(s.size);
            if addr >= end && i > 0 && addr < syms[i - 1].addr.saturating_add(syms[i - 1].size) {
                hi = i;
                continue;
            }
            break Some(i);
        };
        let chosen = match found {
            Some(i) if addr < syms[i].addr.saturating_add(syms[i].size) => Some(i),
            _ => best_zero,
        }?;
        // Among aliases at that address, the preferred one.
        let at = syms[chosen].addr;
        let want_sized = syms[chosen].size != 0;
        let lo = syms.partition_point(|s| s.addr < at);
        syms[lo..]
            .iter()
            .take_while(|s| s.addr == at)
            .filter(|s| (s.size != 0) == want_sized && addr < s.sec_end)
            .filter(|s| s.size == 0 || addr < s.addr.saturating_add(s.size))
            .min_by_key(|s| s.rank)
    }
}

/// `name@plt` for each PLT entry: the entry's `jmp *disp(%rip)` reads a GOT
/// slot, and the slot's dynamic relocation names the function (what BFD's
/// synthetic symbol table does).
fn plt_symbols(elf: &ElfFile64<Endianness>, _data: &[u8]) -> Vec<Sym> {
    let mut slots: HashMap<u64, String> = HashMap::new();
    let dynsyms = elf.dynamic_symbol_table();
    if let (Some(relocs), Some(table)) = (elf.dynamic_relocations(), dynsyms) {
        for (offset, reloc) in relocs {
            let RelocationFlags::Elf { r_type } = reloc.flags() else {
                continue;
            };
            if r_type == object::elf::R_X86_64_IRELATIVE {
                // An ifunc resolved at load time: BFD calls it *ABS*+addend.
                slots.insert(offset, format!("*ABS*+{:#x}", reloc.addend()));
                continue;
            }
            if r_type != object::elf::R_X86_64_JUMP_SLOT && r_type != object::elf::R_X86_64_GLOB_DAT
            {
                continue;
            }
            if let RelocationTarget::Symbol(idx) = reloc.target() {
                if let Some(name) = table.symbol_by_index(idx).ok().and_then(|s| s.name().ok()) {
                    if !name.is_empty() {
                        slots.insert(offset, name.to_string());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    if slots.is_empty() {
        return out;
    }
    for sec in elf.sections() {
        let name = sec.name().unwrap_or("");
        if !matches!(name, ".plt" | ".plt.sec" | ".plt.got") {
            continue;
        }
        let Ok(bytes) = sec.data() else { continue };
        let entsize = if name == ".plt.got" && bytes.len() % 16 != 0 {
            8
        } else {
            16
        };
        for (i, entry) in bytes.chunks(entsize).enumerate() {
            let at = sec.address().wrapping_add((i * entsize) as u64);
            // Find `ff 25 disp32` (maybe after endbr64 / bnd prefix).
            let Some(pos) = entry.windows(2).position(|w| w == [0xff, 0x25]) else {
                continue;
            };
            let Some(disp) = entry.get(pos + 2..pos + 6) else {
                continue;
            };
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            let next = at.wrapping_add(pos as u64 + 6);
            let slot = next.wrapping_add(disp as i64 as u64);
            if let Some(sym) = slots.get(&slot) {
                out.push(Sym {
                    name: format!("{sym}@plt"),
                    addr: at,
                    size: entsize as u64,
                    kind: SymKind::Func,
                    rank: 0,
                    sec_end: sec.address().saturating_add(sec.size()),
                });
            }
        }
    }
    out
}
