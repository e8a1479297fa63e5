//! ELF core files of a stopped program, for gdb: `gdb EXE CORE` shows the
//! registers, threads, backtrace, variables and shared libraries of the
//! moment the core was written.
//!
//! The layout is Linux's own (`fs/binfmt_elf.c`), hand-written:
//!
//! - the ELF header (ET_CORE, EM_X86_64), then the program headers;
//! - one PT_NOTE first: NT_PRPSINFO, NT_AUXV, NT_FILE, then for each thread
//!   (the selected one first: gdb makes the first NT_PRSTATUS its current
//!   thread) NT_PRSTATUS, NT_FPREGSET and NT_X86_XSTATE — gdb attaches the
//!   register notes that follow an NT_PRSTATUS to its thread;
//! - one PT_LOAD per readable mapping of `/proc/PID/maps`, with its
//!   permissions and its whole contents, page aligned in the file.
//!
//! Mappings left out: unreadable ones (guard pages, `---p`), `[vvar]`
//! (`[vvar_vclock]`) and `[vsyscall]`, which cannot be read through
//! `/proc/PID/mem`. A page of a dumped mapping that cannot be read is
//! written as zeros (the segment keeps its full size, so addresses and file
//! offsets stay simple). Chunks of zeros are left as holes: the file is
//! sparse where the memory was untouched.
//!
//! Memory is read through `/proc/PID/mem`, like the tracee's `read_mem`:
//! the caller must be the process's ptracer and every thread stopped.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use rewind_ckpt::sys::ptrace;

/// What a core file is made of.
pub struct CoreSource<'a> {
    /// The (stopped, ptrace-attached) process to dump.
    pub pid: libc::pid_t,
    /// The threads, the selected one first (gdb shows it as current):
    /// (tid written in the core, real tid whose registers are read). In a
    /// replay the first is the recorded tid, which the program's memory
    /// holds (glibc's `struct pthread`), so that gdb's libthread_db finds
    /// the same threads as the core lists; the pairs of
    /// `Replayer::threads()`. For a live process both are the same.
    pub threads: Vec<(libc::pid_t, libc::pid_t)>,
    /// The executable (NT_PRPSINFO's fname and psargs when the process
    /// shows no command line).
    pub exe: &'a Path,
    /// The program's auxiliary vector (gdb needs AT_ENTRY and AT_PHDR to
    /// relocate a PIE executable, AT_SYSINFO_EHDR to find the vDSO).
    pub auxv: Vec<(u64, u64)>,
}

const PAGE: u64 = 4096;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;

const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
/// More program headers than this need the PN_XNUM extension; a process
/// with that many mappings is refused instead.
const MAX_PHNUM: usize = 0xfffe;

const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_FILE: u32 = 0x4649_4c45;
const NT_X86_XSTATE: u32 = 0x202;
/// Size of the legacy FXSAVE region (user_fpregs_struct).
const FXSAVE_SIZE: usize = 512;
/// Size of struct elf_prstatus on x86-64.
const PRSTATUS_SIZE: usize = 336;
/// Offset of pr_reg in struct elf_prstatus.
const PRSTATUS_REG: usize = 112;
/// Size of struct elf_prpsinfo on x86-64.
const PRPSINFO_SIZE: usize = 136;

/// One mapping of `/proc/PID/maps`.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    flags: u32,
    offset: u64,
    path: String,
}

