//! C expressions as gdb's `print` understands them: a lexer, a Pratt parser
//! and an evaluator over [`Value`]s read from a stopped program.

use std::cell::RefCell;

use super::dwarf::Named;
use super::types::{Kind, TypeId, Types};
use super::value::{complete, int_bytes, member, read_mem, Lval, Value, MAX_VALUE_SIZE};
use super::{Frame, Program, Target};

/// An expression that could not be evaluated. `column` is the 0-based
/// character position in the expression the error is about (the start of a
/// bad token or unknown identifier; 0 when the error is about the whole
/// expression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExprError {}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        column,
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int {
        value: u64,
        unsigned: bool,
        long: bool,
    },
    Float {
        value: f64,
        single: bool,
    },
    Char(u8),
    Str(Vec<u8>),
    Ident(String),
    Dollar(String),
    Punct(&'static str),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    col: usize,
}

const PUNCTS: &[&str] = &[
    "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%", "&", "|", "^",
    "!", "~", "<", ">", "(", ")", "[", "]", ".", ",", "?", ":", "@", "=", "{", "}",
];

fn syntax_error<T>(src: &[char], col: usize) -> Result<T, ExprError> {
    let rest: String = src.get(col..).unwrap_or(&[]).iter().collect();
    err(col, format!("A syntax error in expression, near `{rest}'."))
}

fn escape(chars: &[char], i: &mut usize) -> Option<u8> {
    // chars[*i] is the character after the backslash.
    let c = *chars.get(*i)?;
    *i += 1;
    Some(match c {
        'n' => b'\n',
        't' => b'\t',
        'r' => b'\r',
        'a' => 7,
        'b' => 8,
        'f' => 12,
        'v' => 11,
        'e' => 27,
        '\\' => b'\\',
        '\'' => b'\'',
        '"' => b'"',
        '?' => b'?',
        'x' => {
            let mut v: u32 = 0;
            let mut n = 0;
            while let Some(d) = chars.get(*i).and_then(|c| c.to_digit(16)) {
                v = (v * 16 + d) & 0xff;
                *i += 1;
                n += 1;
            }
            if n == 0 {
                return None;
            }
            v as u8
        }
        '0'..='7' => {
            let mut v = c.to_digit(8)?;
            let mut n = 1;
            while n < 3 {
                match chars.get(*i).and_then(|c| c.to_digit(8)) {
                    Some(d) => {
                        v = v * 8 + d;
                        *i += 1;
                        n += 1;
                    }
                    None => break,
                }
            }
            (v & 0xff) as u8
        }
        other if other.is_ascii() => other as u8,
        _ => return None,
    })
}

fn lex(src: &[char]) -> Result<Vec<Token>, ExprError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let col = i;
        if c.is_ascii_digit() || (c == '.' && src.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            let hex = c == '0' && matches!(src.get(i + 1), Some('x' | 'X'));
            if hex {
                i += 2;
                while i < src.len() && src[i].is_ascii_hexdigit() {
                    i += 1;
                }
            } else {
                while i < src.len() && (src[i].is_ascii_digit() || src[i] == '.') {
                    i += 1;
                }
                if i < src.len() && matches!(src[i], 'e' | 'E') {
                    let mut j = i + 1;
                    if matches!(src.get(j), Some('+' | '-')) {
                        j += 1;
                    }
                    if src.get(j).is_some_and(|d| d.is_ascii_digit()) {
                        i = j;
                        while i < src.len() && src[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
            }
            let body: String = src[start..i].iter().collect();
            let mut suffix = String::new();
            while i < src.len() && src[i].is_ascii_alphanumeric() {
                suffix.push(src[i]);
                i += 1;
            }
            let is_float = !hex && (body.contains('.') || body.contains(['e', 'E']));
            if is_float {
                let single = suffix.eq_ignore_ascii_case("f");
                if !(suffix.is_empty() || single || suffix.eq_ignore_ascii_case("l")) {
                    return err(
                        col,
                        "Invalid number \"".to_string() + &body + &suffix + "\".",
                    );
                }
                let value: f64 = body.parse().map_err(|_| ExprError {
                    column: col,
                    message: format!("Invalid number \"{body}\"."),
                })?;
                out.push(Token {
                    tok: Tok::Float { value, single },
                    col,
                });
                continue;
            }
            let lower = suffix.to_ascii_lowercase();
            let unsigned = lower.contains('u');
            let long = lower.contains('l');
            if !lower.chars().all(|c| c == 'u' || c == 'l') {
                return err(col, format!("Invalid number \"{body}{suffix}\"."));
            }
            let (digits, radix) = if hex {
                (&body[2..], 16)
            } else if body.len() > 1 && body.starts_with('0') {
                (&body[1..], 8)
            } else {
                (&body[..], 10)
            };
            let value = u64::from_str_radix(digits, radix).map_err(|_| ExprError {
                column: col,
                message: if digits.is_empty() {
                    format!("Invalid number \"{body}\".")
                } else {
                    "Numeric constant too large.".to_string()
                },
            })?;
            out.push(Token {
                tok: Tok::Int {
                    value,
                    unsigned,
                    long,
                },
                col,
            });
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < src.len() && (src[i].is_alphanumeric() || src[i] == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].iter().collect()),
                col,
            });
            continue;
        }
        if c == '$' {
            i += 1;
            let start = i;
            while i < src.len() && (src[i].is_alphanumeric() || src[i] == '_' || src[i] == '$') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Dollar(src[start..i].iter().collect()),
                col,
            });
            continue;
        }
        if c == '\'' {
            i += 1;
            let v = match src.get(i) {
                Some('\\') => {
                    i += 1;
                    match escape(src, &mut i) {
                        Some(v) => v,
                        None => return syntax_error(src, col),
                    }
                }
                Some(&ch) if ch != '\'' && ch.is_ascii() => {
                    i += 1;
                    ch as u8
                }
                _ => return err(col, "Unmatched single quote."),
            };
            if src.get(i) != Some(&'\'') {
                return err(col, "Unmatched single quote.");
            }
            i += 1;
            out.push(Token {
                tok: Tok::Char(v),
                col,
            });
            continue;
        }
        if c == '"' {
            i += 1;
            let mut s = Vec::new();
            loop {
                match src.get(i) {
                    None => return err(col, "Unterminated string in expression."),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        i += 1;
                        match escape(src, &mut i) {
                            Some(v) => s.push(v),
                            None => return syntax_error(src, col),
                        }
                    }
                    Some(&ch) => {
                        let mut b = [0u8; 4];
                        s.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        i += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                col,
            });
            continue;
        }
        let rest: String = src[i..src.len().min(i + 2)].iter().collect();
        match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                i += p.len();
                out.push(Token {
                    tok: Tok::Punct(p),
                    col,
                });
            }
            None => return ExprError::invalid_char(col, c),
        }
    }
    out.push(Token {
        tok: Tok::End,
        col: src.len(),
    });
    Ok(out)
}

