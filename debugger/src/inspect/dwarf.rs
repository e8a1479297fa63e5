//! A file's DWARF, indexed once: line-table sequences, function ranges, and
//! the names of globals, functions, types and enumerators. Addresses here
//! are link-time addresses; callers add the module's bias.

use std::collections::HashMap;
use std::path::PathBuf;

use gimli::{AttributeValue, DebuggingInformationEntry, Reader as _, UnitOffset};

use super::elf::{FileData, R};

/// A DIE: unit index in [`DebugInfo::units`] and offset in that unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DieRef {
    pub unit: usize,
    pub offset: UnitOffset<usize>,
}

/// One address range of a function.
#[derive(Debug, Clone)]
pub(crate) struct Func {
    pub low: u64,
    pub high: u64,
    /// The function's entry pc (its DW_AT_low_pc or lowest range start).
    pub entry: u64,
    pub name: String,
    pub die: DieRef,
}

/// One line-table row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub addr: u64,
    /// Index in [`DebugInfo::files`].
    pub file: u32,
    /// 0: no line.
    pub line: u32,
    pub is_stmt: bool,
}

/// A contiguous run of rows, `[start, end)`.
#[derive(Debug, Clone)]
pub(crate) struct Sequence {
    pub start: u64,
    pub end: u64,
    pub rows: Vec<Row>,
}

/// What a name at file scope denotes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Named {
    Variable(DieRef),
    /// An enumerator: the enumeration type's DIE and the value.
    Enumerator(DieRef, i64),
}

pub(crate) struct DebugInfo {
    pub image_id: u32,
    pub dwarf: gimli::Dwarf<R>,
    pub units: Vec<gimli::Unit<R>>,
    pub files: Vec<PathBuf>,
    /// The same files as the compiler named them (what gdb prints).
    pub file_names: Vec<String>,
    /// Per unit: line-program file index -> index in `files`.
    pub unit_files: Vec<HashMap<u64, u32>>,
    pub seqs: Vec<Sequence>,
    /// Sorted by `low`.
    pub funcs: Vec<Func>,
    /// Variables and enumerators declared at file scope, by name.
    pub globals: HashMap<String, Vec<Named>>,
    /// Struct/union/enum tags ("struct node"), typedefs and base types
    /// ("point", "int"), by name.
    pub types: HashMap<String, Vec<DieRef>>,
    /// Inlined instances of functions: name -> entry pcs.
    pub inlined: HashMap<String, Vec<u64>>,
    /// Per unit: gcc >= 4.5 with location lists, where gdb trusts variable
    /// locations at a function's entry and so does not skip prologues.
    pub locations_valid: Vec<bool>,
}

/// Turn an attribute string into a Rust string (lossy).
pub(crate) fn string_of(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    v: AttributeValue<R>,
) -> Option<String> {
    let s = dwarf.attr_string(unit, v).ok()?;
    let s = s.to_string_lossy().ok()?;
    Some(s.into_owned())
}

fn tombstone(unit: &gimli::Unit<R>, addr: u64) -> bool {
    addr == 0 || unit.is_tombstone_address(addr)
}

