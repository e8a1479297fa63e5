//! Core files of replayed moments, with gdb itself as the oracle: at a
//! breakpoint of a recorded fixture, a core written by `rewind_debugger::
//! gcore` opened by `gdb EXE CORE` shows the registers, backtrace, globals,
//! locals, shared libraries and threads that the timeline and the
//! inspector show at the same moment.

use std::io::Write;
use std::path::{Path, PathBuf};

use rewind_debugger::gcore;
use rewind_debugger::inspect::{evaluate, format_value, Program, Target};
use rewind_debugger::timeline::{Moment, StopReason, Timeline, TimelineOptions};
use rewind_rr::replayer::{self, Console};
use rewind_tests::*;

/// Output the program writes in replay, dropped.
struct Sink;

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open(dir: &Path) -> Timeline {
    let trace = replayer::load(dir).expect("load the trace");
    let console = Console::new(Box::new(Sink), Box::new(Sink));
    Timeline::open(trace, console, TimelineOptions::default()).expect("open the timeline")
}

/// The timeline's current moment, as the inspector reads it.
struct At<'a> {
    tl: &'a Timeline,
    exe: PathBuf,
}

impl Target for At<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.tl
            .replayer()
            .tracee()
            .read_mem(addr, buf)
            .map_err(|e| e.to_string())
    }
    fn regs(&self) -> libc::user_regs_struct {
        self.tl.regs().expect("registers")
    }
    fn auxv(&self) -> Vec<(u64, u64)> {
        gcore::read_auxv(self.tl.replayer().tracee().pid).expect("auxv")
    }
    fn exe(&self) -> PathBuf {
        self.exe.clone()
    }
}

fn program(t: &dyn Target) -> Program {
    let mut prog = Program::new();
    prog.refresh(t).expect("the inspector loads the program");
    prog
}

/// Continue to the `nth` (1-based) arrival at function `name`.
fn to_nth_call(tl: &mut Timeline, exe: &Path, name: &str, nth: usize) {
    let prog = program(&At {
        tl,
        exe: exe.to_path_buf(),
    });
    let locs = prog
        .function_breakpoint(name)
        .unwrap_or_else(|e| panic!("breakpoint at {name}: {e}"));
    tl.breakpoints = locs.iter().map(|l| l.addr).collect();
    for i in 0..nth {
        match tl.cont(&mut |_, _| true).expect("continue") {
            StopReason::Breakpoint(_) => {}
            other => panic!("arrival {} at {name}: stopped by {other:?}", i + 1),
        }
    }
    tl.breakpoints.clear();
}

/// `gdb -batch -nx EXE CORE -ex CMD...`: its stdout, stderr.
fn gdb(exe: &Path, core: &Path, cmds: &[&str]) -> (String, String) {
    let mut gdb = system_program("gdb");
    gdb.env("DEBUGINFOD_URLS", "")
        .args(["-batch", "-nx"])
        .arg(exe)
        .arg(core);
    for c in cmds {
        gdb.args(["-ex", c]);
    }
    let out = gdb.output().expect("run gdb");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The functions of the longest backtrace in gdb's output: runs of
/// `#N  [0xADDR in ] FUNC (...)` lines with N = 0, 1, 2...
fn bt_functions(text: &str) -> Vec<String> {
    let mut best: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for l in text.lines() {
        let Some(frame) = l.strip_prefix('#') else {
            continue;
        };
        let Some((level, rest)) = frame.split_once("  ") else {
            continue;
        };
        if level.trim().parse::<usize>().ok() != Some(run.len()) {
            run.clear();
            if level.trim() != "0" {
                continue;
            }
        }
        let rest = match rest.split_once(" in ") {
            Some((addr, f)) if addr.starts_with("0x") => f,
            _ => rest,
        };
        run.push(rest.split(' ').next().unwrap_or("").to_string());
        if run.len() > best.len() {
            best = run.clone();
        }
    }
    best
}

/// What each `print` showed, after `$N = `.
fn printed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('$'))
        .filter_map(|l| Some(l.split_once(" = ")?.1.to_string()))
        .collect()
}

