//! C types: an arena of types built from DWARF (and for casts and
//! registers), named in C declarator syntax like gdb does.

use std::collections::HashMap;

use gimli::AttributeValue;

use super::dwarf::{string_of, DebugInfo, DieRef};

/// A type in a [`super::Program`]'s type arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeId(u32);

/// A struct or union member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Field {
    pub name: Option<String>,
    pub ty: TypeId,
    /// Byte offset in the aggregate.
    pub offset: u64,
    /// Bit field: (bit offset from `offset * 8`, bit size).
    pub bits: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Void,
    /// Integers, characters and booleans.
    Int {
        name: String,
        size: u64,
        signed: bool,
        /// Printed as a character too (`65 'A'`).
        char_like: bool,
        bool_like: bool,
    },
    Float {
        name: String,
        size: u64,
    },
    Pointer(TypeId),
    Array {
        elem: TypeId,
        count: Option<u64>,
    },
    Struct {
        union: bool,
        name: Option<String>,
        size: u64,
        fields: Vec<Field>,
        /// A declaration only (`struct s;`): the definition is elsewhere.
        incomplete: bool,
    },
    Enum {
        name: Option<String>,
        size: u64,
        signed: bool,
        values: Vec<(String, i64)>,
    },
    Typedef {
        name: String,
        target: TypeId,
    },
    Const(TypeId),
    Volatile(TypeId),
    Func {
        ret: TypeId,
        params: Vec<TypeId>,
        varargs: bool,
        prototyped: bool,
    },
    /// `$eflags`.
    Flags,
    /// A function known only from an ELF symbol.
    NoDebugText,
}

/// The type arena.
pub(crate) struct Types {
    kinds: Vec<Kind>,
    interned: HashMap<Kind, TypeId>,
    by_die: HashMap<(u32, usize, usize), TypeId>,
}

impl Default for Types {
    fn default() -> Self {
        Types::new()
    }
}

/// Recursion limit for nested DWARF types (hostile input).
const MAX_DEPTH: u32 = 64;

impl Types {
    pub fn new() -> Types {
        let mut t = Types {
            kinds: Vec::new(),
            interned: HashMap::new(),
            by_die: HashMap::new(),
        };
        t.intern(Kind::Void); // TypeId(0)
        t
    }

    pub fn get(&self, id: TypeId) -> &Kind {
        self.kinds.get(id.0 as usize).unwrap_or(&Kind::Void)
    }

    pub fn intern(&mut self, kind: Kind) -> TypeId {
        if let Some(&id) = self.interned.get(&kind) {
            return id;
        }
        let id = self.push(kind.clone());
        self.interned.insert(kind, id);
        id
    }

    fn push(&mut self, kind: Kind) -> TypeId {
        let id = TypeId(self.kinds.len() as u32);
        self.kinds.push(kind);
        id
    }

    pub fn void(&mut self) -> TypeId {
        self.intern(Kind::Void)
    }

    pub fn int_type(&mut self, name: &str, size: u64, signed: bool) -> TypeId {
        let char_like = size == 1 && name.contains("char");
        self.intern(Kind::Int {
            name: name.to_string(),
            size,
            signed,
            char_like,
            bool_like: false,
        })
    }

    pub fn int(&mut self) -> TypeId {
        self.int_type("int", 4, true)
    }

    pub fn long(&mut self) -> TypeId {
        self.int_type("long", 8, true)
    }

    pub fn ulong(&mut self) -> TypeId {
        self.int_type("unsigned long", 8, false)
    }

    pub fn char(&mut self) -> TypeId {
        self.int_type("char", 1, true)
    }

    pub fn double(&mut self) -> TypeId {
        self.intern(Kind::Float {
            name: "double".into(),
            size: 8,
        })
    }

    pub fn bool_type(&mut self) -> TypeId {
        self.intern(Kind::Int {
            name: "_Bool".into(),
            size: 1,
            signed: false,
            char_like: false,
            bool_like: true,
        })
    }