impl DebugInfo {
    /// Index the DWARF in `file`; `None` when it has none.
    pub fn load(file: &FileData, image_id: u32) -> Option<DebugInfo> {
        file.section(".debug_info").and_then(|s| s.file)?;
        let dwarf = gimli::Dwarf::load(|id| Ok::<R, ()>(file.reader(id.name()))).ok()?;
        let mut units = Vec::new();
        let mut headers = dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            match dwarf.unit(header) {
                Ok(unit) => units.push(unit),
                Err(_) => continue,
            }
        }
        let mut info = DebugInfo {
            image_id,
            dwarf,
            units,
            files: Vec::new(),
            file_names: Vec::new(),
            unit_files: Vec::new(),
            seqs: Vec::new(),
            funcs: Vec::new(),
            globals: HashMap::new(),
            types: HashMap::new(),
            inlined: HashMap::new(),
            locations_valid: Vec::new(),
        };
        let mut file_ids: HashMap<PathBuf, u32> = HashMap::new();
        for u in 0..info.units.len() {
            info.index_lines(u, &mut file_ids);
            info.index_dies(u);
        }
        info.seqs.sort_by_key(|s| s.start);
        info.funcs.sort_by_key(|f| (f.low, f.high));
        Some(info)
    }

    fn intern_file(
        &mut self,
        file_ids: &mut HashMap<PathBuf, u32>,
        path: PathBuf,
        name: String,
    ) -> u32 {
        let next = self.files.len() as u32;
        *file_ids.entry(path.clone()).or_insert_with(|| {
            self.files.push(path);
            self.file_names.push(name);
            next
        })
    }

    fn index_lines(&mut self, u: usize, file_ids: &mut HashMap<PathBuf, u32>) {
        let mut local: HashMap<u64, u32> = HashMap::new();
        let unit = &self.units[u];
        let Some(program) = unit.line_program.clone() else {
            self.unit_files.push(local);
            return;
        };
        // Every file of the header (call sites may name files without rows).
        let header = program.header().clone();
        let first = if header.version() >= 5 { 0 } else { 1 };
        for (i, entry) in header.file_names().iter().enumerate() {
            if let Some((path, name)) = file_path(&self.dwarf, &self.units[u], &header, entry) {
                let id = self.intern_file(file_ids, path, name);
                local.insert(i as u64 + first, id);
            }
        }
        let unit = &self.units[u];
        let mut rows = program.rows();
        let mut current: Vec<Row> = Vec::new();
        let mut guard = 0usize;
        loop {
            guard += 1;
            if guard > 50_000_000 {
                break;
            }
            let (header, row) = match rows.next_row() {
                Ok(Some(x)) => x,
                _ => break,
            };
            if row.end_sequence() {
                if let Some(first) = current.first() {
                    let start = first.addr;
                    let end = row.address();
                    if !tombstone(unit, start) && end > start {
                        self.seqs.push(Sequence {
                            start,
                            end,
                            rows: std::mem::take(&mut current),
                        });
                    }
                }
                current.clear();
                continue;
            }
            let idx = row.file_index();
            let file = match local.get(&idx) {
                Some(&f) => f,
                None => {
                    let _ = header;
                    let next = self.files.len() as u32;
                    let id = *file_ids.entry(PathBuf::from("??")).or_insert_with(|| {
                        self.files.push(PathBuf::from("??"));
                        self.file_names.push("??".to_string());
                        next
                    });
                    local.insert(idx, id);
                    id
                }
            };
            let line = row
                .line()
                .map(|l| l.get().min(u64::from(u32::MAX)) as u32)
                .unwrap_or(0);
            let addr = row.address();
            if current.last().is_some_and(|r| addr < r.addr) {
                // Malformed (addresses must not decrease): drop the run.
                current.clear();
            }
            current.push(Row {
                addr,
                file,
                line,
                is_stmt: row.is_stmt(),
            });
        }
        self.unit_files.push(local);
    }

    fn index_dies(&mut self, u: usize) {
        let unit = &self.units[u];
        let mut cursor = unit.entries();
        // Tags of the enclosing DIEs, by depth.
        let mut stack: Vec<(gimli::DwTag, UnitOffset<usize>)> = Vec::new();
        let mut funcs = Vec::new();
        let mut globals: Vec<(String, Named)> = Vec::new();
        let mut types: Vec<(String, DieRef)> = Vec::new();
        let mut inlined: Vec<(String, u64)> = Vec::new();
        let mut has_loclist = false;
        let mut count = 0usize;
        while let Ok(Some(entry)) = cursor.next_dfs() {
            count += 1;
            if count > 20_000_000 {
                break;
            }
            let depth = usize::try_from(entry.depth()).unwrap_or(0);
            stack.truncate(depth);
            let parent = stack.last().copied();
            stack.push((entry.tag(), entry.offset()));
            let die = DieRef {
                unit: u,
                offset: entry.offset(),
            };
            let at_file_scope = depth == 1;
            match entry.tag() {
                gimli::DW_TAG_subprogram => {
                    let Some(name) = self.name_of(u, entry) else {
                        continue;
                    };
                    let Ok(mut ranges) = self.dwarf.die_ranges(unit, entry) else {
                        continue;
                    };
                    let mut spans = Vec::new();
                    while let Ok(Some(r)) = ranges.next() {
                        if r.end > r.begin && !tombstone(unit, r.begin) {
                            spans.push((r.begin, r.end));
                        }
                    }
                    let low_pc = match entry.attr_value(gimli::DW_AT_low_pc) {
                        Some(v) => self.dwarf.attr_address(unit, v).ok().flatten(),
                        None => None,
                    };
                    let Some(entry_pc) = low_pc.or_else(|| spans.iter().map(|s| s.0).min()) else {
                        continue;
                    };
                    for (low, high) in spans {
                        funcs.push(Func {
                            low,
                            high,
                            entry: entry_pc,
                            name: name.clone(),
                            die,
                        });
                    }
                }
                gimli::DW_TAG_inlined_subroutine => {
                    let Some(name) = self.name_of(u, entry) else {
                        continue;
                    };
                    let pc = match entry.attr_value(gimli::DW_AT_entry_pc) {
                        Some(v) => self.dwarf.attr_address(unit, v).ok().flatten(),
                        None => None,
                    };
                    let pc = pc.or_else(|| {
                        let mut ranges = self.dwarf.die_ranges(unit, entry).ok()?;
                        let mut lo: Option<u64> = None;
                        while let Ok(Some(r)) = ranges.next() {
                            if r.end > r.begin {
                                lo = Some(lo.map_or(r.begin, |l| l.min(r.begin)));
                            }
                        }
                        lo
                    });
                    if let Some(pc) = pc.filter(|&pc| !tombstone(unit, pc)) {
                        inlined.push((name, pc));
                    }
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter
                    if !has_loclist
                        && matches!(
                            entry.attr_value(gimli::DW_AT_location),
                            Some(AttributeValue::LocationListsRef(_))
                                | Some(AttributeValue::DebugLocListsIndex(_))
                                | Some(AttributeValue::SecOffset(_))
                        ) =>
                {
                    has_loclist = true;
                    if at_file_scope {
                        if let Some(name) = self.name_of(u, entry) {
                            globals.push((name, Named::Variable(die)));
                        }
                    }
                }
                gimli::DW_TAG_variable if at_file_scope => {
                    if let Some(name) = self.name_of(u, entry) {
                        globals.push((name, Named::Variable(die)));
                    }
                }
                gimli::DW_TAG_enumerator if depth == 2 => {
                    let Some((gimli::DW_TAG_enumeration_type, parent_off)) = parent else {
                        continue;
                    };
                    let (Some(name), Some(v)) = (
                        self.name_of(u, entry),
                        entry.attr_value(gimli::DW_AT_const_value),
                    ) else {
                        continue;
                    };
                    let value = match v {
                        AttributeValue::Sdata(x) => x,
                        other => match other.udata_value() {
                            Some(x) => x as i64,
                            None => continue,
                        },
                    };
                    let owner = DieRef {
                        unit: u,
                        offset: parent_off,
                    };
                    globals.push((name, Named::Enumerator(owner, value)));
                }
                gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_enumeration_type
                | gimli::DW_TAG_typedef
                | gimli::DW_TAG_base_type
                    if depth <= 2 =>
                {
                    if let Some(name) = self.name_of(u, entry) {
                        let key = match entry.tag() {
                            gimli::DW_TAG_structure_type => format!("struct {name}"),
                            gimli::DW_TAG_union_type => format!("union {name}"),
                            gimli::DW_TAG_enumeration_type => format!("enum {name}"),
                            _ => name,
                        };
                        types.push((key, die));
                    }
                }
                _ => {}
            }
        }
        let producer = unit
            .entry(unit.root_offset())
            .ok()
            .and_then(|root| root.attr_value(gimli::DW_AT_producer))
            .and_then(|v| string_of(&self.dwarf, unit, v))
            .unwrap_or_default();
        let gcc = producer.starts_with("GNU ") && gcc_at_least_4_5(&producer);
        self.locations_valid.push(has_loclist && gcc);
        self.funcs.extend(funcs);
        for (name, pc) in inlined {
            self.inlined.entry(name).or_default().push(pc);
        }
        for (name, n) in globals {
            self.globals.entry(name).or_default().push(n);
        }
        for (name, d) in types {
            self.types.entry(name).or_default().push(d);
        }
    }

    /// The DIE at `die`.
    pub fn entry(&self, die: DieRef) -> Option<DebuggingInformationEntry<R>> {
        self.units.get(die.unit)?.entry(die.offset).ok()
    }

    /// Follow a reference attribute value to its DIE.
    pub fn resolve(&self, unit: usize, v: AttributeValue<R>) -> Option<DieRef> {
        match v {
            AttributeValue::UnitRef(off) => Some(DieRef { unit, offset: off }),
            AttributeValue::DebugInfoRef(off) => {
                for (i, u) in self.units.iter().enumerate() {
                    if let Some(uoff) = off.to_unit_offset(&u.header) {
                        return Some(DieRef {
                            unit: i,
                            offset: uoff,
                        });
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// A DIE's name, following DW_AT_abstract_origin / DW_AT_specification.
    pub fn name_of(&self, u: usize, entry: &DebuggingInformationEntry<R>) -> Option<String> {
        let mut hops = 0;
        let mut owned;
        let mut cur_unit = u;
        let mut cur = entry;
        loop {
            let unit = self.units.get(cur_unit)?;
            if let Some(v) = cur.attr_value(gimli::DW_AT_name) {
                return string_of(&self.dwarf, unit, v);
            }
            hops += 1;
            if hops > 8 {
                return None;
            }
            let next = cur
                .attr_value(gimli::DW_AT_abstract_origin)
                .or_else(|| cur.attr_value(gimli::DW_AT_specification))?;
            let r = self.resolve(cur_unit, next)?;
            owned = self.entry(r)?;
            cur_unit = r.unit;
            cur = &owned;
        }
    }

    /// An attribute of a DIE or of the DIE it is a specification or
    /// concrete instance of.
    pub fn attr_inherited(
        &self,
        die: DieRef,
        at: gimli::DwAt,
    ) -> Option<(DieRef, AttributeValue<R>)> {
        let mut cur = die;
        for _ in 0..8 {
            let e = self.entry(cur)?;
            if let Some(v) = e.attr_value(at) {
                return Some((cur, v));
            }
            let next = e
                .attr_value(gimli::DW_AT_abstract_origin)
                .or_else(|| e.attr_value(gimli::DW_AT_specification))?;
            cur = self.resolve(cur.unit, next)?;
        }
        None
    }

    /// The chain of inlined calls containing link-time `pc` inside the
    /// function (or block) `die`, outermost first.
    pub fn inline_chain(&self, die: DieRef, pc: u64) -> Vec<DieRef> {
        let mut chain = Vec::new();
        let mut cur = die;
        'outer: for _ in 0..64 {
            // Breadth over lexical blocks, looking for an inlined call.
            let mut todo = vec![cur];
            let mut steps = 0;
            while let Some(d) = todo.pop() {
                for child in super::types::children(self, d) {
                    steps += 1;
                    if steps > 100_000 {
                        break 'outer;
                    }
                    let Some(e) = self.entry(child) else { continue };
                    match e.tag() {
                        gimli::DW_TAG_inlined_subroutine if self.die_contains(child, &e, pc) => {
                            chain.push(child);
                            cur = child;
                            continue 'outer;
                        }
                        gimli::DW_TAG_lexical_block if self.die_contains(child, &e, pc) => {
                            todo.push(child)
                        }
                        _ => {}
                    }
                }
            }
            break;
        }
        chain
    }

    /// Whether a DIE's address ranges contain link-time `pc` (a DIE
    /// without ranges contains everything).
    pub fn die_contains(&self, die: DieRef, entry: &DebuggingInformationEntry<R>, pc: u64) -> bool {
        let Some(unit) = self.units.get(die.unit) else {
            return false;
        };
        let Ok(mut ranges) = self.dwarf.die_ranges(unit, entry) else {
            return false;
        };
        let mut any = false;
        while let Ok(Some(r)) = ranges.next() {
            any = true;
            if r.begin <= pc && pc < r.end {
                return true;
            }
        }
        !any
    }

    /// The call site of an inlined call: (file id, line).
    pub fn call_site(&self, die: DieRef) -> Option<(u32, u32)> {
        let e = self.entry(die)?;
        let file = match e.attr_value(gimli::DW_AT_call_file)? {
            AttributeValue::FileIndex(f) => f,
            other => other.udata_value()?,
        };
        let line = e.attr_value(gimli::DW_AT_call_line)?.udata_value()?;
        let id = *self.unit_files.get(die.unit)?.get(&file)?;
        Some((id, u32::try_from(line).ok()?))
    }

    /// The row containing `addr`: (sequence index, row index). Like gdb,
    /// among rows at one address the last one, or if that is not a
    /// statement, the last statement row at that address.
    pub fn row_at(&self, addr: u64) -> Option<(usize, usize)> {
        let i = self.seqs.partition_point(|s| s.start <= addr);
        // Sequences do not overlap in sane files; check a few in case.
        for si in (i.saturating_sub(4)..i).rev() {
            let s = &self.seqs[si];
            if s.start <= addr && addr < s.end {
                let mut ri = s.rows.partition_point(|r| r.addr <= addr).checked_sub(1)?;
                let mut tmp = ri;
                while tmp > 0 && s.rows[tmp - 1].addr == s.rows[tmp].addr && !s.rows[tmp].is_stmt {
                    tmp -= 1;
                }
                if s.rows[tmp].is_stmt {
                    ri = tmp;
                }
                return Some((si, ri));
            }
        }
        None
    }

    /// End address of row `ri` of sequence `si`.
    pub fn row_end(&self, si: usize, ri: usize) -> u64 {
        let s = &self.seqs[si];
        let addr = s.rows[ri].addr;
        s.rows[ri + 1..]
            .iter()
            .find(|r| r.addr > addr)
            .map(|r| r.addr)
            .unwrap_or(s.end)
    }

    /// The innermost function whose range contains `addr`.
    pub fn func_at(&self, addr: u64) -> Option<&Func> {
        let i = self.funcs.partition_point(|f| f.low <= addr);
        self.funcs[..i]
            .iter()
            .rev()
            .take(64)
            .filter(|f| addr < f.high)
            .min_by_key(|f| f.high - f.low)
    }
}

/// Whether a `GNU C17 12.2.0 ...` producer is gcc 4.5 or later.
fn gcc_at_least_4_5(producer: &str) -> bool {
    let Some(version) = producer
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    major > 4 || (major == 4 && minor >= 5)
}

/// The path of a line-table file entry (comp_dir / directory / name), and
/// the name as the compiler recorded it (directory / name).
fn file_path(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    header: &gimli::LineProgramHeader<R>,
    file: &gimli::FileEntry<R>,
) -> Option<(PathBuf, String)> {
    let mut path = PathBuf::new();
    if let Some(dir) = &unit.comp_dir {
        if let Ok(d) = dir.to_string_lossy() {
            path.push(d.as_ref());
        }
    }
    let mut recorded = PathBuf::new();
    if file.directory_index() != 0 {
        if let Some(dir) = file.directory(header) {
            if let Some(d) = string_of(dwarf, unit, dir) {
                recorded.push(d);
            }
        }
    }
    recorded.push(string_of(dwarf, unit, file.path_name())?);
    path.push(&recorded);
    Some((path, recorded.to_string_lossy().into_owned()))
}