/// The value of `info registers REG`: `REG   0xHEX   ...`.
fn register(text: &str, reg: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == reg).then_some(())?;
        u64::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()
    })
}

#[test]
fn gdb_sees_the_moment_of_a_core() {
    let scratch = Scratch::new("gcore-demo");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let exe = target("dbg_demo");
    let mut tl = open(&rec.dir);
    // The fourth call of fact: fact(6) -> fact(5) -> fact(4) -> fact(3).
    to_nth_call(&mut tl, &exe, "fact", 4);

    // The oracle: the timeline and the inspector at this moment.
    let at = At {
        tl: &tl,
        exe: exe.clone(),
    };
    let prog = program(&at);
    let regs = tl.regs().expect("registers");
    let frames: Vec<String> = prog
        .backtrace(&at, 64)
        .iter()
        .map(|f| f.function.clone().unwrap_or_default())
        .collect();
    assert_eq!(frames, ["fact", "fact", "fact", "fact", "main"]);
    let exprs = ["origin", "counter", "total", "n", "&origin"];
    let want: Vec<String> = exprs
        .iter()
        .map(|e| {
            let v = evaluate(e, &prog, &at, 0).unwrap_or_else(|err| panic!("{e}: {err:?}"));
            format_value(&prog, &at, &v)
        })
        .collect();
    assert_eq!(want[3], "3", "fact's argument at the fourth call");
    let buf = evaluate("buf", &prog, &at, 4).expect("main's buf");
    let want_buf = format_value(&prog, &at, &buf);

    let core = scratch.join("demo.core");
    let n = gcore::write_core_of(&tl, &exe, &core).expect("write the core");
    let meta = std::fs::metadata(&core).expect("the core exists");
    assert_eq!(meta.len(), n, "the size returned is the file's");
    use std::os::unix::fs::MetadataExt;
    eprintln!("core: {n} bytes, {} on disk", meta.blocks() * 512);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut cmds = vec![
        "info registers rip rsp rbp fs_base mxcsr",
        "print/x $xmm0.uint128",
        "print/x $ymm0.v2_int128[1]",
        "bt",
    ];
    let prints: Vec<String> = exprs.iter().map(|e| format!("print {e}")).collect();
    cmds.extend(prints.iter().map(String::as_str));
    cmds.extend(["frame 4", "print buf", "info sharedlibrary"]);
    let (out, err) = gdb(&exe, &core, &cmds);
    let transcript = format!("gdb stdout:\n{out}\ngdb stderr:\n{err}");
    eprintln!("{transcript}");

    assert_eq!(register(&out, "rip"), Some(regs.rip), "{transcript}");
    assert_eq!(register(&out, "rsp"), Some(regs.rsp), "{transcript}");
    assert_eq!(register(&out, "rbp"), Some(regs.rbp), "{transcript}");
    assert_eq!(
        register(&out, "fs_base"),
        Some(regs.fs_base),
        "{transcript}"
    );
    // The SSE and AVX state, from the xsave area: mxcsr (offset 24), xmm0
    // (160), the upper half of ymm0 (576).
    let xs =
        rewind_ckpt::sys::ptrace::get_xstate(tl.real_thread().expect("thread")).expect("xstate");
    assert_eq!(
        register(&out, "mxcsr"),
        Some(le(&xs[24..28]) as u64),
        "{transcript}"
    );
    assert_eq!(bt_functions(&out), frames, "{transcript}");
    let mut got = printed(&out);
    let vectors: Vec<String> = got.drain(..2).collect();
    assert_eq!(
        vectors,
        [
            format!("{:#x}", le(&xs[160..176])),
            format!("{:#x}", le(&xs[576..592]))
        ],
        "{transcript}"
    );
    let mut want_all = want.clone();
    want_all.push(want_buf);
    // `&origin` prints `(struct point *) 0x... <origin>` in both.
    assert_eq!(got, want_all, "{transcript}");
    let libc_line = out
        .lines()
        .find(|l| l.contains("/libc.so"))
        .unwrap_or_else(|| panic!("libc in info sharedlibrary: {transcript}"));
    assert!(libc_line.starts_with("0x"), "libc is loaded: {libc_line}");
    assert!(
        out.lines().any(|l| l.contains("ld-linux")),
        "the dynamic linker is listed: {transcript}"
    );
    assert!(
        !err.contains("warning") && !err.contains("Cannot access memory"),
        "{transcript}"
    );
}