    pub fn pointer_to(&mut self, target: TypeId) -> TypeId {
        self.intern(Kind::Pointer(target))
    }

    pub fn array_of(&mut self, elem: TypeId, count: u64) -> TypeId {
        self.intern(Kind::Array {
            elem,
            count: Some(count),
        })
    }

    /// `void (*)()`, the type of `$pc`.
    pub fn code_ptr(&mut self) -> TypeId {
        let void = self.void();
        let f = self.intern(Kind::Func {
            ret: void,
            params: Vec::new(),
            varargs: false,
            prototyped: false,
        });
        self.pointer_to(f)
    }

    /// The type behind typedefs and qualifiers.
    pub fn strip(&self, mut id: TypeId) -> TypeId {
        for _ in 0..MAX_DEPTH {
            match self.get(id) {
                Kind::Typedef { target, .. } | Kind::Const(target) | Kind::Volatile(target) => {
                    id = *target
                }
                _ => return id,
            }
        }
        id
    }

    pub fn kind(&self, id: TypeId) -> &Kind {
        self.get(self.strip(id))
    }

    /// Size in bytes (`None` for void, functions and unbounded arrays).
    pub fn size(&self, id: TypeId) -> Option<u64> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: TypeId, depth: u32) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.kind(id) {
            Kind::Void | Kind::Func { .. } | Kind::NoDebugText => None,
            Kind::Int { size, .. } | Kind::Float { size, .. } | Kind::Enum { size, .. } => {
                Some(*size)
            }
            Kind::Struct { size, .. } => Some(*size),
            Kind::Pointer(_) | Kind::Flags => Some(8),
            Kind::Array { elem, count } => {
                let n = (*count)?;
                self.size_depth(*elem, depth + 1)?.checked_mul(n)
            }
            Kind::Typedef { .. } | Kind::Const(_) | Kind::Volatile(_) => None,
        }
    }

    pub fn is_integral(&self, id: TypeId) -> bool {
        matches!(self.kind(id), Kind::Int { .. } | Kind::Enum { .. })
    }

    pub fn is_signed(&self, id: TypeId) -> bool {
        match self.kind(id) {
            Kind::Int { signed, .. } | Kind::Enum { signed, .. } => *signed,
            _ => false,
        }
    }

    pub fn is_scalar(&self, id: TypeId) -> bool {
        matches!(
            self.kind(id),
            Kind::Int { .. }
                | Kind::Float { .. }
                | Kind::Enum { .. }
                | Kind::Pointer(_)
                | Kind::Flags
        )
    }

    /// The C name of a type: `int`, `char *`, `struct node *`, `int (*)[3]`,
    /// `int (int, char **)`.
    pub fn name(&self, id: TypeId) -> String {
        let (prefix, suffix) = self.parts(id, 0);
        join(&prefix, &suffix)
    }

    /// gdb's `ptype`: like [`Types::name`], with the struct, union or
    /// enum at the base (behind typedefs, pointers and arrays) spelled out.
    pub fn expanded(&self, id: TypeId) -> String {
        let (prefix, suffix) = self.parts_with(id, 0, true);
        join(&prefix, &suffix)
    }

    /// A struct/union body or enum list as `ptype` shows it.
    fn body(&self, id: TypeId) -> String {
        match self.get(id) {
            Kind::Struct {
                union,
                name,
                fields,
                incomplete,
                ..
            } => {
                let kw = if *union { "union" } else { "struct" };
                let head = match name {
                    Some(n) => format!("{kw} {n}"),
                    None => kw.to_string(),
                };
                if *incomplete {
                    return format!("{head} {{\n    <incomplete type>\n}}");
                }
                let mut out = format!("{head} {{\n");
                for f in fields {
                    let (p, sfx) = self.parts(f.ty, 1);
                    let decl = match &f.name {
                        Some(n) => {
                            let sep = if p.ends_with('*') || sfx.starts_with(')') {
                                ""
                            } else {
                                " "
                            };
                            // Pointers to arrays or functions put the name
                            // inside the parentheses.
                            if let Some(inner) = p.strip_suffix("(*") {
                                format!("{inner}(*{n}{sfx}")
                            } else {
                                format!("{p}{sep}{n}{sfx}")
                            }
                        }
                        None => join(&p, &sfx),
                    };
                    let bits = f.bits.map(|(_, b)| format!(" : {b}")).unwrap_or_default();
                    out.push_str(&format!("    {decl}{bits};\n"));
                }
                out.push('}');
                out
            }
            Kind::Enum { name, values, .. } => {
                let mut next = 0i64;
                let items: Vec<String> = values
                    .iter()
                    .map(|(n, v)| {
                        let text = if *v == next {
                            n.clone()
                        } else {
                            format!("{n} = {v}")
                        };
                        next = v.wrapping_add(1);
                        text
                    })
                    .collect();
                let head = match name {
                    Some(n) => format!("enum {n} "),
                    None => "enum ".to_string(),
                };
                format!("{head}{{{}}}", items.join(", "))
            }
            _ => self.name(id),
        }
    }

    /// Declarator parts: the name is `prefix` + (declarator) + `suffix`.
    fn parts(&self, id: TypeId, depth: u32) -> (String, String) {
        self.parts_with(id, depth, false)
    }

    fn parts_with(&self, id: TypeId, depth: u32, expand: bool) -> (String, String) {
        if depth > MAX_DEPTH {
            return ("?".into(), String::new());
        }
        if expand {
            match self.get(id) {
                Kind::Typedef { target, .. } => return self.parts_with(*target, depth + 1, true),
                Kind::Struct { .. } | Kind::Enum { .. } => return (self.body(id), String::new()),
                _ => {}
            }
        }
        match self.get(id) {
            Kind::Void => ("void".into(), String::new()),
            Kind::Int { name, .. } | Kind::Float { name, .. } => (name.clone(), String::new()),
            Kind::Typedef { name, .. } => (name.clone(), String::new()),
            Kind::Flags => ("i386_eflags".into(), String::new()),
            Kind::NoDebugText => ("<text variable, no debug info>".into(), String::new()),
            Kind::Struct { union, name, .. } => {
                let kw = if *union { "union" } else { "struct" };
                match name {
                    Some(n) => (format!("{kw} {n}"), String::new()),
                    None => (format!("{kw} {{...}}"), String::new()),
                }
            }
            Kind::Enum { name, .. } => match name {
                Some(n) => (format!("enum {n}"), String::new()),
                None => ("enum {...}".into(), String::new()),
            },
            Kind::Const(t) | Kind::Volatile(t) => {
                let q = if matches!(self.get(id), Kind::Const(_)) {
                    "const"
                } else {
                    "volatile"
                };
                let (p, s) = self.parts_with(*t, depth + 1, expand);
                if matches!(self.get(*t), Kind::Pointer(_)) {
                    (format!("{p} {q}"), s)
                } else {
                    (format!("{q} {p}"), s)
                }
            }
            Kind::Pointer(t) => {
                let (p, s) = self.parts_with(*t, depth + 1, expand);
                if matches!(self.get(*t), Kind::Array { .. } | Kind::Func { .. }) {
                    (format!("{p} (*"), format!("){s}"))
                } else if p.ends_with('*') {
                    (format!("{p}*"), s)
                } else {
                    (format!("{p} *"), s)
                }
            }
            Kind::Array { elem, count } => {
                let (p, s) = self.parts_with(*elem, depth + 1, expand);
                let n = count.map(|c| c.to_string()).unwrap_or_default();
                (p, format!("[{n}]{s}"))
            }
            Kind::Func {
                ret,
                params,
                varargs,
                prototyped,
            } => {
                let (p, s) = self.parts_with(*ret, depth + 1, expand);
                let mut list: Vec<String> = params.iter().map(|t| self.name(*t)).collect();
                if *varargs {
                    list.push("...".into());
                }
                if list.is_empty() && *prototyped {
                    list.push("void".into());
                }
                (p, format!("({}){s}", list.join(", ")))
            }
        }
    }

    /// The type of a DWARF DIE (memoized per DIE).
    pub fn of_die(&mut self, info: &DebugInfo, die: DieRef) -> TypeId {
        self.of_die_depth(info, die, 0)
    }

    /// The type named by a DIE's DW_AT_type (void when absent).
    pub fn type_attr(&mut self, info: &DebugInfo, die: DieRef, depth: u32) -> TypeId {
        // Concrete instances (inlined, out-of-line) keep the type on
        // their abstract origin.
        let target = info
            .attr_inherited(die, gimli::DW_AT_type)
            .and_then(|(owner, v)| info.resolve(owner.unit, v));
        match target {
            Some(t) => self.of_die_depth(info, t, depth + 1),
            None => self.void(),
        }
    }

    fn of_die_depth(&mut self, info: &DebugInfo, die: DieRef, depth: u32) -> TypeId {
        let key = (info.image_id, die.unit, die.offset.0);
        if let Some(&id) = self.by_die.get(&key) {
            return id;
        }
        if depth > MAX_DEPTH {
            return self.void();
        }
        let Some(entry) = info.entry(die) else {
            return self.void();
        };
        let Some(unit) = info.units.get(die.unit) else {
            return self.void();
        };
        let name = entry
            .attr_value(gimli::DW_AT_name)
            .and_then(|v| string_of(&info.dwarf, unit, v));
        let udata = |at: gimli::DwAt| entry.attr_value(at).and_then(|v| v.udata_value());
        let size = udata(gimli::DW_AT_byte_size);
        let id = match entry.tag() {
            gimli::DW_TAG_base_type => {
                let enc = entry.attr_value(gimli::DW_AT_encoding);
                let size = size.unwrap_or(0);
                let name = canonical_base_name(name.as_deref().unwrap_or("?"));
                match enc {
                    Some(AttributeValue::Encoding(gimli::DW_ATE_float)) => {
                        self.intern(Kind::Float { name, size })
                    }
                    Some(AttributeValue::Encoding(gimli::DW_ATE_boolean)) => {
                        self.intern(Kind::Int {
                            name,
                            size,
                            signed: false,
                            char_like: false,
                            bool_like: true,
                        })
                    }
                    Some(AttributeValue::Encoding(e)) => {
                        let signed = matches!(e, gimli::DW_ATE_signed | gimli::DW_ATE_signed_char);
                        let char_like = matches!(
                            e,
                            gimli::DW_ATE_signed_char
                                | gimli::DW_ATE_unsigned_char
                                | gimli::DW_ATE_UTF
                        ) && size == 1;
                        self.intern(Kind::Int {
                            name,
                            size,
                            signed,
                            char_like,
                            bool_like: false,
                        })
                    }
                    _ => self.intern(Kind::Int {
                        name,
                        size,
                        signed: true,
                        char_like: false,
                        bool_like: false,
                    }),
                }
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type => {
                let t = self.type_attr(info, die, depth);
                self.pointer_to(t)
            }
            gimli::DW_TAG_const_type => {
                let t = self.type_attr(info, die, depth);
                self.intern(Kind::Const(t))
            }
            gimli::DW_TAG_volatile_type => {
                let t = self.type_attr(info, die, depth);
                self.intern(Kind::Volatile(t))
            }
            gimli::DW_TAG_restrict_type | gimli::DW_TAG_atomic_type => {
                self.type_attr(info, die, depth)
            }
            gimli::DW_TAG_typedef => {
                let t = self.type_attr(info, die, depth);
                match name {
                    Some(name) => self.intern(Kind::Typedef { name, target: t }),
                    None => t,
                }
            }
            gimli::DW_TAG_array_type => {
                let elem = self.type_attr(info, die, depth);
                let mut dims = Vec::new();
                for child in children(info, die) {
                    let Some(c) = info.entry(child) else { continue };
                    if c.tag() != gimli::DW_TAG_subrange_type {
                        continue;
                    }
                    let count = match c
                        .attr_value(gimli::DW_AT_count)
                        .and_then(|v| v.udata_value())
                    {
                        Some(n) => Some(n),
                        None => match c.attr_value(gimli::DW_AT_upper_bound) {
                            Some(AttributeValue::Sdata(-1)) => Some(0),
                            Some(v) => v.udata_value().map(|u| u.wrapping_add(1)),
                            None => None,
                        },
                    };
                    dims.push(count);
                }
                if dims.is_empty() {
                    dims.push(None);
                }
                let mut t = elem;
                for count in dims.into_iter().rev() {
                    t = self.intern(Kind::Array { elem: t, count });
                }
                t
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_class_type => {
                let union = entry.tag() == gimli::DW_TAG_union_type;
                let incomplete = matches!(
                    entry.attr_value(gimli::DW_AT_declaration),
                    Some(AttributeValue::Flag(true))
                );
                // Register first: members may point back to this type.
                let id = self.push(Kind::Struct {
                    union,
                    name: name.clone(),
                    size: size.unwrap_or(0),
                    fields: Vec::new(),
                    incomplete,
                });
                self.by_die.insert(key, id);
                let mut fields = Vec::new();
                for child in children(info, die) {
                    let Some(c) = info.entry(child) else { continue };
                    if c.tag() != gimli::DW_TAG_member {
                        continue;
                    }
                    let fname = c
                        .attr_value(gimli::DW_AT_name)
                        .and_then(|v| string_of(&info.dwarf, unit, v));
                    let ty = self.type_attr(info, child, depth);
                    let offset = match c.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Exprloc(e)) => {
                            const_expr(e, unit.encoding()).unwrap_or(0)
                        }
                        Some(v) => v.udata_value().unwrap_or(0),
                        None => 0,
                    };
                    let bit_size = c
                        .attr_value(gimli::DW_AT_bit_size)
                        .and_then(|v| v.udata_value());
                    let mut field = Field {
                        name: fname,
                        ty,
                        offset,
                        bits: None,
                    };
                    if let Some(bs) = bit_size {
                        if let Some(dbo) = c
                            .attr_value(gimli::DW_AT_data_bit_offset)
                            .and_then(|v| v.udata_value())
                        {
                            field.offset = dbo / 8;
                            field.bits = Some((dbo % 8, bs));
                        } else if let Some(bo) = c
                            .attr_value(gimli::DW_AT_bit_offset)
                            .and_then(|v| v.udata_value())
                        {
                            // DWARF 2/3: counted from the storage unit's
                            // most significant bit.
                            let storage = c
                                .attr_value(gimli::DW_AT_byte_size)
                                .and_then(|v| v.udata_value())
                                .or_else(|| self.size(ty))
                                .unwrap_or(4);
                            let lsb = storage
                                .saturating_mul(8)
                                .saturating_sub(bo)
                                .saturating_sub(bs);
                            let abs = offset.saturating_mul(8).saturating_add(lsb);
                            field.offset = abs / 8;
                            field.bits = Some((abs % 8, bs));
                        } else {
                            field.bits = Some((0, bs));
                        }
                    }
                    fields.push(field);
                }
                if let Some(Kind::Struct { fields: f, .. }) = self.kinds.get_mut(id.0 as usize) {
                    *f = fields;
                }
                return id;
            }
            gimli::DW_TAG_enumeration_type => {
                let under = self.type_attr(info, die, depth);
                let mut values = Vec::new();
                for child in children(info, die) {
                    let Some(c) = info.entry(child) else { continue };
                    if c.tag() != gimli::DW_TAG_enumerator {
                        continue;
                    }
                    let Some(n) = c
                        .attr_value(gimli::DW_AT_name)
                        .and_then(|v| string_of(&info.dwarf, unit, v))
                    else {
                        continue;
                    };
                    let v = match c.attr_value(gimli::DW_AT_const_value) {
                        Some(AttributeValue::Sdata(x)) => x,
                        Some(v) => v.udata_value().map(|u| u as i64).unwrap_or(0),
                        None => 0,
                    };
                    values.push((n, v));
                }
                let signed = self.is_signed(under) || values.iter().any(|(_, v)| *v < 0);
                self.intern(Kind::Enum {
                    name,
                    size: size.or_else(|| self.size(under)).unwrap_or(4),
                    signed,
                    values,
                })
            }
            gimli::DW_TAG_subroutine_type | gimli::DW_TAG_subprogram => {
                let ret = self.type_attr(info, die, depth);
                let mut params = Vec::new();
                let mut varargs = false;
                for child in children(info, die) {
                    let Some(c) = info.entry(child) else { continue };
                    match c.tag() {
                        gimli::DW_TAG_formal_parameter => {
                            params.push(self.type_attr(info, child, depth))
                        }
                        gimli::DW_TAG_unspecified_parameters => varargs = true,
                        _ => {}
                    }
                }
                let prototyped = matches!(
                    entry.attr_value(gimli::DW_AT_prototyped),
                    Some(AttributeValue::Flag(true))
                );
                self.intern(Kind::Func {
                    ret,
                    params,
                    varargs,
                    prototyped,
                })
            }
            _ => self.void(),
        };
        self.by_die.insert(key, id);
        id
    }
}