impl Mapping {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Write an ELF core of `src` to `path` (a temporary file in the same
/// directory, renamed over `path` once complete; mode 0600). Returns the
/// bytes written. On error nothing is left at `path` or beside it.
pub fn write_core(path: &Path, src: &CoreSource) -> Result<u64> {
    if src.threads.is_empty() {
        bail!("cannot write a core file: the program has no threads");
    }
    // Everything that can fail on the program's side first: nothing is
    // created when the process is gone.
    let maps = read_maps(src.pid)?;
    let notes = build_notes(src, &maps)?;
    let mem = File::open(format!("/proc/{}/mem", src.pid))
        .with_context(|| format!("cannot read the memory of process {}", src.pid))?;

    let tmp = temp_path(path)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create core file {}", path.display()))?;
    let written = write_elf(file, &notes, &maps, &mem)
        .with_context(|| format!("writing core file {}", path.display()))
        .and_then(|n| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot create core file {}", path.display()))?;
            Ok(n)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Write a core of the timeline's current moment: its process, its threads
/// (the selected one first), its auxiliary vector.
pub fn write_core_of(tl: &crate::timeline::Timeline, exe: &Path, path: &Path) -> Result<u64> {
    let pid = tl.replayer().tracee().pid;
    let mut threads = tl.replayer().threads();
    if let Some(at) = threads.iter().position(|t| t.0 == tl.thread()) {
        let current = threads.remove(at);
        threads.insert(0, current);
    }
    let auxv = read_auxv(pid)?;
    write_core(
        path,
        &CoreSource {
            pid,
            threads,
            exe,
            auxv,
        },
    )
}

/// The auxiliary vector of process `pid`, from `/proc/PID/auxv`.
pub fn read_auxv(pid: libc::pid_t) -> Result<Vec<(u64, u64)>> {
    let raw = std::fs::read(format!("/proc/{pid}/auxv"))
        .with_context(|| format!("cannot read the auxiliary vector of process {pid}"))?;
    Ok(raw
        .chunks_exact(16)
        .map(|w| (le_u64(&w[..8]), le_u64(&w[8..])))
        .collect())
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// `DIR/.NAME.PID-N.tmp` beside `path`.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        anyhow!(
            "cannot create core file {}: not a file name",
            path.display()
        )
    })?;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp_name))
}

/// The mappings to dump, in address order.
fn read_maps(pid: libc::pid_t) -> Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("cannot read the mappings of process {pid}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let m = parse_maps_line(line)
            .ok_or_else(|| anyhow!("unexpected line in /proc/{pid}/maps: {line:?}"))?;
        if m.flags & PF_R == 0 {
            continue;
        }
        if matches!(m.path.as_str(), "[vvar]" | "[vvar_vclock]" | "[vsyscall]") {
            continue;
        }
        out.push(m);
    }
    if out.len() + 1 > MAX_PHNUM {
        bail!(
            "cannot write a core file of process {pid}: {} mappings is more than an ELF core \
             without extended numbering holds",
            out.len()
        );
    }
    Ok(out)
}

/// `start-end perms offset dev inode [path]`.
fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?.as_bytes();
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let _dev = field()?;
    let _inode = field()?;
    let path = rest.trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start || perms.len() < 3 {
        return None;
    }
    let mut flags = 0;
    if perms[0] == b'r' {
        flags |= PF_R;
    }
    if perms[1] == b'w' {
        flags |= PF_W;
    }
    if perms[2] == b'x' {
        flags |= PF_X;
    }
    Some(Mapping {
        start,
        end,
        flags,
        offset,
        path,
    })
}