/// A little-endian integer of up to 16 bytes.
fn le(b: &[u8]) -> u128 {
    b.iter().rev().fold(0u128, |a, &x| a << 8 | u128::from(x))
}

#[test]
fn gdb_sees_the_vector_registers_of_a_core() {
    let scratch = Scratch::new("gcore-simd");
    let rec = record(&scratch, &fixture("simd_regs"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let exe = target("simd_regs");
    let mut tl = open(&rec.dir);
    // A moment in a sleep of hold_ymm, with ymm0-15 holding the fixture's
    // distinct bytes: the first event from half way on where ymm15's upper
    // half is set.
    let xstate = |tl: &Timeline| {
        rewind_ckpt::sys::ptrace::get_xstate(tl.real_thread().expect("thread")).expect("xstate")
    };
    let mut event = tl.events() / 2;
    loop {
        assert!(event < tl.events(), "no moment with ymm15 set");
        tl.goto(&Moment {
            event,
            path: vec![],
        })
        .expect("goto");
        if le(&xstate(&tl)[576 + 16 * 15..592 + 16 * 15]) != 0 {
            break;
        }
        event += 1;
    }
    let xs = xstate(&tl);
    let core = scratch.join("simd.core");
    gcore::write_core_of(&tl, &exe, &core).expect("write the core");
    let mut cmds = vec!["info registers mxcsr".to_string()];
    for r in [0, 5, 15] {
        cmds.push(format!("print/x $xmm{r}.uint128"));
        cmds.push(format!("print/x $ymm{r}.v2_int128[1]"));
    }
    // With AVX-512 (the fixture then holds zmm0-31): the top quarter of a
    // low and of a high zmm, which this CPU may keep at offsets other than
    // the ones gdb 13 assumes (AMD).
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    if avx512 {
        for r in [5, 20] {
            cmds.push(format!("print/x $zmm{r}.v4_int128[3]"));
        }
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (out, err) = gdb(&exe, &core, &cmds);
    let transcript = format!("gdb stdout:\n{out}\ngdb stderr:\n{err}");
    eprintln!("{transcript}");
    assert!(!err.contains("warning"), "{transcript}");
    assert_eq!(
        register(&out, "mxcsr"),
        Some(le(&xs[24..28]) as u64),
        "{transcript}"
    );
    // The xsave area: xmm N at 160 + 16 N, the upper halves of ymm N at
    // 576 + 16 N.
    let mut want = Vec::new();
    for r in [0, 5, 15] {
        let low = le(&xs[160 + 16 * r..176 + 16 * r]);
        let high = le(&xs[576 + 16 * r..592 + 16 * r]);
        assert!(low != 0 && high != 0, "ymm{r} holds the fixture's bytes");
        want.push(format!("{low:#x}"));
        want.push(format!("{high:#x}"));
    }
    if avx512 {
        // This CPU's offsets of ZMM_Hi256 (zmm0-15's upper halves) and
        // Hi16_ZMM (zmm16-31), from CPUID.
        let component = |bit| {
            rewind_ckpt::sys::cpu::xsave_component(bit)
                .expect("AVX-512 state")
                .0
        };
        for (r, at) in [
            (5, component(6) + 32 * 5 + 16),
            (20, component(7) + 64 * 4 + 48),
        ] {
            let top = le(&xs[at..at + 16]);
            assert!(top != 0, "zmm{r} holds the fixture's bytes");
            want.push(format!("{top:#x}"));
        }
    }
    assert_eq!(printed(&out), want, "{transcript}");
}

#[test]
fn gdb_sees_the_threads_of_a_core() {
    let scratch = Scratch::new("gcore-threads");
    let rec = record(&scratch, &fixture("threads_mutex"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let exe = target("threads_mutex");
    let mut tl = open(&rec.dir);
    // The last worker's start: all nine threads exist.
    to_nth_call(&mut tl, &exe, "worker", 8);
    let threads = tl.replayer().threads();
    assert_eq!(threads.len(), 9, "main and eight workers: {threads:?}");
    // The core names threads by their recorded ids, as the program's
    // memory (and so gdb's libthread_db) knows them.
    let current = tl.thread();
    let regs = tl.regs().expect("registers");

    let core = scratch.join("threads.core");
    gcore::write_core_of(&tl, &exe, &core).expect("write the core");
    let (out, err) = gdb(&exe, &core, &["info threads", "info registers rip", "bt 1"]);
    let transcript = format!("gdb stdout:\n{out}\ngdb stderr:\n{err}");
    eprintln!("{transcript}");

    // `[*] N  (Thread 0xADDR (LWP TID)|LWP TID)  ...` lines of `info
    // threads`: every thread once, the selected one current.
    let mut lwps: Vec<(bool, i32)> = out
        .lines()
        .filter_map(|l| {
            let id = l.strip_prefix('*').unwrap_or(l).trim_start();
            id.split(' ').next()?.parse::<u32>().ok()?;
            let at = l.find("LWP ")?;
            let tid = l[at + 4..].split(|c: char| !c.is_ascii_digit()).next()?;
            Some((l.starts_with('*'), tid.parse().ok()?))
        })
        .collect();
    assert!(
        lwps.iter().filter(|t| t.0).map(|t| t.1).eq([current]),
        "the selected thread {current} is gdb's current one: {transcript}"
    );
    lwps.sort_by_key(|t| t.1);
    let mut want: Vec<i32> = threads.iter().map(|t| t.0).collect();
    want.sort();
    assert_eq!(
        lwps.iter().map(|t| t.1).collect::<Vec<_>>(),
        want,
        "{transcript}"
    );
    assert_eq!(register(&out, "rip"), Some(regs.rip), "{transcript}");
    assert!(
        !out.contains("<unavailable>") && !err.contains("warning"),
        "libthread_db sees the core's threads, with registers: {transcript}"
    );
    assert_eq!(
        bt_functions(&out).first().map(String::as_str),
        Some("worker"),
        "{transcript}"
    );
}

#[test]
fn a_core_in_a_missing_directory_fails_clearly() {
    let scratch = Scratch::new("gcore-bad-path");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    let exe = target("dbg_demo");
    let tl = open(&rec.dir);
    let missing = scratch.join("no-such-dir");
    let err = gcore::write_core_of(&tl, &exe, &missing.join("x.core"))
        .expect_err("no directory to write in");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot create core file") && msg.contains("no-such-dir/x.core"),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(!missing.exists());

    // A path that is a directory: nothing left beside it either.
    let dir = scratch.dir("cores");
    let err = gcore::write_core_of(&tl, &exe, &dir).expect_err("a directory is not a file");
    assert!(
        format!("{err:#}").contains("cannot create core file"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(99),
        0,
        "no partial file"
    );
    assert_eq!(
        std::fs::read_dir(scratch.path())
            .expect("list the scratch dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .count(),
        0,
        "no temporary file left"
    );
    // The process is still there to write a good core.
    let core = scratch.join("ok.core");
    assert!(gcore::write_core_of(&tl, &exe, &core).expect("a good path") > 0);
}
