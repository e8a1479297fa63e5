//! The in-process syscall buffer (issue 3; rr's syscallbuf, our own code).
//!
//! `rewind record` maps a small block of code (sbuf/blob.c, built by
//! build.rs) and a buffer at the fixed address `BASE` in the recorded
//! program, right after its exec. The seccomp filter lets syscalls made by
//! that code through (`filter_all_but_ranges`). When a syscall of the
//! buffered set (`buffered`) is trapped at a site whose instructions match
//! a known pattern (`pattern`), the recorder patches the site with a jump
//! to a stub (`stub`) in a stub area near it; from then on the call goes
//! to the blob, which makes it without any ptrace stop and appends a record
//! (`nr`, arguments, result, the memory the kernel wrote) to the buffer.
//! The recorder flushes the buffer into the trace (`Event::Buffered`) at
//! every stop of the thread that runs, before that stop's own event, so the
//! trace order stays exact; a patch is an `Event::Patch`.
//!
//! Replay applies the same patches at the same events and loads each
//! `Buffered` event into the buffer of the same process; the blob, in
//! replay mode, copies the next record's memory and result instead of
//! calling the kernel (no IO, no stop). A call it does not take (no record
//! left, or a different call: a divergence the next event reveals) goes
//! through the traced path. Which calls are buffered is decided only while
//! recording (fd kinds, room, a held signal): replay follows the records.
//!
//! Layout at `BASE`: code (`CODE_LEN`, r-x, the only range the filter
//! lets through), the control page (`CTL`), the blob's stack, then the
//! records (`DATA`, `DATA_LEN` bytes). A record is `REC_HEADER` bytes
//! (u32 size, u32 nr, 6 u64 args, i64 ret, u64 address, u64 length) then
//! the written bytes, padded to 8.

use libc::pid_t;
use rewind_ckpt::tracee::Tracee;

use crate::Error;

pub const BASE: u64 = 0x2000_0000_0000;
pub const CODE_LEN: u64 = 0x10000;
pub const CTL: u64 = BASE + 0x10000;
pub const DATA: u64 = BASE + 0x20000;
pub const DATA_LEN: u64 = 1 << 20;
pub const LEN: u64 = 0x20000 + DATA_LEN;
pub const MAGIC: u64 = u64::from_le_bytes(*b"RWSBUF01");
pub const REC_HEADER: usize = 80;
const MODE_RECORD: u32 = 1;
const MODE_REPLAY: u32 = 2;
const OFF_FORCE: u64 = 12;
const OFF_POS: u64 = 16;
const OFF_READ_OK: u64 = 128;
const OFF_WRITE_OK: u64 = 256;
/// A stub area: slot 0 holds the blob's entry address, then 64-byte stubs.
pub const AREA_LEN: u64 = 0x10000;
const SLOT: u64 = 64;

static CODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sbuf.bin"));

/// The syscalls the blob may take (with arguments it accepts: reads and
/// writes only on descriptors the recorder marked).
pub fn buffered(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_write
            | libc::SYS_pread64
            | libc::SYS_pwrite64
            | libc::SYS_lseek
            | libc::SYS_getpid
            | libc::SYS_fstat
            | libc::SYS_newfstatat
            | libc::SYS_clock_gettime
            | libc::SYS_gettimeofday
    )
}

/// Whether `addr` is in the buffer's mapping (left out of memory
/// checksums: its contents differ between record and replay).
pub fn contains(addr: u64) -> bool {
    (BASE..BASE + LEN).contains(&addr)
}

/// Whether `rip` is in the blob's code.
pub fn in_code(rip: u64) -> bool {
    (BASE..BASE + CODE_LEN).contains(&rip)
}

