//! The program inspector against real stopped programs, checked against
//! oracles: gdb (`gdb -batch`), addr2line and /proc/pid/maps.
//!
//! Fixtures (tests/fixtures/*.c) are compiled with gcc into cargo's
//! per-target temporary directory. Programs are started under ptrace with
//! address-space randomization off (like gdb does), so the addresses gdb
//! reports for globals and code are the addresses we see.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rewind_ckpt::sys::process::PreExec;
use rewind_ckpt::sys::ptrace::{self, Stop};
use rewind_ckpt::tracee::Tracee;
use rewind_debugger::inspect::{self, Program, Target};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compile `tests/fixtures/<name>.c` with `flags`, once per test process.
fn build(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{name} {}", flags.join(" "));
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap();
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let tag: String = flags
        .iter()
        .map(|f| f.trim_start_matches('-').replace(['=', '/'], "_"))
        .collect::<Vec<_>>()
        .join("_");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inspect-{name}-{tag}"));
    let src = fixture_dir().join(format!("{name}.c"));
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {flags:?} {} failed", src.display());
    map.insert(key, out.clone());
    out
}

/// A program stopped under ptrace, seen through [`Target`].
struct Live {
    pid: i32,
    tracee: Tracee,
    exe: PathBuf,
}

impl Live {
    /// Start `exe` (through `setarch -R`, so without ASLR) and stop at its
    /// first instruction.
    fn start(exe: &Path) -> Live {
        let argv: Vec<String> = vec![
            "setarch".into(),
            "x86_64".into(),
            "-R".into(),
            exe.to_string_lossy().into_owned(),
        ];
        let (pid, _) = rewind_ckpt::session::spawn_traced(
            &argv,
            &PreExec::default(),
            ptrace::default_options(),
        )
        .expect("spawn setarch");
        // setarch's exec stop; continue to the fixture's.
        ptrace::cont(pid, 0).unwrap();
        loop {
            match ptrace::wait(pid, false).unwrap() {
                Some((_, Stop::Event(libc::PTRACE_EVENT_EXEC, _))) => break,
                Some((_, Stop::Signal(sig))) => ptrace::cont(pid, sig).unwrap(),
                Some((_, Stop::Exited(c))) => panic!("setarch exited with {c}"),
                Some((_, Stop::Killed(s))) => panic!("setarch killed by {s}"),
                _ => ptrace::cont(pid, 0).unwrap(),
            }
        }
        let tracee = Tracee::new(pid).unwrap();
        Live {
            pid,
            tracee,
            exe: exe.to_path_buf(),
        }
    }

    /// Run until `addr` is executed (a one-shot int3); panics if the
    /// program ends first.
    fn run_to(&mut self, addr: u64) {
        let mut orig = [0u8];
        self.tracee.read_mem(addr, &mut orig).unwrap();
        self.tracee.write_mem(addr, &[0xcc]).unwrap();
        ptrace::cont(self.pid, 0).unwrap();
        loop {
            match ptrace::wait(self.pid, false).unwrap() {
                Some((_, Stop::Signal(libc::SIGTRAP))) => break,
                Some((_, Stop::Signal(sig))) => ptrace::cont(self.pid, sig).unwrap(),
                Some((_, Stop::Exited(c))) => panic!("program exited with {c} before {addr:#x}"),
                Some((_, Stop::Killed(s))) => panic!("program killed by {s} before {addr:#x}"),
                _ => ptrace::cont(self.pid, 0).unwrap(),
            }
        }
        let mut regs = ptrace::getregs(self.pid).unwrap();
        assert_eq!(regs.rip, addr + 1, "stopped somewhere else");
        regs.rip = addr;
        ptrace::setregs(self.pid, &regs).unwrap();
        self.tracee.write_mem(addr, &orig).unwrap();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = rewind_ckpt::sys::process::kill(self.pid, libc::SIGKILL);
        let _ = ptrace::wait(self.pid, false);
    }
}

impl Target for Live {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.tracee
            .read_mem(addr, buf)
            .map_err(|_| format!("Cannot access memory at address {addr:#x}"))
    }
    fn regs(&self) -> libc::user_regs_struct {
        ptrace::getregs(self.pid).unwrap()
    }
    fn auxv(&self) -> Vec<(u64, u64)> {
        let raw = std::fs::read(format!("/proc/{}/auxv", self.pid)).unwrap();
        raw.chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().unwrap()),
                    u64::from_le_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect()
    }
    fn exe(&self) -> PathBuf {
        self.exe.clone()
    }
}