impl ExprError {
    fn invalid_char<T>(col: usize, c: char) -> Result<T, ExprError> {
        err(col, format!("Invalid character '{c}' in expression."))
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// A C type as written in a cast or `sizeof`.
#[derive(Debug, Clone, PartialEq)]
struct TypeName {
    /// Keywords (`unsigned`, `long`, ...), or `struct X`, or a typedef name.
    base: Vec<String>,
    /// Declarator, innermost first: pointers and arrays.
    decl: Vec<Decl>,
    col: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Decl {
    Pointer,
    Array(u64),
    /// `(*)(params)`: pointer to function.
    FuncPtr(Vec<TypeName>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Int {
        value: u64,
        unsigned: bool,
        long: bool,
    },
    Float {
        value: f64,
        single: bool,
    },
    Char(u8),
    Str(Vec<u8>),
    Ident(String),
    Dollar(String),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Member(Box<Expr>, String, bool),
    Cast(TypeName, Box<Expr>),
    SizeofType(TypeName),
    SizeofExpr(Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
struct Expr {
    node: Node,
    col: usize,
}

const TYPE_KEYWORDS: &[&str] = &[
    "int", "char", "short", "long", "unsigned", "signed", "float", "double", "void", "_Bool",
    "const", "volatile", "struct", "union", "enum",
];

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    src: &'a [char],
    is_typedef: &'a dyn Fn(&str) -> bool,
}

/// Binding power of binary operators (higher binds tighter).
fn binary_power(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 3,
        "&&" => 4,
        "|" => 5,
        "^" => 6,
        "&" => 7,
        "==" | "!=" => 8,
        "<" | "<=" | ">" | ">=" => 9,
        "<<" | ">>" => 10,
        "@" => 11,
        "+" | "-" => 12,
        "*" | "/" | "%" => 13,
        _ => return None,
    })
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        let last = self.toks.len() - 1;
        &self.toks[self.pos.min(last)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        let last = self.toks.len() - 1;
        &self.toks[(self.pos + n).min(last)].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(&self.peek().tok, Tok::Punct(q) if *q == p)
    }

    fn expect(&mut self, p: &str) -> Result<(), ExprError> {
        if self.is_punct(p) {
            self.pos += 1;
            Ok(())
        } else {
            syntax_error(self.src, self.peek().col)
        }
    }

    fn fail<T>(&self) -> Result<T, ExprError> {
        syntax_error(self.src, self.peek().col)
    }

    fn starts_type(&self, n: usize) -> bool {
        match self.peek_at(n) {
            Tok::Ident(name) => TYPE_KEYWORDS.contains(&name.as_str()) || (self.is_typedef)(name),
            _ => false,
        }
    }

    fn parse(&mut self) -> Result<Expr, ExprError> {
        let e = self.expr(0)?;
        if !matches!(self.peek().tok, Tok::End) {
            return self.fail();
        }
        Ok(e)
    }

    fn expr(&mut self, min: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let tok = self.peek().clone();
            let Tok::Punct(op) = tok.tok else { break };
            if op == "?" && min <= 2 {
                self.pos += 1;
                let then = self.expr(0)?;
                self.expect(":")?;
                let otherwise = self.expr(2)?;
                lhs = Expr {
                    col: lhs.col,
                    node: Node::Ternary(Box::new(lhs), Box::new(then), Box::new(otherwise)),
                };
                continue;
            }
            if op == "=" {
                return err(
                    tok.col,
                    "Assignment is not supported: the program is read-only here.",
                );
            }
            let Some(power) = binary_power(op) else { break };
            if power < min.max(1) {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(power + 1)?;
            lhs = Expr {
                col: tok.col,
                node: Node::Binary(op, Box::new(lhs), Box::new(rhs)),
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let tok = self.peek().clone();
        match &tok.tok {
            Tok::Punct(op @ ("-" | "+" | "!" | "~" | "*" | "&")) => {
                self.pos += 1;
                let inner = self.unary()?;
                Ok(Expr {
                    col: tok.col,
                    node: Node::Unary(op, Box::new(inner)),
                })
            }
            Tok::Ident(k) if k == "sizeof" => {
                self.pos += 1;
                if self.is_punct("(") && self.starts_type(1) {
                    self.pos += 1;
                    let ty = self.type_name()?;
                    self.expect(")")?;
                    return Ok(Expr {
                        col: tok.col,
                        node: Node::SizeofType(ty),
                    });
                }
                let inner = self.unary()?;
                Ok(Expr {
                    col: tok.col,
                    node: Node::SizeofExpr(Box::new(inner)),
                })
            }
            Tok::Punct("(") if self.starts_type(1) => {
                self.pos += 1;
                let ty = self.type_name()?;
                self.expect(")")?;
                let inner = self.unary()?;
                Ok(Expr {
                    col: tok.col,
                    node: Node::Cast(ty, Box::new(inner)),
                })
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.primary()?;
        loop {
            let tok = self.peek().clone();
            match tok.tok {
                Tok::Punct("[") => {
                    self.pos += 1;
                    let idx = self.expr(0)?;
                    self.expect("]")?;
                    e = Expr {
                        col: tok.col,
                        node: Node::Index(Box::new(e), Box::new(idx)),
                    };
                }
                Tok::Punct(op @ ("." | "->")) => {
                    self.pos += 1;
                    let name = self.next();
                    let Tok::Ident(field) = name.tok else {
                        return syntax_error(self.src, name.col);
                    };
                    e = Expr {
                        col: name.col,
                        node: Node::Member(Box::new(e), field, op == "->"),
                    };
                }
                Tok::Punct("(") => {
                    return err(
                        tok.col,
                        "Calling functions of the program is not supported.",
                    );
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let tok = self.next();
        let node = match tok.tok {
            Tok::Int {
                value,
                unsigned,
                long,
            } => Node::Int {
                value,
                unsigned,
                long,
            },
            Tok::Float { value, single } => Node::Float { value, single },
            Tok::Char(c) => Node::Char(c),
            Tok::Str(s) => Node::Str(s),
            Tok::Ident(name) => {
                if TYPE_KEYWORDS.contains(&name.as_str()) || name == "sizeof" {
                    return syntax_error(self.src, tok.col);
                }
                Node::Ident(name)
            }
            Tok::Dollar(name) => Node::Dollar(name),
            Tok::Punct("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                return Ok(e);
            }
            _ => return syntax_error(self.src, tok.col),
        };
        Ok(Expr { node, col: tok.col })
    }

    /// `unsigned long`, `struct node *`, `int (*)(int)`, `char [4]`, typedefs.
    fn type_name(&mut self) -> Result<TypeName, ExprError> {
        let col = self.peek().col;
        let mut base = Vec::new();
        while let Tok::Ident(w) = self.peek().tok.clone() {
            match w.as_str() {
                "const" | "volatile" => {
                    self.pos += 1;
                }
                "struct" | "union" | "enum" => {
                    self.pos += 1;
                    let Tok::Ident(tag) = self.next().tok else {
                        return self.fail();
                    };
                    base = vec![format!("{w} {tag}")];
                }
                k if TYPE_KEYWORDS.contains(&k) => {
                    self.pos += 1;
                    base.push(w);
                }
                name if base.is_empty() && (self.is_typedef)(name) => {
                    self.pos += 1;
                    base.push(w);
                }
                _ => break,
            }
        }
        if base.is_empty() {
            return self.fail();
        }
        let mut decl = Vec::new();
        loop {
            if self.is_punct("*") {
                self.pos += 1;
                decl.push(Decl::Pointer);
            } else if matches!(self.peek().tok, Tok::Ident(ref w) if w == "const" || w == "volatile")
            {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.is_punct("(") && matches!(self.peek_at(1), Tok::Punct("*")) {
            // (*)(params)
            self.pos += 2;
            self.expect(")")?;
            self.expect("(")?;
            let mut params = Vec::new();
            while !self.is_punct(")") {
                params.push(self.type_name()?);
                if self.is_punct(",") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            self.expect(")")?;
            decl.push(Decl::FuncPtr(params));
        }
        while self.is_punct("[") {
            self.pos += 1;
            let t = self.next();
            let Tok::Int { value, .. } = t.tok else {
                return syntax_error(self.src, t.col);
            };
            self.expect("]")?;
            decl.push(Decl::Array(value));
        }
        Ok(TypeName { base, decl, col })
    }
}

// ---------------------------------------------------------------------------
// Evaluator
// ---------------------------------------------------------------------------

/// A member found in a struct: (type, byte offset, bit field).
type FieldRef = (TypeId, u64, Option<(u64, u64)>);

impl Program {
    /// Whether `name` is a typedef or base type name in some module's DWARF.
    pub(crate) fn is_type_name(&self, name: &str) -> bool {
        self.modules.iter().any(|m| {
            m.image.debug().is_some_and(|d| {
                d.types.get(name).is_some_and(|dies| {
                    dies.iter().any(|die| {
                        d.entry(*die).is_some_and(|e| {
                            matches!(e.tag(), gimli::DW_TAG_typedef | gimli::DW_TAG_base_type)
                        })
                    })
                })
            })
        })
    }
}

/// A scalar view of a value.
#[derive(Debug, Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

struct Eval<'a> {
    prog: &'a Program,
    t: &'a dyn Target,
    frame: Option<Frame>,
    types: &'a mut Types,
    history: &'a [Value],
    /// Inside `sizeof`: memory reads return zeros.
    no_read: bool,
    /// Where to note the memory of every scalar the evaluation consumed
    /// (what its result depends on).
    used: Option<&'a RefCell<Vec<(u64, u64)>>>,
}

/// Evaluate a C expression in frame `frame` (0 = innermost) of the stopped
/// program, like gdb's `print`.
pub fn evaluate(
    expr: &str,
    prog: &Program,
    t: &dyn Target,
    frame: usize,
) -> Result<Value, ExprError> {
    evaluate_with_history(expr, prog, t, frame, &[])
}

/// gdb's `whatis ARG` and `ptype ARG` (the text after `type = `): ARG is
/// an expression or a type name (`struct node`, `point`, `unsigned long`).
/// `whatis` names the type (one typedef level removed from a type name);
/// `ptype` spells out structs, unions and enums.
pub fn describe_type(
    arg: &str,
    expand: bool,
    prog: &Program,
    t: &dyn Target,
    frame: usize,
) -> Result<String, ExprError> {
    let src: Vec<char> = arg.chars().collect();
    let toks = lex(&src)?;
    let is_typedef = |name: &str| prog.is_type_name(name);
    let mut parser = Parser {
        toks,
        pos: 0,
        src: &src,
        is_typedef: &is_typedef,
    };
    if parser.starts_type(0) {
        let tn = parser.type_name()?;
        if !matches!(parser.peek().tok, Tok::End) {
            return parser.fail();
        }
        let mut guard = match prog.types.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut ev = Eval {
            prog,
            t,
            frame: None,
            types: &mut guard,
            history: &[],
            no_read: true,
            used: None,
        };
        let ty = ev.resolve_type(&tn)?;
        let ty = ev.complete(ty);
        return Ok(if expand {
            ev.types.expanded(ty)
        } else if let Kind::Typedef { target, .. } = ev.types.get(ty) {
            ev.types.name(*target)
        } else {
            ev.types.name(ty)
        });
    }
    let v = evaluate(arg, prog, t, frame)?;
    let guard = match prog.types.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    Ok(if expand {
        guard.expanded(v.ty)
    } else {
        guard.name(v.ty)
    })
}

/// [`evaluate`], with gdb's value history: `$` is the last value, `$$` the
/// one before, `$N` the N-th (1-based).
pub fn evaluate_with_history(
    expr: &str,
    prog: &Program,
    t: &dyn Target,
    frame: usize,
    history: &[Value],
) -> Result<Value, ExprError> {
    evaluate_inner(expr, prog, t, frame, history, None)
}

/// [`evaluate`], also telling which memory `(addr, len)` the result
/// depends on: every scalar read and used along the way (a pointer
/// followed, an operand compared), and the result itself when it lives in
/// memory. A struct loaded only to take one member contributes the
/// member. Registers and the frame (for locals) are not included.
pub fn evaluate_tracking(
    expr: &str,
    prog: &Program,
    t: &dyn Target,
    frame: usize,
) -> (Result<Value, ExprError>, Vec<(u64, u64)>) {
    let used = RefCell::new(Vec::new());
    let r = evaluate_inner(expr, prog, t, frame, &[], Some(&used));
    let mut used = used.into_inner();
    if let Ok(v) = &r {
        if let (Lval::Memory(a), false) = (&v.lval, v.data.is_empty()) {
            used.push((*a, v.data.len() as u64));
        }
    }
    (r, used)
}

fn evaluate_inner(
    expr: &str,
    prog: &Program,
    t: &dyn Target,
    frame: usize,
    history: &[Value],
    used: Option<&RefCell<Vec<(u64, u64)>>>,
) -> Result<Value, ExprError> {
    let src: Vec<char> = expr.chars().collect();
    let level = frame;
    let frame = prog.frame(t, level);
    if frame.is_none() && level > 0 {
        return err(0, format!("No frame at level {level}."));
    }
    let frame_ref = frame.clone();
    let is_typedef = |name: &str| -> bool {
        // A local variable of that name hides the typedef.
        if let Some(f) = &frame_ref {
            if let Some(scope) = prog.scope(t, f) {
                if scope.vars.iter().any(|v| v.name == name) {
                    return false;
                }
            }
        }
        prog.is_type_name(name)
    };
    let toks = lex(&src)?;
    if matches!(toks.first().map(|t| &t.tok), Some(Tok::End)) {
        return err(0, "Argument required (expression to compute).");
    }
    let mut parser = Parser {
        toks,
        pos: 0,
        src: &src,
        is_typedef: &is_typedef,
    };
    let ast = parser.parse()?;
    let mut guard = match prog.types.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut ev = Eval {
        prog,
        t,
        frame,
        types: &mut guard,
        history,
        no_read: false,
        used,
    };
    ev.eval(&ast)
}

/// Extract an x87 80-bit extended float as f64.
pub(crate) fn f80_to_f64(b: &[u8]) -> f64 {
    if b.len() < 10 {
        return 0.0;
    }
    let mant = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let se = u16::from_le_bytes([b[8], b[9]]);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from(se & 0x7fff);
    if exp == 0 && mant == 0 {
        return sign * 0.0;
    }
    if exp == 0x7fff {
        return if mant << 1 == 0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    let m = mant as f64 / (1u64 << 63) as f64;
    sign * m * 2f64.powi(exp - 16383)
}

impl Eval<'_> {
    fn read(&self, addr: u64, size: u64) -> Result<Vec<u8>, String> {
        if self.no_read {
            if size > MAX_VALUE_SIZE {
                return Err(format!(
                    "value requires {size} bytes, which is more than max-value-size"
                ));
            }
            return Ok(vec![0; size as usize]);
        }
        read_mem(self.t, addr, size)
    }

    /// The value of type `ty` at `addr`.
    fn at(&mut self, ty: TypeId, addr: u64, col: usize) -> Result<Value, ExprError> {
        let ty = self.complete(ty);
        if matches!(self.types.kind(ty), Kind::Func { .. }) {
            return Ok(Value::new(ty, Vec::new(), Lval::Memory(addr)));
        }
        let Some(size) = self.types.size(ty) else {
            return err(col, "Attempt to take contents of a non-pointer value.");
        };
        let data = self.read(addr, size).map_err(|m| ExprError {
            column: col,
            message: m,
        })?;
        Ok(Value::new(ty, data, Lval::Memory(addr)))
    }

    fn complete(&mut self, ty: TypeId) -> TypeId {
        if !matches!(
            self.types.kind(ty),
            Kind::Struct {
                incomplete: true,
                ..
            }
        ) {
            return ty;
        }
        for m in &self.prog.modules {
            if let Some(info) = m.image.debug() {
                let c = complete(self.types, info, ty);
                if c != ty {
                    return c;
                }
            }
        }
        ty
    }

    fn int_value(&mut self, ty: TypeId, v: i128) -> Value {
        let size = self.types.size(ty).unwrap_or(8);
        Value::new(ty, int_bytes(v, size), Lval::None)
    }

    fn float_value(&mut self, ty: TypeId, v: f64) -> Value {
        let data = match self.types.size(ty) {
            Some(4) => (v as f32).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        };
        Value::new(ty, data, Lval::None)
    }

    /// A value's number: integers (sign-extended), floats, pointers,
    /// arrays and functions (their address).
    fn num(&mut self, v: &Value, col: usize) -> Result<Num, ExprError> {
        if v.optimized_out {
            return err(col, "value has been optimized out");
        }
        if let (Some(used), Lval::Memory(a)) = (self.used, &v.lval) {
            if !matches!(
                self.types.kind(v.ty),
                Kind::Array { .. } | Kind::Func { .. } | Kind::NoDebugText
            ) && !v.data.is_empty()
            {
                used.borrow_mut().push((*a, v.data.len() as u64));
            }
        }
        let le = |d: &[u8]| {
            let mut b = [0u8; 16];
            let n = d.len().min(16);
            b[..n].copy_from_slice(&d[..n]);
            u128::from_le_bytes(b)
        };
        match self.types.kind(v.ty).clone() {
            Kind::Int { size, signed, .. } | Kind::Enum { size, signed, .. } => {
                let raw = le(&v.data);
                let bits = (size.min(16) * 8) as u32;
                let val = if bits == 0 {
                    0
                } else if signed && bits < 128 {
                    let shift = 128 - bits;
                    ((raw << shift) as i128) >> shift
                } else if bits < 128 {
                    (raw & ((1u128 << bits) - 1)) as i128
                } else {
                    raw as i128
                };
                Ok(Num::I(val))
            }
            Kind::Float { size, .. } => Ok(Num::F(match size {
                4 => f32::from_le_bytes(
                    v.data
                        .get(..4)
                        .and_then(|s| s.try_into().ok())
                        .unwrap_or([0; 4]),
                ) as f64,
                8 => f64::from_le_bytes(
                    v.data
                        .get(..8)
                        .and_then(|s| s.try_into().ok())
                        .unwrap_or([0; 8]),
                ),
                _ => f80_to_f64(&v.data),
            })),
            Kind::Pointer(_) | Kind::Flags => Ok(Num::I(le(&v.data) as u64 as i128)),
            Kind::Array { .. } | Kind::Func { .. } | Kind::NoDebugText => match v.lval {
                Lval::Memory(a) => Ok(Num::I(a as i128)),
                _ => err(
                    col,
                    "Attempt to take address of value not located in memory.",
                ),
            },
            Kind::Void => err(col, "Attempt to use a type name as an expression"),
            _ => err(
                col,
                "Argument to arithmetic operation not a number or boolean.",
            ),
        }
    }

    /// A value as an integer (floats truncate).
    fn int_of(&mut self, v: &Value, col: usize) -> Result<i128, ExprError> {
        Ok(match self.num(v, col)? {
            Num::I(i) => i,
            Num::F(f) => f as i128,
        })
    }

    fn truthy(&mut self, v: &Value, col: usize) -> Result<bool, ExprError> {
        Ok(match self.num(v, col)? {
            Num::I(i) => i != 0,
            Num::F(f) => f != 0.0,
        })
    }

    fn is_float(&self, ty: TypeId) -> bool {
        matches!(self.types.kind(ty), Kind::Float { .. })
    }

    /// C's integer promotion.
    fn promote(&mut self, ty: TypeId) -> TypeId {
        match self.types.kind(ty).clone() {
            Kind::Int { size, signed, .. } | Kind::Enum { size, signed, .. } => {
                if size < 4 {
                    self.types.int()
                } else if size == 4 {
                    if signed {
                        self.types.int()
                    } else {
                        self.types.int_type("unsigned int", 4, false)
                    }
                } else if signed {
                    self.types.long()
                } else {
                    self.types.ulong()
                }
            }
            _ => self.types.int(),
        }
    }

    /// The usual arithmetic conversions of two integer types.
    fn common_int(&mut self, a: TypeId, b: TypeId) -> TypeId {
        let a = self.promote(a);
        let b = self.promote(b);
        let (sa, ua) = (self.types.size(a).unwrap_or(4), !self.types.is_signed(a));
        let (sb, ub) = (self.types.size(b).unwrap_or(4), !self.types.is_signed(b));
        if sa == sb {
            if ua {
                a
            } else if ub {
                b
            } else {
                a
            }
        } else if sa > sb {
            a
        } else {
            b
        }
    }

    fn pointer_target_size(&mut self, ptr_ty: TypeId) -> u64 {
        let target = match self.types.kind(ptr_ty) {
            Kind::Pointer(t) => *t,
            Kind::Array { elem, .. } => *elem,
            _ => return 1,
        };
        let target = self.complete(target);
        self.types.size(target).filter(|&s| s > 0).unwrap_or(1)
    }

    /// Arrays and functions used as values become pointers.
    fn decay(&mut self, v: Value, col: usize) -> Result<Value, ExprError> {
        let ptr_ty = match self.types.kind(v.ty).clone() {
            Kind::Array { elem, .. } => self.types.pointer_to(elem),
            Kind::Func { .. } => {
                let f = self.types.strip(v.ty);
                self.types.pointer_to(f)
            }
            _ => return Ok(v),
        };
        match v.lval {
            Lval::Memory(a) => Ok(Value::new(ptr_ty, a.to_le_bytes().to_vec(), Lval::None)),
            _ => err(
                col,
                "Attempt to take address of value not located in memory.",
            ),
        }
    }

    fn eval(&mut self, e: &Expr) -> Result<Value, ExprError> {
        let col = e.col;
        match &e.node {
            Node::Int {
                value,
                unsigned,
                long,
            } => {
                let v = *value;
                let ty = if !long && v >> 32 == 0 {
                    if *unsigned || v >> 31 != 0 {
                        self.types.int_type("unsigned int", 4, false)
                    } else {
                        self.types.int()
                    }
                } else if *unsigned || v >> 63 != 0 {
                    self.types.ulong()
                } else {
                    self.types.long()
                };
                Ok(self.int_value(ty, v as i128))
            }
            Node::Float { value, single } => {
                let ty = if *single {
                    self.types.intern(Kind::Float {
                        name: "float".into(),
                        size: 4,
                    })
                } else {
                    self.types.double()
                };
                Ok(self.float_value(ty, *value))
            }
            Node::Char(c) => {
                let ty = self.types.char();
                Ok(Value::new(ty, vec![*c], Lval::None))
            }
            Node::Str(s) => {
                let ch = self.types.char();
                let ty = self.types.array_of(ch, s.len() as u64 + 1);
                let mut data = s.clone();
                data.push(0);
                Ok(Value::new(ty, data, Lval::None))
            }
            Node::Ident(name) => self.ident(name, col),
            Node::Dollar(name) => self.dollar(name, col),
            Node::Unary(op, inner) => self.unary(op, inner, col),
            Node::Binary(op, a, b) => self.binary(op, a, b, col),
            Node::Index(a, i) => {
                let base = self.eval(a)?;
                let idx = self.eval(i)?;
                let Num::I(n) = self.num(&idx, i.col)? else {
                    return err(
                        i.col,
                        "Argument to arithmetic operation not a number or boolean.",
                    );
                };
                match self.types.kind(base.ty).clone() {
                    Kind::Array { elem, count } => {
                        if let Lval::Memory(addr) = base.lval {
                            let size = self.pointer_target_size(base.ty);
                            return self.at(
                                elem,
                                addr.wrapping_add((n as i64 as u64).wrapping_mul(size)),
                                col,
                            );
                        }
                        let size = self.types.size(elem).unwrap_or(0) as usize;
                        let in_range = n >= 0 && count.is_some_and(|c| (n as u64) < c);
                        let start = (n.max(0) as usize).saturating_mul(size);
                        match base.data.get(start..start.saturating_add(size)) {
                            Some(d) if in_range => Ok(Value::new(elem, d.to_vec(), Lval::None)),
                            _ => err(col, "no such vector element"),
                        }
                    }
                    Kind::Pointer(target) => {
                        let p = self.int_of(&base, col)?;
                        let size = self.pointer_target_size(base.ty);
                        self.at(
                            target,
                            (p as u64).wrapping_add((n as i64 as u64).wrapping_mul(size)),
                            col,
                        )
                    }
                    _ => err(
                        col,
                        format!(
                            "cannot subscript something of type `{}'",
                            self.types.name(base.ty)
                        ),
                    ),
                }
            }
            Node::Member(inner, field, _arrow) => {
                let mut v = self.eval(inner)?;
                if let Kind::Pointer(target) = self.types.kind(v.ty).clone() {
                    let p = self.int_of(&v, col)?;
                    v = self.at(target, p as u64, col)?;
                }
                let ty = self.complete(v.ty);
                if !matches!(self.types.kind(ty), Kind::Struct { .. }) {
                    return err(
                        col,
                        "Attempt to extract a component of a value that is not a structure.",
                    );
                }
                let Some(found) = self.field(ty, field, 0) else {
                    return err(col, format!("There is no member named {field}."));
                };
                Ok(self.member_value(&v, found))
            }
            Node::Cast(tn, inner) => {
                let ty = self.resolve_type(tn)?;
                let v = self.eval(inner)?;
                self.cast(v, ty, col)
            }
            Node::SizeofType(tn) => {
                let ty = self.resolve_type(tn)?;
                let ty = self.complete(ty);
                let Some(size) = self.types.size(ty) else {
                    return err(col, "Attempt to take size of incomplete or void type.");
                };
                let ul = self.types.ulong();
                Ok(self.int_value(ul, size as i128))
            }
            Node::SizeofExpr(inner) => {
                let old = self.no_read;
                self.no_read = true;
                let v = self.eval(inner);
                self.no_read = old;
                let v = v?;
                let Some(size) = self.types.size(v.ty) else {
                    return err(col, "Attempt to take size of incomplete or void type.");
                };
                let ul = self.types.ulong();
                Ok(self.int_value(ul, size as i128))
            }
            Node::Ternary(c, a, b) => {
                let cond = self.eval(c)?;
                if self.truthy(&cond, c.col)? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
        }
    }

    /// A member of a struct type, searching anonymous members too:
    /// (type, byte offset, bit field).
    fn field(&self, ty: TypeId, name: &str, depth: u32) -> Option<FieldRef> {
        if depth > 16 {
            return None;
        }
        let Kind::Struct { fields, .. } = self.types.kind(ty) else {
            return None;
        };
        for f in fields {
            match &f.name {
                Some(n) if n == name => return Some((f.ty, f.offset, f.bits)),
                None => {
                    if let Some((t, off, bits)) =
                        self.field(self.types.strip(f.ty), name, depth + 1)
                    {
                        return Some((t, f.offset + off, bits));
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn member_value(
        &mut self,
        v: &Value,
        (ty, offset, bits): (TypeId, u64, Option<(u64, u64)>),
    ) -> Value {
        member(self.types, v, ty, offset, bits)
    }

    fn ident(&mut self, name: &str, col: usize) -> Result<Value, ExprError> {
        let e = |m: String| ExprError {
            column: col,
            message: m,
        };
        let mut prefer = None;
        if let Some(frame) = self.frame.clone() {
            if let Some(scope) = self.prog.scope(self.t, &frame) {
                if let Some(var) = scope.vars.iter().find(|v| v.name == name) {
                    let v = scope.ctx.variable(self.types, var.die).map_err(e)?;
                    return Ok(v);
                }
                prefer = scope.ctx.func.map(|f| (scope.ctx.module, f.unit));
            }
        }
        if let Some((m, info, named)) = self.prog.global_named(name, prefer) {
            match named {
                Named::Variable(die) => {
                    let regs = self.t.regs();
                    let ctx = super::value::FrameCtx {
                        t: self.t,
                        regs,
                        cfa: 0,
                        pc: 0,
                        module: m,
                        info,
                        func: None,
                    };
                    let v = if self.no_read {
                        let ty = self.types.type_attr(info, die, 0);
                        let ty = complete(self.types, info, ty);
                        let size = self.types.size(ty).unwrap_or(0);
                        Value::new(ty, vec![0; size.min(MAX_VALUE_SIZE) as usize], Lval::None)
                    } else {
                        ctx.variable(self.types, die).map_err(e)?
                    };
                    return Ok(v);
                }
                Named::Enumerator(die, value) => {
                    let ty = self.types.of_die(info, die);
                    return Ok(self.int_value(ty, value as i128));
                }
            }
        }
        // A function with debug info.
        for m in &self.prog.modules {
            let Some(info) = m.image.debug() else {
                continue;
            };
            if let Some(f) = info
                .funcs
                .iter()
                .find(|f| f.name == name && f.low <= f.entry && f.entry < f.high)
            {
                let ty = self.types.of_die(info, f.die);
                return Ok(Value::new(
                    ty,
                    Vec::new(),
                    Lval::Memory(f.entry.wrapping_add(m.bias)),
                ));
            }
        }
        // An ELF symbol without debug info.
        for m in &self.prog.modules {
            let Some(sym) = m.image.symbols.named(name).next() else {
                continue;
            };
            if sym.kind == super::symbols::SymKind::Func {
                let ty = self.types.intern(Kind::NoDebugText);
                return Ok(Value::new(
                    ty,
                    Vec::new(),
                    Lval::Memory(sym.addr.wrapping_add(m.bias)),
                ));
            }
            return err(
                col,
                format!("'{name}' has unknown type; cast it to its declared type"),
            );
        }
        err(col, format!("No symbol \"{name}\" in current context."))
    }

    fn dollar(&mut self, name: &str, col: usize) -> Result<Value, ExprError> {
        // Value history.
        if name.is_empty() || name == "$" || name.chars().all(|c| c.is_ascii_digit()) {
            let idx = if name.is_empty() {
                self.history.len().checked_sub(1)
            } else if name == "$" {
                self.history.len().checked_sub(2)
            } else {
                name.parse::<usize>().ok().and_then(|n| n.checked_sub(1))
            };
            return match idx.and_then(|i| self.history.get(i)) {
                Some(v) => Ok(v.clone()),
                None if self.history.is_empty() && (name.is_empty() || name == "$") => {
                    let void = self.types.void();
                    Ok(Value::new(void, Vec::new(), Lval::None))
                }
                None => err(col, format!("History has not yet reached ${name}.")),
            };
        }
        let regs = match &self.frame {
            Some(f) => f.regs,
            None => self.t.regs(),
        };
        let Some((value, width, kind)) = register(&regs, name) else {
            // gdb: an unset convenience variable is void.
            let void = self.types.void();
            return Ok(Value::new(void, Vec::new(), Lval::None));
        };
        let ty = match kind {
            RegKind::Code => self.types.code_ptr(),
            RegKind::Data => {
                let void = self.types.void();
                self.types.pointer_to(void)
            }
            RegKind::Flags => self.types.intern(Kind::Flags),
            RegKind::Int => match width {
                1 => self.types.int_type("int8_t", 1, true),
                2 => self.types.int_type("short", 2, true),
                4 => self.types.int(),
                _ => self.types.long(),
            },
        };
        let mut data = value.to_le_bytes().to_vec();
        data.truncate(width);
        Ok(Value::new(ty, data, Lval::Register(name.to_string())))
    }

    fn unary(&mut self, op: &str, inner: &Expr, col: usize) -> Result<Value, ExprError> {
        match op {
            "&" => {
                let v = self.eval(inner)?;
                match v.lval {
                    Lval::Memory(a) => {
                        let target = match self.types.kind(v.ty) {
                            Kind::NoDebugText => self.types.strip(v.ty),
                            _ => v.ty,
                        };
                        let ty = self.types.pointer_to(target);
                        Ok(Value::new(ty, a.to_le_bytes().to_vec(), Lval::None))
                    }
                    Lval::Register(r) => match &inner.node {
                        Node::Ident(name) => err(
                            col,
                            format!("Address requested for identifier \"{name}\" which is in register ${r}"),
                        ),
                        _ => err(col, "Attempt to take address of value not located in memory."),
                    },
                    Lval::None => err(col, "Attempt to take address of value not located in memory."),
                }
            }
            "*" => {
                let v = self.eval(inner)?;
                match self.types.kind(v.ty).clone() {
                    Kind::Pointer(target) => {
                        if matches!(self.types.kind(target), Kind::Void) {
                            return err(col, "Attempt to take contents of a non-pointer value.");
                        }
                        let p = self.int_of(&v, col)?;
                        self.at(target, p as u64, col)
                    }
                    Kind::Array { elem, .. } => match v.lval {
                        Lval::Memory(a) => self.at(elem, a, col),
                        _ => {
                            let size = self.types.size(elem).unwrap_or(0) as usize;
                            Ok(Value::new(
                                elem,
                                v.data.get(..size).unwrap_or(&[]).to_vec(),
                                Lval::None,
                            ))
                        }
                    },
                    Kind::Func { .. } | Kind::NoDebugText => Ok(v),
                    Kind::Int { .. } | Kind::Enum { .. } => {
                        let p = self.int_of(&v, col)?;
                        let int = self.types.int();
                        self.at(int, p as u64, col)
                    }
                    _ => err(col, "Attempt to take contents of a non-pointer value."),
                }
            }
            "-" | "+" => {
                let v = self.eval(inner)?;
                if self.is_float(v.ty) {
                    let f = as_f64(self.num(&v, col)?).unwrap_or(0.0);
                    let ty = v.ty;
                    return Ok(self.float_value(ty, if op == "-" { -f } else { f }));
                }
                if !self.types.is_integral(v.ty) {
                    return err(
                        col,
                        "Argument to arithmetic operation not a number or boolean.",
                    );
                }
                let i = self.int_of(&v, col)?;
                let ty = self.promote(v.ty);
                Ok(self.int_value(ty, if op == "-" { i.wrapping_neg() } else { i }))
            }
            "!" => {
                let v = self.eval(inner)?;
                let t = self.truthy(&v, col)?;
                let int = self.types.int();
                Ok(self.int_value(int, i128::from(!t)))
            }
            "~" => {
                let v = self.eval(inner)?;
                if !self.types.is_integral(v.ty) {
                    return err(
                        col,
                        "Argument to complement operation not an integer, boolean.",
                    );
                }
                let i = self.int_of(&v, col)?;
                let ty = self.promote(v.ty);
                Ok(self.int_value(ty, !i))
            }
            _ => err(col, "unsupported operator"),
        }
    }

    fn binary(&mut self, op: &str, a: &Expr, b: &Expr, col: usize) -> Result<Value, ExprError> {
        if op == "&&" || op == "||" {
            let l = self.eval(a)?;
            let lt = self.truthy(&l, a.col)?;
            let result = if op == "&&" {
                lt && {
                    let r = self.eval(b)?;
                    self.truthy(&r, b.col)?
                }
            } else {
                lt || {
                    let r = self.eval(b)?;
                    self.truthy(&r, b.col)?
                }
            };
            let int = self.types.int();
            return Ok(self.int_value(int, i128::from(result)));
        }
        let l = self.eval(a)?;
        let r = self.eval(b)?;
        if op == "@" {
            let Lval::Memory(addr) = l.lval else {
                return err(col, "Only values in memory can be extended with '@'.");
            };
            let Num::I(n) = self.num(&r, b.col)? else {
                return err(
                    b.col,
                    "Argument to arithmetic operation not a number or boolean.",
                );
            };
            if n <= 0 {
                return err(col, format!("Invalid number {n} of repetitions."));
            }
            let ty = self.types.array_of(l.ty, n as u64);
            return self.at(ty, addr, col);
        }
        let l = self.decay(l, a.col)?;
        let r = self.decay(r, b.col)?;
        let lp = matches!(self.types.kind(l.ty), Kind::Pointer(_));
        let rp = matches!(self.types.kind(r.ty), Kind::Pointer(_));
        // Pointer arithmetic.
        if (lp || rp) && matches!(op, "+" | "-") {
            let ln = self.num(&l, a.col)?;
            let rn = self.num(&r, b.col)?;
            let (Num::I(li), Num::I(ri)) = (ln, rn) else {
                return err(
                    col,
                    "Argument to arithmetic operation not a number or boolean.",
                );
            };
            if lp && rp {
                if op == "+" {
                    return err(
                        col,
                        "Argument to arithmetic operation not a number or boolean.",
                    );
                }
                let size = self.pointer_target_size(l.ty) as i128;
                let long = self.types.long();
                return Ok(self.int_value(long, (li - ri) / size.max(1)));
            }
            let (ptr, ptr_ty, n) = if lp { (li, l.ty, ri) } else { (ri, r.ty, li) };
            if op == "-" && !lp {
                return err(
                    col,
                    "Argument to arithmetic operation not a number or boolean.",
                );
            }
            let size = self.pointer_target_size(ptr_ty) as i128;
            let delta = n.wrapping_mul(size);
            let v = if op == "+" {
                ptr.wrapping_add(delta)
            } else {
                ptr.wrapping_sub(delta)
            };
            return Ok(self.int_value(ptr_ty, v as u64 as i128));
        }
        let ln = self.num(&l, a.col)?;
        let rn = self.num(&r, b.col)?;
        let compare = matches!(op, "==" | "!=" | "<" | "<=" | ">" | ">=");
        let float = self.is_float(l.ty) || self.is_float(r.ty);
        if float {
            let (Some(x), Some(y)) = (as_f64(ln), as_f64(rn)) else {
                return err(
                    col,
                    "Argument to arithmetic operation not a number or boolean.",
                );
            };
            if compare {
                let res = match op {
                    "==" => x == y,
                    "!=" => x != y,
                    "<" => x < y,
                    "<=" => x <= y,
                    ">" => x > y,
                    _ => x >= y,
                };
                let int = self.types.int();
                return Ok(self.int_value(int, i128::from(res)));
            }
            let res = match op {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                _ => return err(col, "Integer only operation on floating point number."),
            };
            let ty = match (self.is_float(l.ty), self.is_float(r.ty)) {
                (true, true) => {
                    if self.types.size(l.ty) >= self.types.size(r.ty) {
                        l.ty
                    } else {
                        r.ty
                    }
                }
                (true, false) => l.ty,
                _ => r.ty,
            };
            let ty = self.types.strip(ty);
            return Ok(self.float_value(ty, res));
        }
        let (Num::I(x), Num::I(y)) = (ln, rn) else {
            return err(
                col,
                "Argument to arithmetic operation not a number or boolean.",
            );
        };
        let ty = if lp || rp {
            self.types.ulong()
        } else if matches!(op, "<<" | ">>") {
            self.promote(l.ty)
        } else {
            self.common_int(l.ty, r.ty)
        };
        let size = self.types.size(ty).unwrap_or(8);
        let bits = (size * 8) as u32;
        let unsigned = !self.types.is_signed(ty);
        // Operate in the result type's width.
        let norm = |v: i128| -> i128 {
            let mask = if bits >= 128 {
                !0u128
            } else {
                (1u128 << bits) - 1
            };
            let u = (v as u128) & mask;
            if unsigned || bits >= 128 {
                u as i128
            } else if (u >> (bits - 1)) & 1 == 1 {
                (u | !mask) as i128
            } else {
                u as i128
            }
        };
        let (x, y) = (norm(x), norm(y));
        if compare {
            let res = match op {
                "==" => x == y,
                "!=" => x != y,
                "<" => x < y,
                "<=" => x <= y,
                ">" => x > y,
                _ => x >= y,
            };
            let int = self.types.int();
            return Ok(self.int_value(int, i128::from(res)));
        }
        let res = match op {
            "+" => x.wrapping_add(y),
            "-" => x.wrapping_sub(y),
            "*" => x.wrapping_mul(y),
            "/" | "%" => {
                if y == 0 {
                    return err(col, "Division by zero");
                }
                if op == "/" {
                    x.wrapping_div(y)
                } else {
                    x.wrapping_rem(y)
                }
            }
            "&" => x & y,
            "|" => x | y,
            "^" => x ^ y,
            "<<" => {
                if y < 0 || y >= i128::from(bits) {
                    0
                } else {
                    x.wrapping_shl(y as u32)
                }
            }
            ">>" => {
                if y < 0 || y >= i128::from(bits) {
                    if x < 0 && !unsigned {
                        -1
                    } else {
                        0
                    }
                } else {
                    x >> (y as u32)
                }
            }
            _ => return err(col, "unsupported operator"),
        };
        Ok(self.int_value(ty, norm(res)))
    }

    fn cast(&mut self, v: Value, to: TypeId, col: usize) -> Result<Value, ExprError> {
        let target = self.types.kind(to).clone();
        match target {
            Kind::Void => Ok(Value::new(to, Vec::new(), Lval::None)),
            Kind::Int { size, .. } | Kind::Enum { size, .. } => {
                let bool_like = matches!(
                    target,
                    Kind::Int {
                        bool_like: true,
                        ..
                    }
                );
                let v = self.decay(v, col)?;
                let n = self.num(&v, col)?;
                let i = match n {
                    Num::I(i) => i,
                    Num::F(f) => f as i128,
                };
                let i = if bool_like { i128::from(i != 0) } else { i };
                Ok(Value::new(to, int_bytes(i, size), Lval::None))
            }
            Kind::Float { .. } => {
                let v = self.decay(v, col)?;
                let f = match self.num(&v, col)? {
                    Num::I(i) => {
                        if self.types.is_signed(v.ty) {
                            i as f64
                        } else {
                            i as u128 as f64
                        }
                    }
                    Num::F(f) => f,
                };
                Ok(self.float_value(to, f))
            }
            Kind::Pointer(_) => {
                let v = self.decay(v, col)?;
                match self.num(&v, col)? {
                    Num::I(i) => Ok(Value::new(
                        to,
                        (i as u64).to_le_bytes().to_vec(),
                        Lval::None,
                    )),
                    Num::F(_) => err(col, "Invalid cast."),
                }
            }
            Kind::Struct { .. } | Kind::Array { .. } => {
                if self.types.strip(v.ty) == self.types.strip(to) {
                    Ok(Value { ty: to, ..v })
                } else {
                    err(col, "Invalid cast.")
                }
            }
            _ => err(col, "Invalid cast."),
        }
    }

    /// A type written in a cast or `sizeof`.
    fn resolve_type(&mut self, tn: &TypeName) -> Result<TypeId, ExprError> {
        let words: Vec<&str> = tn.base.iter().map(String::as_str).collect();
        let mut ty = if let Some(tagged) = words.first().filter(|w| w.contains(' ')) {
            self.named_type(tagged).ok_or_else(|| ExprError {
                column: tn.col,
                message: format!("No {tagged}."),
            })?
        } else if let Some(t) = self.keyword_type(&words) {
            t
        } else if words.len() == 1 {
            self.named_type(words[0]).ok_or_else(|| ExprError {
                column: tn.col,
                message: format!("No symbol \"{}\" in current context.", words[0]),
            })?
        } else {
            return syntax_error(&[], 0).map_err(|_| ExprError {
                column: tn.col,
                message: "A syntax error in expression, near `'.".into(),
            });
        };
        for d in &tn.decl {
            ty = match d {
                Decl::Pointer => self.types.pointer_to(ty),
                Decl::Array(n) => self.types.array_of(ty, *n),
                Decl::FuncPtr(params) => {
                    let mut ps = Vec::new();
                    for p in params {
                        ps.push(self.resolve_type(p)?);
                    }
                    let void = self.types.void();
                    if ps.len() == 1 && ps[0] == void {
                        ps.clear();
                    }
                    let f = self.types.intern(Kind::Func {
                        ret: ty,
                        params: ps,
                        varargs: false,
                        prototyped: true,
                    });
                    self.types.pointer_to(f)
                }
            };
        }
        Ok(ty)
    }

    fn keyword_type(&mut self, words: &[&str]) -> Option<TypeId> {
        let has = |w: &str| words.contains(&w);
        let longs = words.iter().filter(|w| **w == "long").count();
        let unsigned = has("unsigned");
        if has("void") {
            return Some(self.types.void());
        }
        if has("_Bool") {
            return Some(self.types.bool_type());
        }
        if has("float") {
            return Some(self.types.intern(Kind::Float {
                name: "float".into(),
                size: 4,
            }));
        }
        if has("double") {
            return Some(if longs > 0 {
                self.types.intern(Kind::Float {
                    name: "long double".into(),
                    size: 16,
                })
            } else {
                self.types.double()
            });
        }
        if has("char") {
            return Some(if unsigned {
                self.types.int_type("unsigned char", 1, false)
            } else if has("signed") {
                self.types.int_type("signed char", 1, true)
            } else {
                self.types.char()
            });
        }
        if has("short") {
            return Some(if unsigned {
                self.types.int_type("unsigned short", 2, false)
            } else {
                self.types.int_type("short", 2, true)
            });
        }
        if longs >= 2 {
            return Some(if unsigned {
                self.types.int_type("unsigned long long", 8, false)
            } else {
                self.types.int_type("long long", 8, true)
            });
        }
        if longs == 1 {
            return Some(if unsigned {
                self.types.ulong()
            } else {
                self.types.long()
            });
        }
        if has("int") || unsigned || has("signed") {
            return Some(if unsigned {
                self.types.int_type("unsigned int", 4, false)
            } else {
                self.types.int()
            });
        }
        None
    }

    /// `struct X`, `union X`, `enum X` or a typedef/base type name from
    /// DWARF (complete definitions preferred).
    fn named_type(&mut self, name: &str) -> Option<TypeId> {
        let mut fallback = None;
        for m in &self.prog.modules {
            let Some(info) = m.image.debug() else {
                continue;
            };
            for &die in info.types.get(name).into_iter().flatten() {
                let ty = self.types.of_die(info, die);
                if !matches!(
                    self.types.get(ty),
                    Kind::Struct {
                        incomplete: true,
                        ..
                    }
                ) {
                    return Some(ty);
                }
                fallback.get_or_insert(ty);
            }
        }
        fallback
    }
}

fn as_f64(n: Num) -> Option<f64> {
    Some(match n {
        Num::I(i) => i as f64,
        Num::F(f) => f,
    })
}

#[derive(Clone, Copy)]
enum RegKind {
    Int,
    Code,
    Data,
    Flags,
}

/// A register by gdb name: (value, width in bytes, kind).
fn register(r: &libc::user_regs_struct, name: &str) -> Option<(u64, usize, RegKind)> {
    let full = |n: &str| -> Option<u64> {
        Some(match n {
            "rax" => r.rax,
            "rbx" => r.rbx,
            "rcx" => r.rcx,
            "rdx" => r.rdx,
            "rsi" => r.rsi,
            "rdi" => r.rdi,
            "rbp" => r.rbp,
            "rsp" => r.rsp,
            "r8" => r.r8,
            "r9" => r.r9,
            "r10" => r.r10,
            "r11" => r.r11,
            "r12" => r.r12,
            "r13" => r.r13,
            "r14" => r.r14,
            "r15" => r.r15,
            "rip" => r.rip,
            _ => return None,
        })
    };
    match name {
        "pc" | "rip" => return Some((r.rip, 8, RegKind::Code)),
        "sp" | "rsp" => return Some((r.rsp, 8, RegKind::Data)),
        "fp" | "rbp" => return Some((r.rbp, 8, RegKind::Data)),
        "eflags" => return Some((r.eflags, 4, RegKind::Flags)),
        "cs" => return Some((r.cs, 4, RegKind::Int)),
        "ss" => return Some((r.ss, 4, RegKind::Int)),
        "ds" => return Some((r.ds, 4, RegKind::Int)),
        "es" => return Some((r.es, 4, RegKind::Int)),
        "fs" => return Some((r.fs, 4, RegKind::Int)),
        "gs" => return Some((r.gs, 4, RegKind::Int)),
        "fs_base" => return Some((r.fs_base, 8, RegKind::Int)),
        "gs_base" => return Some((r.gs_base, 8, RegKind::Int)),
        "orig_rax" => return Some((r.orig_rax, 8, RegKind::Int)),
        _ => {}
    }
    if let Some(v) = full(name) {
        return Some((v, 8, RegKind::Int));
    }
    // r8d / r8w / r8l
    if let Some(base) = name.strip_suffix('d').filter(|b| b.starts_with('r')) {
        return full(base).map(|v| (v, 4, RegKind::Int));
    }
    if let Some(base) = name.strip_suffix('w').filter(|b| b.starts_with('r')) {
        return full(base).map(|v| (v, 2, RegKind::Int));
    }
    if let Some(base) = name
        .strip_suffix('l')
        .filter(|b| b.starts_with('r') && b.len() <= 3)
    {
        return full(base).map(|v| (v, 1, RegKind::Int));
    }
    let legacy = |x: &str| -> Option<u64> { full(&format!("r{x}")) };
    match name.len() {
        3 if name.starts_with('e') => legacy(&name[1..]).map(|v| (v, 4, RegKind::Int)),
        2 if matches!(name, "ax" | "bx" | "cx" | "dx" | "si" | "di" | "bp" | "sp") => {
            legacy(name).map(|v| (v, 2, RegKind::Int))
        }
        2 if name.ends_with('l') && matches!(&name[..1], "a" | "b" | "c" | "d") => {
            legacy(&format!("{}x", &name[..1])).map(|v| (v, 1, RegKind::Int))
        }
        2 if name.ends_with('h') && matches!(&name[..1], "a" | "b" | "c" | "d") => {
            legacy(&format!("{}x", &name[..1])).map(|v| (v >> 8, 1, RegKind::Int))
        }
        3 if matches!(name, "sil" | "dil" | "bpl" | "spl") => {
            legacy(&name[..2]).map(|v| (v, 1, RegKind::Int))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Expr, ExprError> {
        let src: Vec<char> = s.chars().collect();
        let toks = lex(&src)?;
        let no = |n: &str| n == "point";
        let mut p = Parser {
            toks,
            pos: 0,
            src: &src,
            is_typedef: &no,
        };
        p.parse()
    }

    #[test]
    fn syntax_errors_point_at_the_bad_token() {
        let e = parse("1 +").unwrap_err();
        assert_eq!(e.message, "A syntax error in expression, near `'.");
        assert_eq!(e.column, 3);
        let e = parse("a + * ) b").unwrap_err();
        assert_eq!(e.message, "A syntax error in expression, near `) b'.");
        assert_eq!(e.column, 6);
        let e = parse("x # 3").unwrap_err();
        assert_eq!(e.column, 2);
        assert_eq!(
            parse("'ab'").unwrap_err().message,
            "Unmatched single quote."
        );
        assert!(parse("(int").is_err());
        assert!(parse("a[1").is_err());
        assert!(parse("\"abc").is_err());
        assert!(parse("0x").is_err());
        assert!(parse("99999999999999999999999").is_err());
    }

    #[test]
    fn precedence_and_casts() {
        let e = parse("1 + 2 * 3").unwrap();
        let Node::Binary("+", _, rhs) = e.node else {
            panic!("{e:?}")
        };
        assert!(matches!(rhs.node, Node::Binary("*", _, _)));
        let e = parse("(struct node *)p->next").unwrap();
        let Node::Cast(tn, inner) = e.node else {
            panic!()
        };
        assert_eq!(tn.base, vec!["struct node".to_string()]);
        assert_eq!(tn.decl, vec![Decl::Pointer]);
        assert!(matches!(inner.node, Node::Member(_, _, true)));
        let e = parse("(point)x").unwrap();
        assert!(matches!(e.node, Node::Cast(..)));
        let e = parse("(x)").unwrap();
        assert!(matches!(e.node, Node::Ident(_)));
        let e = parse("*values@3").unwrap();
        assert!(matches!(e.node, Node::Binary("@", _, _)));
        let e = parse("sizeof(int) + sizeof x").unwrap();
        assert!(matches!(e.node, Node::Binary("+", _, _)));
        let e = parse("(int (*)(int, char **))0").unwrap();
        let Node::Cast(tn, _) = e.node else { panic!() };
        assert!(matches!(&tn.decl[0], Decl::FuncPtr(p) if p.len() == 2));
        assert!(parse("a ? b : c").is_ok());
        assert!(parse("$rax + $1 - $$ + $").is_ok());
        assert!(parse("'\\n' + '\\0' + '\\x41' + '\\101'").is_ok());
    }
}