/// Map a stub area at `area` in the stopped thread `tid` (record and
/// replay alike): the kernel's answer, `area` when it worked.
pub fn map_area(tracee: &Tracee, tid: pid_t, area: u64) -> Result<i64, Error> {
    Ok(rewind_ckpt::tracee::syscall_in_place(
        tracee,
        tid,
        libc::SYS_mmap,
        &[
            area,
            AREA_LEN,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )?)
}

fn ctl_page(mode: u32) -> Vec<u8> {
    let mut c = vec![0u8; 4096];
    c[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    c[8..12].copy_from_slice(&mode.to_le_bytes());
    c[32..40].copy_from_slice(&DATA_LEN.to_le_bytes());
    c
}

/// Map the blob and its buffer into the stopped thread `tid` (just after
/// an exec), in record mode. False when the address is taken.
pub fn install(tracee: &Tracee, tid: pid_t) -> Result<bool, Error> {
    let ret = rewind_ckpt::tracee::syscall_in_place(
        tracee,
        tid,
        libc::SYS_mmap,
        &[
            BASE,
            LEN,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )?;
    if ret as u64 != BASE {
        return Ok(false);
    }
    tracee.write_mem(BASE, CODE)?;
    tracee.write_mem(CTL, &ctl_page(MODE_RECORD))?;
    let ret = rewind_ckpt::tracee::syscall_in_place(
        tracee,
        tid,
        libc::SYS_mprotect,
        &[BASE, CODE_LEN, (libc::PROT_READ | libc::PROT_EXEC) as u64],
    )?;
    if ret != 0 {
        return Err(rewind_ckpt::Error::Tracee(format!(
            "syscall buffer: mprotect: {}",
            rewind_ckpt::tracee::errno_text(ret)
        ))
        .into());
    }
    Ok(true)
}

/// Whether the process has the blob (an image recorded with it).
pub fn present(tracee: &Tracee) -> bool {
    tracee.read_u64(CTL).is_ok_and(|m| m == MAGIC)
}

/// Put a restored process's buffer in replay mode, empty.
pub fn start_replay(tracee: &Tracee) -> Result<(), Error> {
    let mut head = [0u8; 32];
    head[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    head[8..12].copy_from_slice(&MODE_REPLAY.to_le_bytes());
    tracee.write_mem(CTL, &head)?;
    Ok(())
}

/// Record mode: the bytes of records made since the last flush, and the
/// buffer emptied (and the "trace the next call" request cleared).
pub fn take(tracee: &Tracee) -> Result<Vec<u8>, Error> {
    let mut head = [0u8; 16];
    tracee.read_mem(CTL + 8, &mut head)?;
    let force = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let pos = u64::from_le_bytes([
        head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
    ]);
    if pos == 0 {
        if force != 0 {
            tracee.write_mem(CTL + OFF_FORCE, &0u32.to_le_bytes())?;
        }
        return Ok(Vec::new());
    }
    let mut data = vec![0u8; pos.min(DATA_LEN) as usize];
    tracee.read_mem(DATA, &mut data)?;
    let mut reset = [0u8; 12];
    reset[4..12].copy_from_slice(&0u64.to_le_bytes());
    tracee.write_mem(CTL + OFF_FORCE, &reset)?;
    Ok(data)
}

/// Record mode: make the blob leave the next buffered call to the traced
/// path (a signal waits for the thread's next syscall exit).
pub fn force_slow(tracee: &Tracee) -> Result<(), Error> {
    tracee.write_mem(CTL + OFF_FORCE, &1u32.to_le_bytes())?;
    Ok(())
}

/// Record mode: mark descriptor `fd` as one whose reads (`write` false) or
/// writes the blob takes.
pub fn mark_fd(
    tracee: &Tracee,
    bits: &mut [u8; 128],
    write: bool,
    fd: u64,
    on: bool,
) -> Result<(), Error> {
    if fd >= 1024 {
        return Ok(());
    }
    if is_marked(bits, fd) == on {
        return Ok(());
    }
    let (i, b) = ((fd / 8) as usize, 1u8 << (fd % 8));
    if on {
        bits[i] |= b;
    } else {
        bits[i] &= !b;
    }
    let off = if write { OFF_WRITE_OK } else { OFF_READ_OK };
    tracee.write_mem(CTL + off + i as u64, &bits[i..=i])?;
    Ok(())
}

/// Whether descriptor `fd` is marked in `bits` (see [`mark_fd`]).
pub fn is_marked(bits: &[u8; 128], fd: u64) -> bool {
    fd < 1024 && bits[fd as usize / 8] >> (fd % 8) & 1 != 0
}

/// Record mode: forget every marked descriptor.
pub fn clear_fds(
    tracee: &Tracee,
    read: &mut [u8; 128],
    write: &mut [u8; 128],
) -> Result<(), Error> {
    *read = [0; 128];
    *write = [0; 128];
    tracee.write_mem(CTL + OFF_READ_OK, &[0u8; 256])?;
    Ok(())
}

/// Check that `data` is a sequence of well-formed records; their number.
pub fn check_records(data: &[u8]) -> Result<usize, String> {
    let mut at = 0usize;
    let mut n = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < REC_HEADER {
            return Err(format!("record {n} is cut short ({} bytes)", rest.len()));
        }
        let size = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let wlen = u64::from_le_bytes([
            rest[72], rest[73], rest[74], rest[75], rest[76], rest[77], rest[78], rest[79],
        ]);
        let want = REC_HEADER as u64 + wlen.div_ceil(8) * 8;
        if size as u64 != want || size > rest.len() {
            return Err(format!(
                "record {n} says {size} bytes with {wlen} written ({} left)",
                rest.len()
            ));
        }
        at += size;
        n += 1;
    }
    Ok(n)
}

/// Replay mode: where the blob is in the records loaded, and their end.
fn cursor(tracee: &Tracee) -> Result<(u64, u64), rewind_ckpt::Error> {
    let mut head = [0u8; 16];
    tracee.read_mem(CTL + OFF_POS, &mut head)?;
    let pos = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
    let end = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    Ok((pos, end))
}

/// Replay mode: append `data` (records) to what the thread has not
/// consumed yet of the buffer.
pub fn load(tracee: &Tracee, data: &[u8]) -> Result<(), String> {
    let (pos, end) = cursor(tracee).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    if end > pos && end <= DATA_LEN {
        all = vec![0u8; (end - pos) as usize];
        tracee
            .read_mem(DATA + pos, &mut all)
            .map_err(|e| e.to_string())?;
    }
    all.extend_from_slice(data);
    if all.len() as u64 > DATA_LEN {
        return Err(format!(
            "{} bytes of buffered syscalls not consumed: more than the buffer holds",
            all.len()
        ));
    }
    tracee.write_mem(DATA, &all).map_err(|e| e.to_string())?;
    let mut h = [0u8; 16];
    h[8..16].copy_from_slice(&(all.len() as u64).to_le_bytes());
    tracee
        .write_mem(CTL + OFF_POS, &h)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Replay mode: bytes of records loaded and not yet consumed.
pub fn unconsumed(tracee: &Tracee) -> u64 {
    cursor(tracee).map_or(0, |(pos, end)| end.saturating_sub(pos))
}

/// How a syscall site is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `mov $nr,%eax; syscall`: the mov becomes `jmp stub`; the
    /// instructions after the syscall are untouched.
    Mov,
    /// `xor %eax,%eax; syscall; cmp $-4096,%rax` (read): becomes
    /// `jmp stub` whose displacement's top byte (0x48) and the bytes after
    /// it decode, from the old return point, as the same `cmp`.
    Xor,
}

/// `code` holds the 16 bytes from `site - 6` (`site`: the syscall
/// instruction of a trapped call to `nr`).
pub fn pattern(code: &[u8; 16], nr: i64) -> Option<Pattern> {
    if code[6..8] != [0x0f, 0x05] {
        return None;
    }
    let rex = |b: u8| (0x40..=0x4f).contains(&b);
    let mut mov = [0xb8u8, 0, 0, 0, 0];
    mov[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
    if code[1..6] == mov && !rex(code[0]) {
        return Some(Pattern::Mov);
    }
    if nr == 0
        && code[4..6] == [0x31, 0xc0]
        && !rex(code[3])
        && code[8..14] == [0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff]
    {
        return Some(Pattern::Xor);
    }
    None
}

/// The window of addresses a stub for `site` may have.
pub fn stub_window(site: u64, p: Pattern) -> (u64, u64) {
    match p {
        // jmp at site-2 ends at site+3; displacement 0x48xxxxxx.
        Pattern::Xor => (site + 3 + 0x4800_0000, site + 3 + 0x48ff_ffc0),
        Pattern::Mov => (site + 0x4800_0000, site + 0x48ff_ffc0),
    }
}

/// Where a new stub area for `site` goes.
pub fn new_area(site: u64, p: Pattern) -> u64 {
    stub_window(site, p).0.div_ceil(AREA_LEN) * AREA_LEN
}

/// The slot of area `area` for stub number `i` (from 1).
pub fn slot(area: u64, i: u64) -> u64 {
    area + i * SLOT
}

pub const SLOTS: u64 = AREA_LEN / SLOT;

/// The first bytes of a new stub area: the blob's entry address.
pub fn area_header() -> Vec<u8> {
    BASE.to_le_bytes().to_vec()
}

fn rel32(from_end: u64, to: u64) -> [u8; 4] {
    (to.wrapping_sub(from_end) as i64 as i32).to_le_bytes()
}

/// The stub at `at` (in area `area`) for the call to `nr` at `site`.
pub fn stub(at: u64, area: u64, nr: i64, site: u64, p: Pattern) -> Vec<u8> {
    let nr32 = (nr as u32).to_le_bytes();
    let mut s = Vec::with_capacity(64);
    s.extend([0x48, 0x8d, 0x64, 0x24, 0x80]); // lea -0x80(%rsp),%rsp
    s.push(0x68); // push $nr
    s.extend(nr32);
    s.extend([0xff, 0x15]); // call *area(%rip)
    s.extend(rel32(at + 16, area));
    // Slow point (at+16): the call is made traced: at the site's own
    // syscall instruction when the patch left it (Mov: the program is
    // where it would be without the buffer, for debuggers and
    // backtraces), else here.
    s.extend([0x48, 0x8d, 0xa4, 0x24, 0x88, 0, 0, 0]); // lea 0x88(%rsp),%rsp
    s.push(0xb8); // mov $nr,%eax
    s.extend(nr32);
    match p {
        Pattern::Mov => {
            s.push(0xe9); // jmp site
            s.extend(rel32(at + 34, site));
        }
        Pattern::Xor => {
            s.extend([0x0f, 0x05]); // syscall
            s.extend([0xeb, 0x09, 0x90]); // jmp tail; nop
        }
    }
    // Done point (at+34): the blob took it.
    s.extend([0x48, 0x8d, 0xa4, 0x24, 0x88, 0, 0, 0]); // lea 0x88(%rsp),%rsp
                                                       // Tail (at+42): what followed the syscall, then back.
    let back = match p {
        Pattern::Mov => site + 2,
        Pattern::Xor => {
            s.extend([0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff]);
            site + 8
        }
    };
    s.push(0xe9);
    let end = at + s.len() as u64 + 4;
    s.extend(rel32(end, back));
    s
}

/// The bytes written at the site (and where) to jump to the stub at `to`;
/// None when the displacement does not fit the pattern.
pub fn site_patch(site: u64, p: Pattern, to: u64) -> Option<(u64, Vec<u8>)> {
    match p {
        Pattern::Mov => {
            let d = to as i64 - site as i64;
            if i32::try_from(d).is_err() {
                return None;
            }
            let mut b = vec![0xe9];
            b.extend(rel32(site, to));
            Some((site - 5, b))
        }
        Pattern::Xor => {
            let d = to.wrapping_sub(site + 3);
            if d >> 24 != 0x48 {
                return None;
            }
            let mut b = vec![0xe9];
            b.extend((d as u32).to_le_bytes());
            b.extend([0x3d, 0x00, 0xf0, 0xff, 0xff]);
            Some((site - 2, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_of_glibc_wrappers() {
        // __lseek: mov $8,%eax; syscall; cmp
        let mut c = [0u8; 16];
        c[1..8].copy_from_slice(&[0xb8, 8, 0, 0, 0, 0x0f, 0x05]);
        assert_eq!(pattern(&c, 8), Some(Pattern::Mov));
        assert_eq!(pattern(&c, 9), None);
        c[0] = 0x41; // mov $8,%r8d
        assert_eq!(pattern(&c, 8), None);
        // __read: xor %eax,%eax; syscall; cmp $-4096,%rax
        let mut r = [0x90u8; 16];
        r[4..14].copy_from_slice(&[0x31, 0xc0, 0x0f, 0x05, 0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff]);
        assert_eq!(pattern(&r, 0), Some(Pattern::Xor));
        r[9] = 0x83;
        assert_eq!(pattern(&r, 0), None);
    }

    #[test]
    fn xor_patch_keeps_the_old_return_point_a_cmp() {
        let site = 0x7f12_3456_7000u64;
        let area = new_area(site, Pattern::Xor);
        let at = slot(area, 1);
        let (from, bytes) = site_patch(site, Pattern::Xor, at).expect("fits");
        assert_eq!(from, site - 2);
        assert_eq!(bytes.len(), 10);
        // From site+2: 48 3d 00 f0 ff ff.
        assert_eq!(&bytes[4..10], &[0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff]);
        let s = stub(at, area, 0, site, Pattern::Xor);
        assert!(s.len() as u64 <= SLOT);
        assert_eq!(&s[34..42], &[0x48, 0x8d, 0xa4, 0x24, 0x88, 0, 0, 0]);
        assert_eq!(&s[16..24], &[0x48, 0x8d, 0xa4, 0x24, 0x88, 0, 0, 0]);
        // The Mov pattern's slow point jumps back to the site's syscall.
        let site = 0x7f12_3456_8000u64;
        let s = stub(at, area, 1, site, Pattern::Mov);
        assert_eq!(s[29], 0xe9);
        let rel = i32::from_le_bytes([s[30], s[31], s[32], s[33]]) as i64;
        assert_eq!((at as i64 + 34 + rel) as u64, site);
        assert_eq!(&s[34..42], &[0x48, 0x8d, 0xa4, 0x24, 0x88, 0, 0, 0]);
    }

    #[test]
    fn records_are_checked() {
        let mut r = vec![0u8; REC_HEADER + 8];
        r[0..4].copy_from_slice(&(88u32).to_le_bytes());
        r[72..80].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(check_records(&r), Ok(1));
        r[72] = 9;
        assert!(check_records(&r).is_err());
        assert!(check_records(&r[..40]).is_err());
    }
}