/// Start `exe`, stop at `break FUNC`, and load its modules.
fn stopped_in(exe: &Path, func: &str) -> (Live, Program) {
    let mut live = Live::start(exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    let addrs = prog.function_breakpoint(func).unwrap();
    live.run_to(addrs[0].addr);
    prog.refresh(&live).unwrap();
    (live, prog)
}

/// `gdb -batch -nx` with `cmds`, stdout and stderr interleaved. gdb does
/// not look for separate debug files (libc's are compressed, which the
/// inspector does not read), so both see the same debug info.
fn gdb(exe: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("sh");
    c.args(["-c", "exec gdb \"$@\" 2>&1", "sh", "-batch", "-nx"]);
    for cmd in [
        "set width 0",
        "set confirm off",
        "set debug-file-directory /nonexistent",
    ]
    .iter()
    .chain(cmds)
    {
        c.arg("-ex").arg(cmd);
    }
    let out = c.arg(exe).output().expect("gdb runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

fn basic() -> PathBuf {
    build("inspect_basic", &["-g", "-O0"])
}

// ---------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------

/// Lowest mapped address of each file in /proc/pid/maps (the oracle).
fn maps_starts(pid: i32) -> HashMap<PathBuf, u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut out: HashMap<PathBuf, u64> = HashMap::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || !fields[5].starts_with('/') {
            continue;
        }
        let start = hex(fields[0].split('-').next().unwrap());
        let path = std::fs::canonicalize(fields[5]).unwrap();
        let e = out.entry(path).or_insert(start);
        *e = (*e).min(start);
    }
    out
}

#[test]
fn modules_come_from_auxv_then_link_map() {
    let exe = basic();
    let mut live = Live::start(&exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    // At the first instruction only the executable and ld.so are mapped.
    let check = |prog: &Program, live: &Live| {
        let maps = maps_starts(live.pid);
        for m in prog.modules() {
            let path = std::fs::canonicalize(&m.path).unwrap();
            let start = maps
                .get(&path)
                .unwrap_or_else(|| panic!("{} not mapped", path.display()));
            assert_eq!(m.start & !0xfff, *start, "start of {}", path.display());
        }
        let mapped: Vec<_> = maps.keys().collect();
        assert_eq!(
            prog.modules().len(),
            mapped.len(),
            "modules {:?} vs maps {mapped:?}",
            prog.modules()
        );
    };
    assert_eq!(prog.modules().len(), 2, "{:?}", prog.modules());
    check(&prog, &live);
    let main = prog.function_breakpoint("main").unwrap();
    live.run_to(main[0].addr);
    prog.refresh(&live).unwrap();
    assert_eq!(prog.modules().len(), 3, "{:?}", prog.modules());
    check(&prog, &live);
    assert!(prog.modules()[2].path.to_string_lossy().contains("libc.so"));
    // A second refresh changes nothing.
    let before = format!("{:?}", prog.modules());
    prog.refresh(&live).unwrap();
    assert_eq!(before, format!("{:?}", prog.modules()));
    // gdb's `info sharedlibrary` From/To are the .text ranges.
    let out = gdb(&exe, &["break main", "run", "info sharedlibrary"]);
    for line in out.lines().filter(|l| l.starts_with("0x")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = f.last().unwrap();
        let m = prog
            .modules()
            .iter()
            .find(|m| m.path.to_string_lossy() == *path)
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(m.text_range(), Some((hex(f[0]), hex(f[1]))), "{line}");
    }
}

// ---------------------------------------------------------------------------
// Breakpoint addresses and lines
// ---------------------------------------------------------------------------

/// gdb's answer to `break SPEC` before running: every location as
/// (address, line), or the error line.
fn gdb_breaks(exe: &Path, specs: &[&str]) -> Vec<Result<Vec<(u64, u32)>, String>> {
    let mut cmds: Vec<String> = specs.iter().map(|s| format!("break {s}")).collect();
    cmds.push("info breakpoints".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(exe, &cmds);
    // Each `break` answers with "Breakpoint N at ..." or an error line.
    let mut numbers: Vec<Result<u32, String>> = Vec::new();
    let mut locations: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Breakpoint ") {
            numbers.push(Ok(rest.split_whitespace().next().unwrap().parse().unwrap()));
        } else if line.starts_with("No ") || line.starts_with("Function ") {
            numbers.push(Err(line.to_string()));
        } else if line.starts_with(|c: char| c.is_ascii_digit()) && line.contains(" in ") {
            // "1       breakpoint     keep y   0x... in f at x.c:55" or "1.2   y   0x... in ..."
            let n: u32 = line.split(['.', ' ']).next().unwrap().parse().unwrap();
            let addr = line
                .split_whitespace()
                .find(|w| w.starts_with("0x"))
                .unwrap();
            let line_no = line.rsplit_once(':').unwrap().1.trim().parse().unwrap();
            locations.entry(n).or_default().push((hex(addr), line_no));
        }
    }
    assert_eq!(numbers.len(), specs.len(), "gdb said:\n{out}");
    numbers
        .into_iter()
        .map(|n| n.map(|n| locations.remove(&n).unwrap_or_default()))
        .collect()
}

fn check_breaks_against_gdb(exe: &Path, specs: &[&str]) {
    let live = Live::start(exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    let bias = prog.modules()[0].bias;
    let expected = gdb_breaks(exe, specs);
    for (spec, want) in specs.iter().zip(expected) {
        let got = match spec.rsplit_once(':') {
            Some((file, line)) => prog.line_breakpoint(file, line.parse().unwrap()),
            None => prog.function_breakpoint(spec),
        };
        match (got, want) {
            (Ok(addrs), Ok(want)) => {
                let got: Vec<(u64, u32)> = addrs
                    .iter()
                    .map(|b| (b.addr - bias, b.line.unwrap_or(0)))
                    .collect();
                assert_eq!(got, want, "break {spec}");
            }
            (Err(e), Err(w)) => assert_eq!(e, w, "break {spec}"),
            (got, want) => panic!("break {spec}: got {got:x?}, gdb {want:x?}"),
        }
    }
}

#[test]
fn breakpoints_match_gdb_at_o0() {
    let specs = [
        "main",
        "compare",
        "walk",
        "square",
        "nosuch",
        "inspect_basic.c:1",
        "inspect_basic.c:45",
        "inspect_basic.c:47",
        "inspect_basic.c:55",
        "inspect_basic.c:58",
        "inspect_basic.c:60",
        "inspect_basic.c:63",
        "inspect_basic.c:78",
        "inspect_basic.c:999",
        "fixtures/inspect_basic.c:74",
        "nosuch.c:3",
    ];
    check_breaks_against_gdb(&basic(), &specs);
}

#[test]
fn breakpoints_match_gdb_at_o2() {
    let exe = build("inspect_basic", &["-g", "-O2"]);
    check_breaks_against_gdb(
        &exe,
        &[
            "main",
            "compare",
            "walk",
            "square",
            "inspect_basic.c:55",
            "inspect_basic.c:58",
            "inspect_basic.c:79",
        ],
    );
}

#[test]
fn library_functions_without_debug_info() {
    let (live, prog) = stopped_in(&basic(), "main");
    // No DWARF for libc here: the symbol address (gdb's prologue analysis
    // only moves past push %rbp; mov %rsp,%rbp, which libc does not use).
    let puts: Vec<u64> = prog
        .function_breakpoint("puts")
        .unwrap()
        .iter()
        .map(|b| b.addr)
        .collect();
    assert_eq!(puts.len(), 1);
    let libc = prog.module_at(puts[0]).unwrap();
    assert!(libc.path.to_string_lossy().contains("libc.so"));
    assert_eq!(prog.symbolize(puts[0]).unwrap().1, 0);
    assert_eq!(prog.address_of("puts"), Some(puts[0]));
    let (start, end, name) = prog.function_range(puts[0] + 3).unwrap();
    assert_eq!(start, puts[0]);
    assert!(end > start);
    assert!(name == "puts" || name.ends_with("_IO_puts"), "{name}");
    assert!(prog.line_info(puts[0]).is_none());
    assert_eq!(prog.location(puts[0]).unwrap().line, None);
    drop(live);
}

/// `addr2line -f` for each address (function, file:line).
fn addr2line(exe: &Path, addrs: &[u64]) -> Vec<(String, String)> {
    let out = Command::new("addr2line")
        .arg("-f")
        .arg("-e")
        .arg(exe)
        .args(addrs.iter().map(|a| format!("{a:#x}")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| {
            (
                c[0].to_string(),
                c[1].split(" (").next().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn locations_match_addr2line() {
    let exe = basic();
    let live = Live::start(&exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    let m = prog.modules()[0].clone();
    // Every instruction of main and walk.
    let mut addrs = Vec::new();
    for f in ["main", "walk", "compare"] {
        let a = prog.function_breakpoint(f).unwrap()[0].addr;
        let (start, end, name) = prog.function_range(a).unwrap();
        assert_eq!(name, f);
        for insn in prog.disassemble(&live, start, 1000) {
            if insn.addr >= end {
                break;
            }
            addrs.push(insn.addr);
        }
    }
    let link: Vec<u64> = addrs.iter().map(|a| a - m.bias).collect();
    let oracle = addr2line(&exe, &link);
    for (a, (func, fileline)) in addrs.iter().zip(oracle) {
        let loc = prog.location(*a).unwrap();
        assert_eq!(loc.function.as_deref(), Some(func.as_str()), "{a:#x}");
        let (file, line) = fileline.rsplit_once(':').unwrap();
        assert_eq!(loc.file.as_deref(), Some(Path::new(file)), "{a:#x}");
        assert_eq!(loc.line, line.parse().ok(), "{a:#x}");
        let row = prog.line_info(*a).unwrap();
        assert!(row.start <= *a && *a < row.end, "{a:#x} {row:?}");
        assert_eq!(row.line, loc.line.unwrap());
    }
    // gdb's `info line` gives the range of a line's first run.
    let out = gdb(
        &exe,
        &[
            "info line inspect_basic.c:73",
            "info line inspect_basic.c:58",
        ],
    );
    for l in out.lines() {
        // Line 73 of "x.c" starts at address 0x11e8 <main> and ends at 0x11f7 <main+15>.
        let words: Vec<&str> = l.split_whitespace().collect();
        let start = hex(words[7]);
        let end = hex(words[words.len() - 2]);
        let row = prog.line_info(start + m.bias).unwrap();
        assert_eq!((row.start - m.bias, row.end - m.bias), (start, end), "{l}");
    }
    let src = prog
        .source_lines(Path::new("inspect_basic.c"), 73, 74)
        .unwrap();
    assert_eq!(
        src,
        vec![
            (73, "{".to_string()),
            (74, "    int local = 17;".to_string())
        ]
    );
    assert!(prog.source_lines(Path::new("nosuch.c"), 1, 2).is_err());
}

// ---------------------------------------------------------------------------
// Disassembly
// ---------------------------------------------------------------------------

#[test]
fn disassembly_matches_gdb() {
    let exe = basic();
    let (live, prog) = stopped_in(&exe, "main");
    let pc = live.regs().rip;
    let out = gdb(&exe, &["break main", "run", "x/40i $pc", "x/40i puts"]);
    let mut insns = prog.disassemble(&live, pc, 40);
    insns.extend(prog.disassemble(&live, prog.address_of("puts").unwrap(), 40));
    let gdb_lines: Vec<&str> = out.lines().filter(|l| l.contains(":\t")).collect();
    assert_eq!(gdb_lines.len(), 80, "{out}");
    for (insn, line) in insns.iter().zip(gdb_lines) {
        let (head, text) = line.split_once(":\t").unwrap();
        let addr = hex(head
            .trim_start_matches("=> ")
            .split_whitespace()
            .next()
            .unwrap());
        assert_eq!(insn.addr, addr, "{line}");
        // The executable's code reads exactly like gdb's.
        if prog.module_at(insn.addr).unwrap().path == exe {
            assert_eq!(insn.text, text, "{line}");
        }
        // Symbolized call targets and rip-relative comments.
        if let Some(sym) = text.split('<').nth(1) {
            assert!(
                insn.text.contains(&format!("<{sym}")),
                "{} vs {text}",
                insn.text
            );
        }
        assert_eq!(inspect::insn_len(&live, insn.addr), Some(insn.len));
        let is_call = text.starts_with("call");
        assert_eq!(
            inspect::is_call(&live, insn.addr).is_some(),
            is_call,
            "{text}"
        );
        assert_eq!(
            inspect::is_ret(&live, insn.addr),
            text.starts_with("ret"),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Backtraces
// ---------------------------------------------------------------------------

/// gdb's `bt` as (function, line) pairs.
fn gdb_bt(out: &str) -> Vec<(String, Option<u32>)> {
    out.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // "#1  0x... in qsort_r (...) at f.c:12" or "#0  compare (a=..) at f.c:66"
            let func = if words[1].starts_with("0x") {
                words[3]
            } else {
                words[1]
            };
            let line = l.rsplit_once(':').and_then(|(_, n)| n.trim().parse().ok());
            (func.to_string(), line)
        })
        .collect()
}

fn check_bt(exe: &Path, func: &str) {
    let (live, prog) = stopped_in(exe, func);
    let frames = prog.backtrace(&live, 64);
    let out = gdb(exe, &[&format!("break {func}"), "run", "bt"]);
    let want = gdb_bt(&out);
    let got: Vec<(String, Option<u32>)> = frames
        .iter()
        .map(|f| {
            (
                f.function.clone().unwrap_or_default(),
                f.loc.as_ref().and_then(|l| l.line),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "got {got:?}\ngdb {want:?}\n{out}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.1, w.1, "got {got:?}\ngdb {want:?}");
        // libc names differ between symbol aliases (qsort / qsort_r / msort_with_tmp...).
        if w.1.is_some() {
            assert_eq!(g.0, w.0, "got {got:?}\ngdb {want:?}");
        }
    }
    assert_eq!(frames[0].pc, live.regs().rip);
    for w in frames.windows(2) {
        assert!(w[1].regs.rsp > w[0].regs.rsp, "stack grows: {frames:x?}");
    }
}

#[test]
fn backtrace_through_libc_matches_gdb() {
    check_bt(&basic(), "compare");
}

#[test]
fn backtrace_at_o2_matches_gdb() {
    check_bt(&build("inspect_basic", &["-g", "-O2"]), "compare");
}

// ---------------------------------------------------------------------------
// Values, expressions, locals
// ---------------------------------------------------------------------------

/// gdb's answers to `print EXPR` for each expression (the text after
/// `$N = `, or the error line), stopped at `break FUNC`.
fn gdb_prints(exe: &Path, func: &str, before: &[&str], exprs: &[&str]) -> Vec<String> {
    let mut cmds = vec![format!("break {func}"), "run".to_string()];
    cmds.extend(before.iter().map(|s| s.to_string()));
    for e in exprs {
        cmds.push("echo @@\\n".into());
        cmds.push(format!("print {e}"));
    }
    cmds.push("echo @@\\n".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(exe, &cmds);
    let chunks: Vec<&str> = out.split("@@\n").skip(1).collect();
    assert_eq!(chunks.len(), exprs.len() + 1, "{out}");
    chunks[..exprs.len()]
        .iter()
        .map(|c| {
            let line = c.lines().last().unwrap_or("").to_string();
            match line.split_once(" = ") {
                Some((n, v)) if n.starts_with('$') => v.to_string(),
                _ => line,
            }
        })
        .collect()
}

fn ours(prog: &Program, live: &Live, expr: &str, frame: usize) -> String {
    match inspect::evaluate(expr, prog, live, frame) {
        Ok(v) => inspect::format_value(prog, live, &v),
        Err(e) => e.message,
    }
}

#[test]
fn print_matches_gdb() {
    let exe = basic();
    let exprs = [
        "counter",
        "big",
        "greeting",
        "name",
        "matrix",
        "pi",
        "ratio",
        "shade",
        "un",
        "origin",
        "n1",
        "head",
        "*head",
        "head->next->value",
        "zeros",
        "flag",
        "bits",
        "values",
        "letter",
        "port",
        "op",
        "&counter",
        "&values[1]",
        "main",
        "walk",
        "&walk",
        "*walk",
        "sizeof(struct node)",
        "sizeof counter",
        "sizeof(int)",
        "(char)66",
        "10/3",
        "10.0/4",
        "values+1",
        "*values@3",
        "nosuch",
        "1 +",
        "*(int*)0",
        "&big",
        "&port",
        "&un",
        "&origin",
        "&matrix",
        "&matrix[1]",
        "matrix[1]",
        "*matrix",
        "&name",
        "name+1",
        "*name@2",
        "ratio*2",
        "pi*2",
        "1.0/3",
        "1e100",
        "1.5e-7",
        "1/0",
        "1.0/0",
        "-1.0/0",
        "(char)300",
        "(unsigned char)200",
        "(short)-1",
        "(unsigned)-1",
        "-1U",
        "4294967296",
        "2147483648",
        "'A'",
        "'\\n'",
        "\"hi\"",
        "(long)&counter",
        "*&counter",
        "&*head",
        "list",
        "*list",
        "list->next->next",
        "limit",
        "shade == BLUE",
        "BLUE",
        "(enum color)1",
        "(enum color)5",
        "GREEN + 1",
        "bits.mode",
        "bits.level",
        "values[1] + values[2]",
        "&values[4] - &values[1]",
        "values == &values[0]",
        "!counter",
        "~counter",
        "-counter",
        "counter > 3 && flag",
        "head->nosuch",
        "counter.x",
        "*0",
        "&5",
        "(long)pi",
        "letter + 1",
        "(char*)greeting",
        "(unsigned char*)greeting",
        "(void*)greeting",
        "(int*)greeting",
        "*greeting@3",
        "greeting[1]",
        "*values@0",
        "5@2",
        "!flag",
        "(_Bool)5",
        "3 > 2",
        "7 % 3",
        "-7 / 2",
        "-7 % 3",
        "1L << 40",
        "un.c",
        "un.f",
        "origin.y",
        "head->next",
        "(long)head->next",
        "(struct node *)head->next",
        "*(struct node *)head->next",
        "matrix[1][2]",
        "&matrix[1][2]",
        "values[5]",
        "$foo",
        "$rip == $pc",
        "$sp == $rsp",
        "sizeof(point)",
        "sizeof origin",
        "sizeof(matrix)/sizeof(matrix[0])",
        "counter ? 1 : 2",
        "(point *)&origin",
        "((point *)&origin)->x",
        "$eflags",
        "0x7fffffff + 1",
        "(unsigned char)255 + 1",
        "'a' * 2",
        "1 == 1.0",
        "ratio < 1",
        "-ratio",
        "(float)1/3",
        "(double)1/3",
        "(int)3.9",
        "(int)-3.9",
        "010",
        "0x10",
        "n2.next",
        "*n2.next",
    ];
    let want = gdb_prints(&exe, "walk", &[], &exprs);
    let (live, prog) = stopped_in(&exe, "walk");
    let mut bad = Vec::new();
    for (e, w) in exprs.iter().zip(&want) {
        let got = ours(&prog, &live, e, 0);
        if &got != w {
            bad.push(format!("print {e}\n   ours: {got}\n    gdb: {w}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn locals_and_args_match_gdb() {
    let exe = basic();
    // Inside the loop body of walk, after two iterations' worth of code.
    let out = gdb(
        &exe,
        &[
            "break inspect_basic.c:59",
            "run",
            "echo @@\\n",
            "info locals",
            "echo @@\\n",
            "info args",
            "echo @@\\n",
            "bt",
        ],
    );
    let chunks: Vec<&str> = out.split("@@\n").collect();
    let live_line = {
        let live = Live::start(&exe);
        let mut prog = Program::new();
        prog.refresh(&live).unwrap();
        prog.line_breakpoint("inspect_basic.c", 59).unwrap()[0].addr
    };
    let mut live = Live::start(&exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    live.run_to(live_line);
    prog.refresh(&live).unwrap();
    assert_eq!(prog.info_locals(&live, 0).unwrap(), chunks[1].trim_end());
    assert_eq!(prog.info_args(&live, 0).unwrap(), chunks[2].trim_end());
    // Frame 1 is main: its locals, and "No arguments." nowhere.
    let main_locals = prog.info_locals(&live, 1).unwrap();
    assert!(
        main_locals.starts_with("local = 17\nwhere = {x = 1, y = 2}"),
        "{main_locals}"
    );
    // bt lines, except the stack addresses gdb's environment shifts.
    let frames = prog.backtrace(&live, 16);
    let bt: Vec<String> = frames
        .iter()
        .map(|f| prog.describe_frame(&live, f))
        .collect();
    let gdb_bt: Vec<&str> = chunks[3].lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(bt.len(), gdb_bt.len(), "{bt:?}\n{gdb_bt:?}");
    let strip_stack = |s: &str| {
        s.split_whitespace()
            .map(|w| if w.contains("0x7ff") { "STACK" } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (ours, theirs) in bt.iter().zip(gdb_bt) {
        assert_eq!(strip_stack(ours), strip_stack(theirs));
    }
}

#[test]
fn frame_variables_in_caller_frames() {
    let exe = basic();
    let (live, prog) = stopped_in(&exe, "compare");
    let frames = prog.backtrace(&live, 16);
    let main = frames
        .iter()
        .position(|f| f.function.as_deref() == Some("main"))
        .unwrap();
    // main's locals read through the unwound frame (rbp-based).
    assert_eq!(ours(&prog, &live, "local", main), "17");
    assert_eq!(ours(&prog, &live, "where", main), "{x = 1, y = 2}");
    assert_eq!(ours(&prog, &live, "argc", main), "1");
    // compare's arguments point into values[].
    let a = ours(&prog, &live, "a", 0);
    assert!(
        a.starts_with("(const void *) 0x") && a.contains("<values"),
        "{a}"
    );
    assert_eq!(
        ours(&prog, &live, "x", main),
        "No symbol \"x\" in current context."
    );
    let e = inspect::evaluate("1 + nosuch", &prog, &live, 0).unwrap_err();
    assert_eq!(e.column, 4);
}

#[test]
fn examine_matches_gdb() {
    let exe = basic();
    // (x format, expression giving the address)
    let cases = [
        ("4xw", "values"),
        ("s", "greeting"),
        ("8xb", "&counter"),
        ("2xg", "values"),
        ("3dw", "values"),
        ("4i", "$pc"),
        ("4c", "greeting"),
        ("3ow", "values"),
        ("2tw", "values"),
        ("2f", "&pi"),
        ("3uh", "values"),
        ("", "&counter"),
        ("x", "&counter"),
        ("2a", "&head"),
        ("10xb", "name"),
        ("5dw", "matrix"),
        ("2s", "name"),
        ("xg", "0"),
    ];
    let mut cmds = vec!["break walk".to_string(), "run".to_string()];
    for (f, a) in &cases {
        cmds.push("echo @@\\n".into());
        cmds.push(if f.is_empty() {
            format!("x {a}")
        } else {
            format!("x/{f} {a}")
        });
    }
    cmds.push("echo @@\\n".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(&exe, &cmds);
    let chunks: Vec<&str> = out.split("@@\n").skip(1).collect();
    let (live, prog) = stopped_in(&exe, "walk");
    let mut ex = inspect::Examiner::default();
    for ((f, a), want) in cases.iter().zip(chunks) {
        let v = inspect::evaluate(a, &prog, &live, 0).unwrap();
        let addr = prog.value_as_address(&v).unwrap();
        let got = match ex.examine(&prog, &live, f, Some(addr)) {
            Ok(s) | Err(s) => s,
        };
        assert_eq!(got, want.trim_end(), "x/{f} {a}");
    }
}

#[test]
fn optimized_code_matches_gdb() {
    let exe = build("inspect_basic", &["-g", "-O2"]);
    let cmds = [
        "break inspect_basic.c:58",
        "run",
        "echo @@\\n",
        "bt",
        "echo @@\\n",
        "info locals",
        "echo @@\\n",
        "info args",
        "echo @@\\n",
        "up",
        "echo @@\\n",
        "info locals",
        "echo @@\\n",
        "info args",
        "echo @@\\n",
    ];
    let out = gdb(&exe, &cmds);
    let chunks: Vec<&str> = out.split("@@\n").map(str::trim_end).collect();
    let mut live = Live::start(&exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    let first = prog.line_breakpoint("inspect_basic.c", 58).unwrap()[0].addr;
    live.run_to(first);
    prog.refresh(&live).unwrap();
    let frames = prog.backtrace(&live, 16);
    let bt: Vec<String> = frames
        .iter()
        .map(|f| prog.describe_frame(&live, f))
        .collect();
    let strip_stack = |s: &str| {
        s.split_whitespace()
            .map(|w| if w.contains("0x7ff") { "STACK" } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let gdb_bt: Vec<String> = chunks[1].lines().map(strip_stack).collect();
    let our_bt: Vec<String> = bt.iter().map(|s| strip_stack(s)).collect();
    assert_eq!(our_bt, gdb_bt);
    assert!(frames[0].inlined && !frames[1].inlined);
    assert_eq!(
        prog.info_locals(&live, 0).unwrap(),
        chunks[2],
        "info locals in the inlined walk"
    );
    assert_eq!(
        prog.info_args(&live, 0).unwrap(),
        chunks[3],
        "info args in the inlined walk"
    );
    let up = |s: &str| strip_stack(s);
    assert_eq!(
        up(&prog.info_locals(&live, 1).unwrap()),
        up(chunks[5]),
        "info locals in main"
    );
    assert_eq!(
        up(&prog.info_args(&live, 1).unwrap()),
        up(chunks[6]),
        "info args in main"
    );
}

#[test]
fn refresh_finds_dlopened_library() {
    let exe = build("inspect_dl", &["-g", "-O0"]);
    let (mut live, mut prog) = stopped_in(&exe, "main");
    assert!(prog.function_breakpoint("cosh").is_err());
    let n = prog.modules().len();
    let after = prog.function_breakpoint("after_load").unwrap()[0].addr;
    live.run_to(after);
    prog.refresh(&live).unwrap();
    assert_eq!(prog.modules().len(), n + 1, "{:?}", prog.modules());
    let libm = prog.modules().last().unwrap().clone();
    assert!(libm.path.to_string_lossy().contains("libm.so"), "{libm:?}");
    let maps = maps_starts(live.pid);
    assert_eq!(
        maps.get(&std::fs::canonicalize(&libm.path).unwrap()),
        Some(&libm.start)
    );
    let cosh = prog.function_breakpoint("cosh").unwrap();
    assert!(prog.module_at(cosh[0].addr).unwrap().path == libm.path);
    assert_eq!(prog.symbolize(cosh[0].addr), Some(("cosh".to_string(), 0)));
}

#[test]
fn backtrace_through_signal_handler_matches_gdb() {
    let exe = build("inspect_dl", &["-g", "-O0"]);
    let (live, prog) = stopped_in(&exe, "on_signal");
    let out = gdb(
        &exe,
        &[
            "handle SIGUSR1 nostop noprint pass",
            "break on_signal",
            "run",
            "bt",
        ],
    );
    let want: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    let frames = prog.backtrace(&live, 16);
    let got: Vec<String> = frames
        .iter()
        .map(|f| prog.describe_frame(&live, f))
        .collect();
    assert_eq!(got.len(), want.len(), "{got:#?}\n{want:#?}");
    for (g, w) in got.iter().zip(&want) {
        if w.contains("?? ()") {
            // A libc-internal function gdb cannot name without libc's
            // symbol table: same address at least.
            assert_eq!(g.split(" in ").next(), w.split(" in ").next());
        } else {
            assert_eq!(g, w);
        }
    }
    assert!(frames[1].signal_frame);
}

#[test]
fn static_executable_has_one_module() {
    let exe = build("inspect_basic", &["-g", "-O0", "-static"]);
    let live = Live::start(&exe);
    let mut prog = Program::new();
    prog.refresh(&live).unwrap();
    assert_eq!(prog.modules().len(), 1);
    drop(live);
    check_bt(&exe, "compare");
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// A stopped program simulated from an ELF file: its load segments mapped
/// at a PIE bias, a stack of pseudo-random words, registers pointing into
/// `main`.
struct Fake {
    exe: PathBuf,
    image: Vec<(u64, Vec<u8>)>,
    regs: libc::user_regs_struct,
    auxv: Vec<(u64, u64)>,
}

const FAKE_BIAS: u64 = 0x5555_5555_4000;
const FAKE_STACK: u64 = 0x7fff_0000_0000;

impl Fake {
    fn new(exe: &Path, bytes: &[u8], seed: u64) -> Fake {
        use object::read::elf::{ElfFile64, ProgramHeader};
        let mut image = Vec::new();
        let mut phdr = 0;
        let mut entry = 0;
        if let Ok(elf) = ElfFile64::<object::Endianness>::parse(bytes) {
            let e = elf.endian();
            entry = object::Object::entry(&elf);
            for ph in elf.elf_program_headers() {
                if ph.p_type(e) == object::elf::PT_PHDR {
                    phdr = ph.p_vaddr(e);
                }
                if ph.p_type(e) == object::elf::PT_LOAD {
                    let off = ph.p_offset(e) as usize;
                    let len = (ph.p_filesz(e) as usize).min(bytes.len().saturating_sub(off));
                    let mut seg = bytes.get(off..off + len).unwrap_or(&[]).to_vec();
                    seg.resize(ph.p_memsz(e).min(1 << 24) as usize, 0);
                    image.push((ph.p_vaddr(e) + FAKE_BIAS, seg));
                }
            }
        }
        let mut rng = seed | 1;
        let mut stack = vec![0u8; 8192];
        for chunk in stack.chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Mostly small values, stack and code addresses.
            let v = match rng % 4 {
                0 => rng % 4096,
                1 => FAKE_STACK + rng % 8192,
                2 => FAKE_BIAS + 0x1000 + rng % 0x1000,
                _ => rng,
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        image.push((FAKE_STACK, stack));
        let mut regs = zero_regs();
        regs.rip = FAKE_BIAS + 0x11f7;
        regs.rsp = FAKE_STACK + 0x800;
        regs.rbp = FAKE_STACK + 0x900;
        Fake {
            exe: exe.to_path_buf(),
            image,
            regs,
            auxv: vec![(3, FAKE_BIAS + phdr), (9, FAKE_BIAS + entry)],
        }
    }
}

/// An all-zero `user_regs_struct` (spelled out: no `unsafe` zeroing).
fn zero_regs() -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}

impl Target for Fake {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        for (start, data) in &self.image {
            if addr >= *start && addr - start + buf.len() as u64 <= data.len() as u64 {
                let off = (addr - start) as usize;
                buf.copy_from_slice(&data[off..off + buf.len()]);
                return Ok(());
            }
        }
        Err(format!("Cannot access memory at address {addr:#x}"))
    }
    fn regs(&self) -> libc::user_regs_struct {
        self.regs
    }
    fn auxv(&self) -> Vec<(u64, u64)> {
        self.auxv.clone()
    }
    fn exe(&self) -> PathBuf {
        self.exe.clone()
    }
}

/// Ask everything of a program; only panics matter.
fn exercise(t: &dyn Target) {
    let mut prog = Program::new();
    let _ = prog.refresh(t);
    let _ = prog.function_breakpoint("main");
    let _ = prog.function_breakpoint("walk");
    let _ = prog.line_breakpoint("inspect_basic.c", 58);
    let _ = prog.line_breakpoint("inspect_basic.c", 1);
    let pc = t.regs().rip;
    for a in [pc, pc + 7, FAKE_BIAS + 0x1169, FAKE_BIAS + 0x1183] {
        let _ = prog.location(a);
        let _ = prog.line_info(a);
        let _ = prog.function_range(a);
        let _ = prog.symbolize(a);
    }
    let _ = prog.source_lines(Path::new("inspect_basic.c"), 1, 3);
    let _ = prog.disassemble(t, pc, 8);
    for f in prog.backtrace(t, 16) {
        let _ = prog.describe_frame(t, &f);
    }
    let _ = prog.info_locals(t, 0);
    let _ = prog.info_args(t, 0);
    let _ = prog.info_locals(t, 1);
    for e in [
        "counter",
        "*head",
        "n1",
        "matrix[1]",
        "name",
        "bits",
        "un",
        "local",
        "where",
        "argv[0]",
        "&values[2]",
        "$pc",
        "(struct node *)head",
    ] {
        if let Ok(v) = inspect::evaluate(e, &prog, t, 0) {
            let _ = inspect::format_value(&prog, t, &v);
            let _ = inspect::format_value_as(&prog, t, &v, 'x');
        }
    }
    let _ = inspect::examine(&prog, t, "8xw", pc);
    let _ = inspect::examine(&prog, t, "3i", pc);
    let _ = inspect::examine(&prog, t, "2s", FAKE_STACK);
}

#[test]
fn corrupt_files_and_memory_never_panic() {
    for exe in [basic(), build("inspect_basic", &["-g", "-O2"])] {
        mutate_and_exercise(&exe);
    }
}

fn mutate_and_exercise(exe: &Path) {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(exe).unwrap();
    // Where the interesting data is.
    let elf = object::File::parse(&*bytes).unwrap();
    let ranges: Vec<(usize, usize)> = elf
        .sections()
        .filter(|s| {
            let n = s.name().unwrap_or("");
            n.starts_with(".debug")
                || n.starts_with(".eh_frame")
                || n == ".symtab"
                || n == ".dynamic"
                || n == ".text"
        })
        .filter_map(|s| s.file_range().map(|(o, l)| (o as usize, l as usize)))
        .filter(|(_, l)| *l > 0)
        .collect();
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("corrupt-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    // The intact program with garbage memory.
    exercise(&Fake::new(exe, &bytes, 7));
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds: u64 = std::env::var("INSPECT_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(80);
    for round in 0..rounds {
        let mut m = bytes.clone();
        let (off, len) = ranges[(next() % ranges.len() as u64) as usize];
        for _ in 0..1 + next() % 8 {
            let at = off + (next() % len as u64) as usize;
            m[at] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => 0,
            };
        }
        if round % 10 == 0 {
            // Truncated files too.
            m.truncate((next() % m.len() as u64) as usize);
        }
        let path = dir.join(format!("mutant-{round}"));
        std::fs::write(&path, &m).unwrap();
        exercise(&Fake::new(&path, &m, next()));
    }
}

#[test]
fn print_formats_match_gdb() {
    let exe = basic();
    let cases = [
        ("x", "counter"),
        ("x", "origin"),
        ("x", "values"),
        ("d", "port"),
        ("o", "counter"),
        ("t", "counter"),
        ("c", "counter + 60"),
        ("a", "head"),
        ("a", "main"),
        ("x", "name"),
        ("s", "name"),
        ("u", "(char)-1"),
        ("z", "counter"),
        ("x", "-1"),
        ("x", "pi"),
        ("f", "counter"),
        ("x", "bits"),
        ("x", "shade"),
        ("d", "head"),
        ("x", "un"),
    ];
    let exprs: Vec<String> = cases.iter().map(|(f, e)| format!("/{f} {e}")).collect();
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    let want = gdb_prints(&exe, "walk", &[], &exprs);
    let (live, prog) = stopped_in(&exe, "walk");
    let mut bad = Vec::new();
    for ((f, e), w) in cases.iter().zip(&want) {
        let got = match inspect::evaluate(e, &prog, &live, 0) {
            Ok(v) => match inspect::format_value_as(&prog, &live, &v, f.chars().next().unwrap()) {
                Ok(s) | Err(s) => s,
            },
            Err(e) => e.message,
        };
        if &got != w {
            bad.push(format!("print/{f} {e}\n   ours: {got}\n    gdb: {w}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn ptype_and_whatis_match_gdb() {
    let exe = basic();
    let cases = [
        ("ptype", "head"),
        ("ptype", "origin"),
        ("ptype", "struct node"),
        ("ptype", "bits"),
        ("ptype", "shade"),
        ("ptype", "un"),
        ("ptype", "matrix"),
        ("ptype", "op"),
        ("ptype", "main"),
        ("ptype", "int"),
        ("ptype", "point"),
        ("whatis", "origin"),
        ("whatis", "point"),
        ("ptype", "counter"),
        ("whatis", "struct node"),
        ("ptype", "greeting"),
        ("ptype", "enum color"),
        ("ptype", "nosuch"),
        ("whatis", "&matrix"),
        ("ptype", "&origin"),
        ("ptype", "unsigned long"),
        ("whatis", "head->next->value + 1L"),
        ("whatis", "(char)1"),
    ];
    let mut cmds = vec!["break walk".to_string(), "run".to_string()];
    for (c, a) in &cases {
        cmds.push("echo @@\\n".into());
        cmds.push(format!("{c} {a}"));
    }
    cmds.push("echo @@\\n".into());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = gdb(&exe, &cmds);
    let chunks: Vec<&str> = out.split("@@\n").skip(1).collect();
    let (live, prog) = stopped_in(&exe, "walk");
    for ((c, a), want) in cases.iter().zip(chunks) {
        let got = match inspect::describe_type(a, *c == "ptype", &prog, &live, 0) {
            Ok(s) => format!("type = {s}"),
            Err(e) => e.message,
        };
        assert_eq!(got, want.trim_end(), "{c} {a}");
    }
}