/// One ELF note, padded.
fn note(out: &mut Vec<u8>, name: &str, ty: u32, desc: &[u8]) {
    let namesz = name.len() + 1;
    out.extend_from_slice(&(namesz as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(desc);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Fields of `/proc/PID/stat` after the command name: (state, ppid, pgrp,
/// sid).
fn proc_stat(pid: libc::pid_t) -> (u8, i32, i32, i32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text.rfind(')').map(|i| &text[i + 1..]).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
    let state = f.first().and_then(|s| s.bytes().next()).unwrap_or(b't');
    (state, num(1), num(2), num(3))
}

/// Real uid and gid from `/proc/PID/status`.
fn proc_ids(pid: libc::pid_t) -> (u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let first = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (first("Uid:"), first("Gid:"))
}

/// The process id written in the core: the id shown for its leader.
fn shown_pid(src: &CoreSource) -> libc::pid_t {
    src.threads
        .iter()
        .find(|t| t.1 == src.pid)
        .map(|t| t.0)
        .unwrap_or(src.pid)
}

fn prpsinfo(src: &CoreSource) -> Vec<u8> {
    let mut d = vec![0u8; PRPSINFO_SIZE];
    let (state, ppid, pgrp, sid) = proc_stat(src.pid);
    // pr_state: the index of pr_sname in "RSDTZW" (kernel's convention).
    let index = b"RSDTZW".iter().position(|&c| c == state).unwrap_or(3);
    d[0] = index as u8;
    d[1] = state;
    d[2] = u8::from(state == b'Z');
    let (uid, gid) = proc_ids(src.pid);
    put(&mut d, 16, &uid.to_le_bytes());
    put(&mut d, 20, &gid.to_le_bytes());
    put(&mut d, 24, &shown_pid(src).to_le_bytes());
    put(&mut d, 28, &ppid.to_le_bytes());
    put(&mut d, 32, &pgrp.to_le_bytes());
    put(&mut d, 36, &sid.to_le_bytes());
    let fname = src
        .exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fname = fname.as_bytes();
    let n = fname.len().min(15);
    put(&mut d, 40, &fname[..n]);
    // The command line as the process shows it, else the executable.
    let mut args = std::fs::read(format!("/proc/{}/cmdline", src.pid)).unwrap_or_default();
    while args.last() == Some(&0) {
        args.pop();
    }
    if args.is_empty() {
        args = src.exe.to_string_lossy().into_owned().into_bytes();
    }
    for b in args.iter_mut() {
        if *b == 0 {
            *b = b' ';
        }
    }
    let n = args.len().min(79);
    put(&mut d, 56, &args[..n]);
    d
}

fn prstatus(
    tid: libc::pid_t,
    src: &CoreSource,
    regs: &libc::user_regs_struct,
    fpvalid: bool,
) -> Vec<u8> {
    let mut d = vec![0u8; PRSTATUS_SIZE];
    // pr_info and pr_cursig stay 0: the program is not stopped by a
    // signal of its own, and gdb then reports none.
    put(&mut d, 32, &tid.to_le_bytes());
    let (_, ppid, pgrp, sid) = proc_stat(src.pid);
    put(&mut d, 36, &ppid.to_le_bytes());
    put(&mut d, 40, &pgrp.to_le_bytes());
    put(&mut d, 44, &sid.to_le_bytes());
    for (i, v) in rewind_ckpt::capture::regs_to_vec(regs).iter().enumerate() {
        put(&mut d, PRSTATUS_REG + 8 * i, &v.to_le_bytes());
    }
    put(
        &mut d,
        PRSTATUS_REG + 27 * 8,
        &u32::from(fpvalid).to_le_bytes(),
    );
    d
}

/// NT_FILE: the mappings that name a file (count, page size, then
/// (start, end, offset in pages) each, then the names).
fn file_note(maps: &[Mapping]) -> Option<Vec<u8>> {
    let files: Vec<&Mapping> = maps.iter().filter(|m| m.path.starts_with('/')).collect();
    if files.is_empty() {
        return None;
    }
    let mut d = Vec::new();
    d.extend_from_slice(&(files.len() as u64).to_le_bytes());
    d.extend_from_slice(&PAGE.to_le_bytes());
    for m in &files {
        d.extend_from_slice(&m.start.to_le_bytes());
        d.extend_from_slice(&m.end.to_le_bytes());
        d.extend_from_slice(&(m.offset / PAGE).to_le_bytes());
    }
    for m in &files {
        // A deleted file shows " (deleted)" after its name; gdb wants the
        // name.
        let name = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
        d.extend_from_slice(name.as_bytes());
        d.push(0);
    }
    Some(d)
}

fn build_notes(src: &CoreSource, maps: &[Mapping]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    // Registers first: a thread that cannot be read is an error, before
    // any file is created.
    let mut per_thread = Vec::new();
    for &(shown, tid) in &src.threads {
        let regs = ptrace::getregs(tid)
            .map_err(|e| anyhow!("cannot read the registers of thread {tid}: {e}"))?;
        // Without XSAVE state the core still has the general registers.
        let xstate = ptrace::get_xstate(tid)
            .ok()
            .filter(|x| x.len() >= XSAVE_HEADER_END)
            .map(|x| for_gdb(x, rewind_ckpt::sys::cpu::xsave_component));
        per_thread.push((shown, regs, xstate));
    }
    let mut first = true;
    for (tid, regs, xstate) in &per_thread {
        note(
            &mut out,
            "CORE",
            NT_PRSTATUS,
            &prstatus(*tid, src, regs, xstate.is_some()),
        );
        if first {
            // The process-wide notes follow the first thread's status,
            // as in the kernel's cores.
            first = false;
            note(&mut out, "CORE", NT_PRPSINFO, &prpsinfo(src));
            let mut auxv = Vec::with_capacity(src.auxv.len() * 16 + 16);
            for (k, v) in &src.auxv {
                if *k == libc::AT_NULL {
                    break;
                }
                auxv.extend_from_slice(&k.to_le_bytes());
                auxv.extend_from_slice(&v.to_le_bytes());
            }
            auxv.extend_from_slice(&[0u8; 16]);
            note(&mut out, "CORE", NT_AUXV, &auxv);
            if let Some(files) = file_note(maps) {
                note(&mut out, "CORE", NT_FILE, &files);
            }
        }
        if let Some(x) = xstate {
            note(&mut out, "CORE", NT_FPREGSET, &x[..FXSAVE_SIZE]);
            note(&mut out, "LINUX", NT_X86_XSTATE, x);
        }
    }
    Ok(out)
}

/// Offset of XCR0 in the xsave area's software-reserved bytes (where the
/// kernel, and gdb, keep it).
const XCR0_OFFSET: usize = 464;
/// Offset of the XSAVE header's XSTATE_BV.
const XSTATE_BV_OFFSET: usize = 512;
/// End of the XSAVE header: the legacy area and the header.
const XSAVE_HEADER_END: usize = 576;

/// Intel's standard (non-compacted) XSAVE layout, which gdb 13 assumes
/// whatever the CPU: (XCR0 bit, offset, size) of each component it knows.
const INTEL_LAYOUT: [(u32, usize, usize); 7] = [
    (2, 576, 256),   // AVX (YMM_Hi128)
    (3, 960, 64),    // MPX BNDREGS
    (4, 1024, 64),   // MPX BNDCSR
    (5, 1088, 64),   // AVX-512 opmask
    (6, 1152, 512),  // AVX-512 ZMM_Hi256
    (7, 1664, 1024), // AVX-512 Hi16_ZMM
    (9, 2688, 8),    // PKRU
];

/// The xsave area as gdb 13 can read it. gdb 13 derives the layout from
/// XCR0 alone, with Intel's offsets, and rejects the whole note (losing even
/// the SSE and AVX registers) when it is not exactly the size that layout
/// gives. This CPU's layout (`locate`: CPUID leaf 0xD) may differ: AMD
/// processors without MPX place AVX-512 at 832/896/1408 and PKRU at 2432 or
/// 2440. So every component gdb knows is moved to Intel's offset (gaps, such
/// as MPX on a CPU without it, stay zero), and the others (AMX tiles, say,
/// which gdb 13 does not show) are left out of the core's XCR0 and
/// XSTATE_BV and cut.
fn for_gdb(x: Vec<u8>, locate: impl Fn(u32) -> Option<(usize, usize)>) -> Vec<u8> {
    let xcr0 = le_u64(&x[XCR0_OFFSET..XCR0_OFFSET + 8]);
    let mut out = x[..XSAVE_HEADER_END].to_vec();
    let mut keep = 0b11u64; // x87 and SSE, in the legacy area
    for (bit, at, len) in INTEL_LAYOUT {
        if xcr0 & (1 << bit) == 0 {
            continue;
        }
        let Some((from, n)) = locate(bit) else {
            continue;
        };
        if n != len || from + n > x.len() {
            continue;
        }
        if out.len() < at + len {
            out.resize(at + len, 0);
        }
        out[at..at + len].copy_from_slice(&x[from..from + n]);
        keep |= 1 << bit;
    }
    for at in [XCR0_OFFSET, XSTATE_BV_OFFSET] {
        let v = le_u64(&out[at..at + 8]) & keep;
        put(&mut out, at, &v.to_le_bytes());
    }
    out
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// The ELF file: header, program headers, notes, then the memory.
fn write_elf(file: File, notes: &[u8], maps: &[Mapping], mem: &File) -> Result<u64> {
    let phnum = maps.len() + 1;
    let notes_at = EHDR_SIZE + PHDR_SIZE * phnum as u64;
    let data_at = align_up(notes_at + notes.len() as u64, PAGE);

    let mut head = Vec::with_capacity(data_at as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE.
    head.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    head.extend_from_slice(&[0u8; 8]);
    head.extend_from_slice(&ET_CORE.to_le_bytes());
    head.extend_from_slice(&EM_X86_64.to_le_bytes());
    head.extend_from_slice(&1u32.to_le_bytes()); // e_version
    head.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    head.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
    head.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    head.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    head.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    head.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    head.extend_from_slice(&(phnum as u16).to_le_bytes());
    head.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    head.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    head.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx

    let mut phdr = |ty: u32, flags: u32, offset: u64, vaddr: u64, filesz: u64, align: u64| {
        head.extend_from_slice(&ty.to_le_bytes());
        head.extend_from_slice(&flags.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        head.extend_from_slice(&vaddr.to_le_bytes());
        head.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
        head.extend_from_slice(&filesz.to_le_bytes());
        head.extend_from_slice(&filesz.to_le_bytes()); // p_memsz
        head.extend_from_slice(&align.to_le_bytes());
    };
    phdr(PT_NOTE, 0, notes_at, 0, notes.len() as u64, 0);
    let mut at = data_at;
    for m in maps {
        phdr(PT_LOAD, m.flags, at, m.start, m.len(), PAGE);
        at += m.len();
    }
    head.extend_from_slice(notes);
    head.resize(data_at as usize, 0);

    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&head)?;
    let mut total = head.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    for m in maps {
        let mut addr = m.start;
        while addr < m.end {
            let n = (m.end - addr).min(buf.len() as u64) as usize;
            read_or_zero(mem, addr, &mut buf[..n]);
            write_sparse(&mut w, &buf[..n])?;
            addr += n as u64;
            total += n as u64;
        }
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    // A hole at the end still counts. (No fsync: a core is a debugging
    // artifact, and the rename already makes it appear whole or not at
    // all to other processes.)
    file.set_len(total)?;
    Ok(total)
}

/// Write `data`, leaving its pages of zeros as holes (seeking over them):
/// untouched memory costs no disk.
fn write_sparse(w: &mut BufWriter<File>, data: &[u8]) -> Result<()> {
    let page = PAGE as usize;
    let is_zero = |at: usize| {
        data[at..(at + page).min(data.len())]
            .iter()
            .all(|&b| b == 0)
    };
    let mut at = 0;
    while at < data.len() {
        let zero = is_zero(at);
        let mut end = (at + page).min(data.len());
        while end < data.len() && is_zero(end) == zero {
            end = (end + page).min(data.len());
        }
        if zero {
            w.seek(SeekFrom::Current((end - at) as i64))?;
        } else {
            w.write_all(&data[at..end])?;
        }
        at = end;
    }
    Ok(())
}

/// Fill `buf` from `addr`; pages that cannot be read become zeros.
fn read_or_zero(mem: &File, addr: u64, buf: &mut [u8]) {
    if mem.read_exact_at(buf, addr).is_ok() {
        return;
    }
    for (i, page) in buf.chunks_mut(PAGE as usize).enumerate() {
        if mem.read_exact_at(page, addr + i as u64 * PAGE).is_err() {
            page.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let m = parse_maps_line(
            "7f0000001000-7f0000003000 r-xp 00002000 08:01 1234     /usr/lib/a b.so (deleted)",
        )
        .expect("parses");
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f0000001000, 0x7f0000003000, 0x2000)
        );
        assert_eq!(m.flags, PF_R | PF_X);
        assert_eq!(m.path, "/usr/lib/a b.so (deleted)");
        let anon = parse_maps_line("1000-2000 rw-p 00000000 00:00 0").expect("parses");
        assert_eq!(anon.path, "");
        assert_eq!(anon.flags, PF_R | PF_W);
        assert!(parse_maps_line("garbage").is_none());
    }

    /// A fake CPU layout: (bit, offset, size).
    fn layout(parts: &'static [(u32, usize, usize)]) -> impl Fn(u32) -> Option<(usize, usize)> {
        move |bit| parts.iter().find(|p| p.0 == bit).map(|p| (p.1, p.2))
    }

    /// An xsave area of `len` bytes whose every component byte is its XCR0
    /// bit number, at `parts`' offsets.
    fn area(len: usize, xcr0: u64, parts: &[(u32, usize, usize)]) -> Vec<u8> {
        let mut x = vec![0u8; len];
        put(&mut x, XCR0_OFFSET, &xcr0.to_le_bytes());
        put(&mut x, XSTATE_BV_OFFSET, &xcr0.to_le_bytes());
        for &(bit, at, n) in parts {
            x[at..at + n].fill(bit as u8);
        }
        x
    }

    #[test]
    fn xstate_fits_gdb_13() {
        // AMD without AVX-512: AVX, and PKRU at 2432 in 2440 bytes.
        const AMD: &[(u32, usize, usize)] = &[(2, 576, 256), (9, 2432, 8)];
        let y = for_gdb(area(2440, 0x207, AMD), layout(AMD));
        assert_eq!(y.len(), 2696);
        assert_eq!(le_u64(&y[XCR0_OFFSET..]), 0x207);
        assert!(y[576..832].iter().all(|&b| b == 2));
        assert!(y[2688..2696].iter().all(|&b| b == 9));
        assert!(y[832..2688].iter().all(|&b| b == 0));
        // AMD with AVX-512 (Zen 4): opmask, ZMM_Hi256, Hi16_ZMM at 832, 896,
        // 1408, in 2432 bytes; gdb wants them at Intel's offsets, in 2688.
        const ZEN4: &[(u32, usize, usize)] =
            &[(2, 576, 256), (5, 832, 64), (6, 896, 512), (7, 1408, 1024)];
        let y = for_gdb(area(2432, 0xe7, ZEN4), layout(ZEN4));
        assert_eq!(y.len(), 2688);
        assert_eq!(le_u64(&y[XCR0_OFFSET..]), 0xe7);
        for (bit, at, n) in [(5u8, 1088, 64), (6, 1152, 512), (7, 1664, 1024)] {
            assert!(y[at..at + n].iter().all(|&b| b == bit), "component {bit}");
        }
        // Intel with AVX-512 and PKRU: unchanged.
        const INTEL: &[(u32, usize, usize)] = &[
            (2, 576, 256),
            (5, 1088, 64),
            (6, 1152, 512),
            (7, 1664, 1024),
            (9, 2688, 8),
        ];
        let x = area(2696, 0x2e7, INTEL);
        assert_eq!(for_gdb(x.clone(), layout(INTEL)), x);
        // AMX tiles (bits 17, 18) are cut and left out of XCR0.
        const AMX: &[(u32, usize, usize)] = &[(2, 576, 256), (17, 2752, 64), (18, 2816, 8192)];
        let y = for_gdb(area(11008, 0x60007, AMX), layout(AMX));
        assert_eq!((y.len(), le_u64(&y[XCR0_OFFSET..])), (832, 0x7));
    }

    #[test]
    fn notes_are_padded() {
        let mut v = Vec::new();
        note(&mut v, "LINUX", 0x202, &[1, 2, 3]);
        // 12 header + "LINUX\0" padded to 8 + 3 padded to 4.
        assert_eq!(v.len(), 12 + 8 + 4);
        assert_eq!(&v[0..4], &6u32.to_le_bytes());
    }
}