/// gdb's spelling of gcc's base type names (`long unsigned int` is
/// `unsigned long`).
fn canonical_base_name(name: &str) -> String {
    match name {
        "long int" => "long",
        "long unsigned int" => "unsigned long",
        "short int" => "short",
        "short unsigned int" => "unsigned short",
        "long long int" => "long long",
        "long long unsigned int" => "unsigned long long",
        "__int128 unsigned" => "unsigned __int128",
        other => other,
    }
    .to_string()
}

/// Join declarator parts.
fn join(prefix: &str, suffix: &str) -> String {
    if suffix.is_empty() {
        prefix.to_string()
    } else if suffix.starts_with(')') || prefix.ends_with('*') {
        format!("{prefix}{suffix}")
    } else {
        format!("{prefix} {suffix}")
    }
}

/// The direct children of a DIE.
pub(crate) fn children(info: &DebugInfo, die: DieRef) -> Vec<DieRef> {
    let mut out = Vec::new();
    let Some(unit) = info.units.get(die.unit) else {
        return out;
    };
    let Ok(mut tree) = unit.entries_tree(Some(die.offset)) else {
        return out;
    };
    let Ok(root) = tree.root() else { return out };
    let mut kids = root.children();
    while let Ok(Some(child)) = kids.next() {
        out.push(DieRef {
            unit: die.unit,
            offset: child.entry().offset(),
        });
        if out.len() > 1_000_000 {
            break;
        }
    }
    out
}

/// A constant DWARF expression (`DW_OP_plus_uconst n` in member offsets).
fn const_expr(e: gimli::Expression<super::elf::R>, encoding: gimli::Encoding) -> Option<u64> {
    let mut eval = e.evaluation(encoding);
    eval.set_initial_value(0);
    eval.set_max_iterations(1000);
    match eval.evaluate().ok()? {
        gimli::EvaluationResult::Complete => {}
        _ => return None,
    }
    match eval.result().first()?.location {
        gimli::Location::Address { address } => Some(address),
        _ => None,
    }
}
