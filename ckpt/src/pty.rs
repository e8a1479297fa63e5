//! Pseudo-terminals the program made itself (issue 7): a process of the
//! checkpoint opened /dev/ptmx (`script`, `expect`, a terminal multiplexer,
//! a harness driving an interactive shell) and holds the master.
//!
//! At a checkpoint a [`Census`] looks at every descriptor of every process
//! of the tree: the masters (/dev/ptmx, with a `tty-index` in fdinfo) name
//! the program's ptys; their slaves (/dev/pts/N) are grouped by open file
//! (`kcmp`). For each pty, through a copy of its master and a slave of
//! rewind's own (TIOCGPTPEER), it reads the settings (termios, locked
//! termios, window size, packet mode, lock, exclusive mode), the session
//! it is the controlling terminal of and its foreground process group, and
//! the bytes in flight both ways, which it takes and puts straight back:
//!
//! - output waiting for the master's reader is read from the master (packet
//!   mode off meanwhile) and written again through the slave with output
//!   processing off (OPOST), so it arrives as it was;
//! - input waiting for the slave's reader is read from the slave: in
//!   canonical mode complete lines first, one read each (so lines ended by
//!   EOF are told apart), then, canonical mode off, the line being typed.
//!   It goes back through the line discipline at once (TIOCSTI, one byte
//!   at a time) under settings that only store it: echo, signals and input
//!   mapping off, erase and kill characters disabled, literal special
//!   characters escaped with LNEXT, lines ended by their own terminator or
//!   by EOF. The program's settings come back after, so a partial line is
//!   still being typed, and is edited, as before.
//!
//! Exact: line contents and boundaries, EOF marks, the partial line,
//! output bytes, settings. Not kept: the line discipline's column (where an
//! erase's echo goes back to, tab expansion), a pending packet-mode status
//! byte, a stopped output (^S); input beyond the line discipline's 4 KiB
//! (still in the pty's own buffer) goes back through the master after the
//! settings, so it is processed again (its echo repeats; a warning says so).
//!
//! At restart [`Rebuilt`] makes every pty of the images once, in rewind,
//! before any process exists: /dev/ptmx is opened until it gives the old
//! index (the kernel hands out the lowest free one; CRIU's way), else
//! another index with a warning; the slave's open files are opened from
//! the master; settings and bytes in flight are put back as above. Each
//! process takes its descriptors from rewind (an injected `pidfd_getfd`, as
//! for sockets), so descriptors that shared an open file share one again.
//! A session leader whose controlling terminal it was takes it back
//! (TIOCSCTTY) in its husk before any of its children is forked (so they
//! inherit it), and once every husk exists the foreground process group
//! is set again (TIOCSPGRP).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use libc::pid_t;
use nix::errno::Errno;

use crate::image::format::{FdKind, ProcessState, PtyState, Termios};
use crate::sys::tty::{self, Termios2};
use crate::tracee::{self, Tracee};
use crate::vids::VirtualIds;
use crate::Error;

/// Major number of Unix98 pty slaves (/dev/pts/N is (136, N)).
const PTS_MAJOR: u64 = 136;
/// What the line discipline holds (N_TTY_BUF_SIZE less one).
const LDISC_ROOM: usize = 4095;
/// How long a write into a pty may wait for room.
const WRITE_PATIENCE: Duration = Duration::from_secs(5);
/// At most this many reads of lines (the line discipline and the pty's
/// buffer hold far fewer).
const MAX_READS: usize = 1 << 16;

/// The ptys of a program's tree, read at a checkpoint (the program is
/// stopped), by index.
#[derive(Default)]
pub struct Census {
    ptys: BTreeMap<u32, PtyState>,
    /// (pid, fd) -> (index, master, file).
    ends: HashMap<(pid_t, RawFd), (u32, bool, u32)>,
    /// A descriptor of each open file of each pty's slave, by index: file
    /// n + 1 is `slave_files[index][n]`.
    slave_files: BTreeMap<u32, Vec<End>>,
    warnings: Vec<String>,
}

/// An end of a pty found in a process: (pid, fd).
type End = (pid_t, RawFd);

impl Census {
    /// Read every pty whose master a process of `pids` holds (`vids`
    /// turns the kernel's session and group ids into the program's).
    pub fn take(pids: &[pid_t], vids: &VirtualIds) -> Result<Census, Error> {
        let mut masters: BTreeMap<u32, Vec<(End, String)>> = BTreeMap::new();
        let mut slaves: BTreeMap<u32, Vec<End>> = BTreeMap::new();
        for &pid in pids {
            let dir = format!("/proc/{pid}/fd");
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut fds: Vec<RawFd> = entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            fds.sort_unstable();
            for fd in fds {
                match pty_end(pid, fd) {
                    Some(PtyEnd::Master(index, link)) => {
                        masters.entry(index).or_default().push(((pid, fd), link))
                    }
                    Some(PtyEnd::Slave(index)) => slaves.entry(index).or_default().push((pid, fd)),
                    None => {}
                }
            }
        }
        let mut census = Census::default();
        for (index, ms) in masters {
            let ((pid, fd), ptmx) = ms[0].clone();
            let master = crate::sys::process::pidfd_getfd(pid, fd).map_err(|e| {
                Error::Tracee(format!(
                    "pty {index}: cannot copy the master (fd {fd} of process {pid}): {}",
                    e.desc()
                ))
            })?;
            let state = read_pty(&master, index, ptmx, vids, &mut census.warnings)?;
            for &((p, f), _) in &ms {
                census.ends.insert((p, f), (index, true, 0));
            }
            // Slaves by open file: descriptors the kernel says share one.
            let mut files: Vec<End> = Vec::new();
            for &(p, f) in slaves.get(&index).map(Vec::as_slice).unwrap_or(&[]) {
                let mut known = None;
                for (n, &(rp, rf)) in files.iter().enumerate() {
                    match tty::same_file(rp, rf, p, f) {
                        Ok(true) => {
                            known = Some(n);
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            census.warnings.push(format!(
                                "pty {index}: cannot tell which descriptors share an open file \
                                 (kcmp: {}); each gets its own after a restart",
                                e.desc()
                            ));
                            break;
                        }
                    }
                }
                let n = known.unwrap_or_else(|| {
                    files.push((p, f));
                    files.len() - 1
                });
                census.ends.insert((p, f), (index, false, n as u32 + 1));
            }
            census.ptys.insert(index, state);
            census.slave_files.insert(index, files);
        }
        census.warnings.dedup();
        Ok(census)
    }

    /// What descriptor `fd` of process `pid` is, if it is an end of one of
    /// the program's ptys: (master, open file number, the pty). A process
    /// the census did not look at (a copy of one, sharing its open files)
    /// is asked the kernel.
    pub fn end(&self, pid: pid_t, fd: RawFd) -> Option<(bool, u32, &PtyState)> {
        if let Some(&(index, master, file)) = self.ends.get(&(pid, fd)) {
            return Some((master, file, self.ptys.get(&index)?));
        }
        match pty_end(pid, fd)? {
            PtyEnd::Master(index, _) => Some((true, 0, self.ptys.get(&index)?)),
            PtyEnd::Slave(index) => {
                let files = self.slave_files.get(&index)?;
                let n = files
                    .iter()
                    .position(|&(p, f)| tty::same_file(p, f, pid, fd).unwrap_or(false))?;
                Some((false, n as u32 + 1, self.ptys.get(&index)?))
            }
        }
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

/// A descriptor's side of a pty.
enum PtyEnd {
    /// A master (its index, and the path it was opened through).
    Master(u32, String),
    /// A slave (its index).
    Slave(u32),
}

/// Whether descriptor `fd` of `pid` is a pty's master (its fdinfo names
/// the index) or slave (a Unix98 pty device).
fn pty_end(pid: pid_t, fd: RawFd) -> Option<PtyEnd> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let link = std::fs::read_link(&path).ok()?;
    let link = link.to_string_lossy().into_owned();
    if link == "/dev/ptmx" || link.ends_with("/ptmx") {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
        let index = info
            .lines()
            .find_map(|l| l.strip_prefix("tty-index:"))
            .and_then(|v| v.trim().parse().ok())?;
        return Some(PtyEnd::Master(index, link));
    }
    if link.starts_with("/dev/pts/") {
        let rdev = std::fs::metadata(&path).ok()?.rdev();
        if libc::major(rdev) as u64 == PTS_MAJOR {
            return Some(PtyEnd::Slave(libc::minor(rdev)));
        }
    }
    None
}

fn termios_of(t: &Termios2) -> Termios {
    Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        ispeed: t.c_ispeed,
        ospeed: t.c_ospeed,
    }
}

fn termios2_of(t: &Termios) -> Termios2 {
    let mut out = tty::termios2_zeroed();
    out.c_iflag = t.iflag;
    out.c_oflag = t.oflag;
    out.c_cflag = t.cflag;
    out.c_lflag = t.lflag;
    out.c_line = t.line;
    for (d, s) in out.c_cc.iter_mut().zip(&t.cc) {
        *d = *s;
    }
    out.c_ispeed = t.ispeed;
    out.c_ospeed = t.ospeed;
    out
}

fn tty_err(index: u32, what: &str) -> impl Fn(Errno) -> Error + '_ {
    move |e| Error::Tracee(format!("pty {index}: {what}: {}", e.desc()))
}

/// Read pty `index` through `master` (a copy of the program's): its
/// settings and what is in flight, put straight back.
fn read_pty(
    master: &OwnedFd,
    index: u32,
    ptmx: String,
    vids: &VirtualIds,
    warnings: &mut Vec<String>,
) -> Result<PtyState, Error> {
    let m = master.as_raw_fd();
    let found = tty::pty_index(m).map_err(tty_err(index, "TIOCGPTN"))?;
    if found != index {
        return Err(Error::Tracee(format!(
            "pty {index}: its master says it is pty {found}"
        )));
    }
    // A slave of rewind's own, even while the program keeps it locked.
    let locked = tty::pty_locked(m).map_err(tty_err(index, "TIOCGPTLCK"))?;
    if locked {
        tty::set_pty_locked(m, false).map_err(tty_err(index, "unlock"))?;
    }
    let slave = tty::open_peer(m, libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK);
    if locked {
        tty::set_pty_locked(m, true).map_err(tty_err(index, "lock"))?;
    }
    let slave = slave.map_err(tty_err(index, "cannot open its slave (TIOCGPTPEER)"))?;
    let s = slave.as_raw_fd();
    let termios = tty::get_termios(s).map_err(tty_err(index, "TCGETS2"))?;
    let locked_termios = tty::get_locked_termios(s).map_err(tty_err(index, "TIOCGLCKTRMIOS"))?;
    let winsize = tty::get_winsize(s).map_err(tty_err(index, "TIOCGWINSZ"))?;
    let packet_mode = tty::packet_mode(m).map_err(tty_err(index, "TIOCGPKT"))?;
    let exclusive = tty::exclusive(s).unwrap_or(false);
    let session = tty::session_of(m)
        .ok()
        .filter(|&sid| sid > 0)
        .map(|sid| vids.to_virtual(sid));
    let foreground = tty::foreground_of(m)
        .ok()
        .filter(|&pg| pg > 0)
        .map(|pg| vids.to_virtual(pg));
    // Input first: what arrives in the line discipline meanwhile is
    // processed as it would have been (its echo joins the output).
    let drained = drain_input(s, &termios).map_err(tty_err(index, "reading its input"));
    let (input_lines, input_rest) = match drained {
        Ok(x) => x,
        Err(e) => {
            let _ = tty::set_termios(s, &termios);
            return Err(e);
        }
    };
    let output = drain_output(m, packet_mode).map_err(tty_err(index, "reading its output"));
    let state = PtyState {
        index,
        ptmx,
        termios: termios_of(&termios),
        locked_termios: termios_of(&locked_termios),
        winsize,
        packet_mode,
        locked,
        exclusive,
        output: output.as_ref().cloned().unwrap_or_default(),
        input_lines,
        input_rest,
        session,
        foreground,
    };
    // Back as it was, whatever happened: the program goes on (or is
    // killed) after the checkpoint.
    warnings.extend(put_back(master.as_fd(), slave.as_fd(), &state));
    if packet_mode {
        let _ = tty::set_packet_mode(m, true);
    }
    output?;
    Ok(state)
}

/// Read everything waiting for the slave's reader through `slave` (rewind's
/// own, non-blocking): complete lines, then the rest. Leaves canonical
/// mode off when it was on ([`put_back`] sets the settings again).
fn drain_input(slave: RawFd, t: &Termios2) -> Result<(Vec<Vec<u8>>, Vec<u8>), Errno> {
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = Vec::new();
    if t.c_lflag & libc::ICANON != 0 {
        for _ in 0..MAX_READS {
            match nix::unistd::read(slave, &mut buf) {
                Ok(n) => lines.push(buf[..n].to_vec()),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        // The line being typed becomes readable without canonical mode.
        let mut raw = *t;
        raw.c_lflag &= !libc::ICANON;
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        tty::set_termios(slave, &raw)?;
    }
    let mut rest = Vec::new();
    loop {
        match nix::unistd::read(slave, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((lines, rest))
}

/// Read everything waiting for the master's reader, through the program's
/// own open file (its flags untouched: read only what poll says is there).
fn drain_output(master: RawFd, packet_mode: bool) -> Result<Vec<u8>, Errno> {
    if packet_mode {
        tty::set_packet_mode(master, false)?;
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while tty::ready(master, false, 0)? {
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) | Err(Errno::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Write all of `data` into a pty through `fd` (non-blocking), waiting for
/// room as the other side's line discipline takes it.
fn write_all(fd: &impl AsFd, data: &[u8]) -> Result<(), Errno> {
    let deadline = Instant::now() + WRITE_PATIENCE;
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(fd, &data[done..]) {
            Ok(n) => done += n,
            Err(Errno::EAGAIN) => {
                if Instant::now() > deadline {
                    return Err(Errno::EAGAIN);
                }
                tty::ready(fd.as_fd().as_raw_fd(), true, 20)?;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The settings under which input only goes into the line discipline's
/// buffer: no echo, no signals, no input mapping or flow control; in
/// canonical mode the erase and kill characters are off and LNEXT escapes
/// the special characters that must stay literal.
fn storing_settings(t: &Termios2) -> Termios2 {
    let mut p = *t;
    p.c_lflag &= !(libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::ECHOCTL
        | libc::ECHOPRT
        | libc::ECHOKE
        | libc::ISIG);
    p.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::IGNPAR
        | libc::PARMRK
        | libc::INPCK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IUCLC
        | libc::IXON
        | libc::IXANY
        | libc::IXOFF
        | libc::IMAXBEL);
    if t.c_lflag & libc::ICANON != 0 {
        p.c_lflag |= libc::IEXTEN;
        for c in [libc::VERASE, libc::VKILL, libc::VWERASE, libc::VREPRINT] {
            p.c_cc[c] = 0;
        }
        if p.c_cc[libc::VLNEXT] == 0 {
            p.c_cc[libc::VLNEXT] = 0x16; // ^V
        }
        if p.c_cc[libc::VEOF] == 0 {
            p.c_cc[libc::VEOF] = 0x04; // ^D
        }
        // EOL2 ends lines only with IEXTEN, which the program may not have.
        if t.c_lflag & libc::IEXTEN == 0 {
            p.c_cc[libc::VEOL2] = 0;
        }
    } else {
        p.c_lflag &= !libc::IEXTEN;
    }
    p
}

/// The bytes that, given to the line discipline under
/// [`storing_settings`] of `t`, make `lines` and `rest` what waits again.
fn input_bytes(t: &Termios2, lines: &[Vec<u8>], rest: &[u8]) -> Vec<u8> {
    if t.c_lflag & libc::ICANON == 0 {
        let mut all: Vec<u8> = lines.concat();
        all.extend_from_slice(rest);
        return all;
    }
    let p = storing_settings(t);
    let cc = |i: usize| p.c_cc[i];
    // What ends a line under the program's settings.
    let ends = |b: u8| {
        b == b'\n'
            || (b != 0 && b == t.c_cc[libc::VEOL])
            || (b != 0 && t.c_lflag & libc::IEXTEN != 0 && b == t.c_cc[libc::VEOL2])
    };
    // What the storing settings would take as special.
    let special = |b: u8| {
        b != 0
            && (b == b'\n'
                || b == cc(libc::VEOF)
                || b == cc(libc::VEOL)
                || b == cc(libc::VEOL2)
                || b == cc(libc::VLNEXT))
    };
    let mut out = Vec::new();
    let literal = |out: &mut Vec<u8>, bytes: &[u8]| {
        for &b in bytes {
            if special(b) {
                out.push(cc(libc::VLNEXT));
            }
            out.push(b);
        }
    };
    for line in lines {
        match line.split_last() {
            Some((&last, body)) if ends(last) => {
                literal(&mut out, body);
                out.push(last);
            }
            _ => {
                // Ended by EOF (an empty line is a bare EOF).
                literal(&mut out, line);
                out.push(cc(libc::VEOF));
            }
        }
    }
    literal(&mut out, rest);
    out
}

/// Put `st`'s bytes in flight into a pty whose queues are empty, through
/// rewind's `master` and `slave`, and leave it with `st`'s settings.
/// Returns warnings (what could not be put back exactly).
fn put_back(master: BorrowedFd<'_>, slave: BorrowedFd<'_>, st: &PtyState) -> Vec<String> {
    let mut warnings = Vec::new();
    let fd = slave;
    let slave = slave.as_raw_fd();
    let t = termios2_of(&st.termios);
    let index = st.index;
    if !st.output.is_empty() {
        let mut raw_out = t;
        raw_out.c_oflag &= !libc::OPOST;
        let written = tty::set_termios(slave, &raw_out).and_then(|()| write_all(&fd, &st.output));
        if let Err(e) = written {
            warnings.push(format!(
                "pty {index}: {} bytes of output in flight could not be put back: {}",
                st.output.len(),
                e.desc()
            ));
        }
    }
    let bytes = input_bytes(&t, &st.input_lines, &st.input_rest);
    let (now, later) = bytes.split_at(bytes.len().min(LDISC_ROOM));
    let stored = (|| {
        if !now.is_empty() {
            tty::set_termios(slave, &storing_settings(&t))?;
            for &b in now {
                tty::insert_input(slave, b)?;
            }
        }
        Ok::<(), Errno>(())
    })();
    if let Err(e) = stored {
        warnings.push(format!(
            "pty {index}: input in flight could not be put back ({}): {} bytes lost",
            e.desc(),
            now.len()
        ));
    }
    if let Err(e) = tty::set_termios(slave, &t) {
        warnings.push(format!(
            "pty {index}: its settings could not be set again: {}",
            e.desc()
        ));
    }
    if !later.is_empty() {
        // More than the line discipline holds: it waited in the pty's own
        // buffer, unprocessed; it goes through the line discipline again.
        let sent = write_all(&master, later);
        warnings.push(match sent {
            Ok(()) => format!(
                "pty {index}: {} bytes of input beyond the line discipline's buffer are \
                 processed again (their echo, if any, repeats)",
                later.len()
            ),
            Err(e) => format!(
                "pty {index}: {} bytes of input in flight could not be put back: {}",
                later.len(),
                e.desc()
            ),
        });
    }
    warnings
}

/// A pty made again at restart.
struct Made {
    state: PtyState,
    /// Its index now (the old one when it was free).
    index: u32,
    master: OwnedFd,
    /// rewind's own slave (settings, the controlling terminal).
    slave: OwnedFd,
    /// The open files of the slave the program had, by number.
    files: HashMap<u32, OwnedFd>,
}

/// The ptys of the images of a restart, made once by rewind before any
/// process is restored, by their old index. Dropped once every process
/// holds its descriptors.
#[derive(Default)]
pub struct Rebuilt {
    ptys: BTreeMap<u32, Made>,
    warnings: Vec<String>,
}

impl Rebuilt {
    /// Make every pty `states` hold, with the open files of its slave.
    pub fn make(states: &[&ProcessState]) -> Result<Rebuilt, Error> {
        let mut wanted: BTreeMap<u32, (&PtyState, BTreeMap<u32, u32>)> = BTreeMap::new();
        for st in states {
            for f in &st.fds {
                if let FdKind::Pty { master, file, pty } = &f.kind {
                    let (_, files) = wanted.entry(pty.index).or_insert((&**pty, BTreeMap::new()));
                    if !*master {
                        files.entry(*file).or_insert(f.flags);
                    }
                }
            }
        }
        let mut out = Rebuilt::default();
        // Ptys opened on the way to an index, closed once all are made.
        let mut spare = Vec::new();
        for (index, (state, files)) in wanted {
            let made = make_pty(state, &files, &mut spare, &mut out.warnings)?;
            out.ptys.insert(index, made);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.ptys.is_empty()
    }

    /// rewind's descriptor of an end of the pty that had index `index`.
    pub fn fd(&self, index: u32, master: bool, file: u32) -> Option<RawFd> {
        let made = self.ptys.get(&index)?;
        if master {
            return Some(made.master.as_raw_fd());
        }
        made.files.get(&file).map(AsRawFd::as_raw_fd)
    }

    /// The pty that was the controlling terminal of session `vsid`.
    fn of_session(&self, vsid: i32) -> Option<&Made> {
        self.ptys.values().find(|m| m.state.session == Some(vsid))
    }

    /// Whether session `vsid`'s controlling terminal is one of these ptys.
    pub fn controls(&self, vsid: i32) -> bool {
        self.of_session(vsid).is_some()
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// A session leader's husk (stopped, children not forked yet) takes
    /// back its controlling terminal, if it was one of these ptys: the
    /// husk leads a session of its own first, then TIOCSCTTY on a copy of
    /// rewind's slave. Its children, forked after, inherit it.
    pub fn attach_leader(&self, husk: pid_t, st: &ProcessState) -> Result<(), Error> {
        if st.vsid != st.vpid {
            return Ok(());
        }
        let Some(made) = self.of_session(st.vpid) else {
            return Ok(());
        };
        let t = Tracee::new(husk)?;
        if session_of_process(husk) != Some(husk) {
            let r = tracee::syscall_in_place(&t, husk, libc::SYS_setsid, &[])?;
            if r < 0 {
                return Err(Error::Restore(format!(
                    "process {}: setsid failed: {}",
                    st.vpid,
                    tracee::errno_text(r)
                )));
            }
        }
        with_copy(&t, husk, made.slave.as_raw_fd(), |copy| {
            tracee::syscall_in_place(&t, husk, libc::SYS_ioctl, &[copy, libc::TIOCSCTTY, 0])
        })
        .and_then(|r| {
            if r < 0 {
                Err(Error::Restore(format!(
                    "process {}: cannot take its controlling terminal /dev/pts/{} back: {}",
                    st.vpid,
                    made.index,
                    tracee::errno_text(r)
                )))
            } else {
                Ok(())
            }
        })
    }

    /// Once every husk of a tree exists (`husks`: virtual pid to husk),
    /// give each pty its foreground process group back (TIOCSPGRP by its
    /// session leader). Returns warnings.
    pub fn set_foregrounds(&self, husks: &HashMap<i32, pid_t>) -> Vec<String> {
        let mut warnings = Vec::new();
        for made in self.ptys.values() {
            let (Some(sid), Some(group)) = (made.state.session, made.state.foreground) else {
                continue;
            };
            // TIOCSCTTY made the leader's own group the foreground.
            if group == sid {
                continue;
            }
            let (Some(&leader), Some(&real_group)) = (husks.get(&sid), husks.get(&group)) else {
                warnings.push(format!(
                    "/dev/pts/{}: its foreground process group {group} is not among the images; \
                     its session leader's is the foreground now",
                    made.index
                ));
                continue;
            };
            if let Err(e) = set_foreground(leader, made.slave.as_raw_fd(), real_group) {
                warnings.push(format!(
                    "/dev/pts/{}: cannot make process group {group} the foreground again: {e}",
                    made.index
                ));
            }
        }
        warnings
    }
}

/// Open pty `state` again (at its index when free), with the slave's open
/// files `files` (number -> flags), settings and bytes in flight.
fn make_pty(
    state: &PtyState,
    files: &BTreeMap<u32, u32>,
    spare: &mut Vec<OwnedFd>,
    warnings: &mut Vec<String>,
) -> Result<Made, Error> {
    let old = state.index;
    let (master, index) = open_at_index(&state.ptmx, old, spare)?;
    let m = master.as_raw_fd();
    let err = |what: &'static str| {
        move |e: Errno| {
            Error::Restore(format!(
                "pty {old} (/dev/pts/{index}): {what}: {}",
                e.desc()
            ))
        }
    };
    tty::set_pty_locked(m, false).map_err(err("unlock"))?;
    let slave = tty::open_peer(m, libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK)
        .map_err(err("TIOCGPTPEER"))?;
    let mut opened = HashMap::new();
    for (&file, &flags) in files {
        let access = flags as i32 & libc::O_ACCMODE;
        let f = tty::open_peer(m, access | libc::O_NOCTTY).map_err(err("TIOCGPTPEER"))?;
        opened.insert(file, f);
    }
    let s = slave.as_raw_fd();
    tty::set_termios(s, &termios2_of(&state.termios)).map_err(err("TCSETS2"))?;
    warnings.extend(put_back(master.as_fd(), slave.as_fd(), state));
    tty::set_winsize(s, state.winsize).map_err(err("TIOCSWINSZ"))?;
    if state.packet_mode {
        tty::set_packet_mode(m, true).map_err(err("TIOCPKT"))?;
    }
    let locked = termios2_of(&state.locked_termios);
    if termios_of(&locked) != termios_of(&tty::termios2_zeroed()) {
        if let Err(e) = tty::set_locked_termios(s, &locked) {
            warnings.push(format!(
                "/dev/pts/{index}: its locked settings could not be set again: {}",
                e.desc()
            ));
        }
    }
    if state.exclusive {
        tty::set_exclusive(s).map_err(err("TIOCEXCL"))?;
    }
    if state.locked {
        tty::set_pty_locked(m, true).map_err(err("lock"))?;
    }
    if index != old {
        warnings.push(format!(
            "the program's terminal /dev/pts/{old} is taken: it is /dev/pts/{index} now \
             (the slave's path the program knows differs)"
        ));
    }
    Ok(Made {
        state: state.clone(),
        index,
        master,
        slave,
        files: opened,
    })
}

/// Open `ptmx` until the kernel gives index `want` (it gives the lowest
/// free one); the ptys of lower indices go to `spare`. When `want` is taken
/// (after waiting a little for a pty being released), the first index
/// above it.
fn open_at_index(ptmx: &str, want: u32, spare: &mut Vec<OwnedFd>) -> Result<(OwnedFd, u32), Error> {
    let path = std::ffi::CString::new(ptmx)
        .map_err(|_| Error::Restore(format!("bad pty multiplexer path {ptmx:?}")))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let fd = tty::open_ptmx(&path)
            .map_err(|e| Error::io(ptmx, std::io::Error::from_raw_os_error(e as i32)))?;
        let got = tty::pty_index(fd.as_raw_fd())
            .map_err(|e| Error::Restore(format!("{ptmx}: TIOCGPTN: {}", e.desc())))?;
        if got == want {
            return Ok((fd, got));
        }
        if got < want && spare.len() < 4096 {
            spare.push(fd);
            continue;
        }
        // Taken: maybe by the killed program's pty, not released yet.
        if Instant::now() < deadline {
            drop(fd);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        return Ok((fd, got));
    }
}

/// The session `pid` belongs to (/proc/pid/stat field 6).
fn session_of_process(pid: pid_t) -> Option<pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(3);
    f.next()?.parse().ok()
}

/// Run `f` with a copy, in stopped process `husk`, of rewind's
/// descriptor `ours` (an injected pidfd_open + pidfd_getfd), closed after.
fn with_copy(
    t: &Tracee,
    husk: pid_t,
    ours: RawFd,
    f: impl FnOnce(u64) -> Result<i64, Error>,
) -> Result<i64, Error> {
    let pidfd = tracee::syscall_in_place(
        t,
        husk,
        libc::SYS_pidfd_open,
        &[u64::from(std::process::id()), 0],
    )?;
    if pidfd < 0 {
        return Err(Error::Restore(format!(
            "pidfd_open in process {husk}: {}",
            tracee::errno_text(pidfd)
        )));
    }
    let copy = tracee::syscall_in_place(
        t,
        husk,
        libc::SYS_pidfd_getfd,
        &[pidfd as u64, ours as u64, 0],
    );
    let result = match copy {
        Ok(c) if c >= 0 => {
            let r = f(c as u64);
            let _ = tracee::syscall_in_place(t, husk, libc::SYS_close, &[c as u64]);
            r
        }
        Ok(c) => Err(Error::Restore(format!(
            "pidfd_getfd in process {husk}: {}",
            tracee::errno_text(c)
        ))),
        Err(e) => Err(e),
    };
    let _ = tracee::syscall_in_place(t, husk, libc::SYS_close, &[pidfd as u64]);
    result
}

/// TIOCSPGRP(`group`) injected in `leader`'s husk (its controlling
/// terminal is rewind's `slave`'s pty); the group id goes below its stack
/// pointer, where nothing lives while it waits.
fn set_foreground(leader: pid_t, slave: RawFd, group: pid_t) -> Result<(), Error> {
    let t = Tracee::new(leader)?;
    let regs = crate::sys::ptrace::getregs(leader)
        .map_err(|e| Error::ptrace("PTRACE_GETREGS", leader, e))?;
    let at = (regs.rsp - 4096) & !15;
    let mut saved = [0u8; 4];
    t.read_mem(at, &mut saved)?;
    t.write_mem(at, &group.to_le_bytes())?;
    let r = with_copy(&t, leader, slave, |copy| {
        tracee::syscall_in_place(&t, leader, libc::SYS_ioctl, &[copy, libc::TIOCSPGRP, at])
    });
    t.write_mem(at, &saved)?;
    match r? {
        r if r < 0 => Err(Error::Restore(tracee::errno_text(r))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical() -> Termios2 {
        let mut t = tty::termios2_zeroed();
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN;
        t.c_iflag = libc::ICRNL;
        t.c_cc[libc::VEOF] = 0x04;
        t.c_cc[libc::VLNEXT] = 0x16;
        t.c_cc[libc::VEOL] = b'#';
        t.c_cc[libc::VERASE] = 0x7f;
        t
    }

    #[test]
    fn lines_keep_their_ends_and_literal_specials_are_escaped() {
        let t = canonical();
        let lines = vec![
            b"plain\n".to_vec(),
            b"hash#".to_vec(),
            b"eof ended".to_vec(),
            Vec::new(),
            b"a\x04b#c\x16\x7f\n".to_vec(),
        ];
        let bytes = input_bytes(&t, &lines, b"part#x");
        let want: &[u8] = b"plain\nhash#eof ended\x04\x04a\x16\x04b\x16#c\x16\x16\x7f\npart\x16#x";
        assert_eq!(bytes, want);
        // Erase is off while they are stored: 0x7f stays a byte.
        let p = storing_settings(&t);
        assert_eq!(p.c_cc[libc::VERASE], 0);
        assert_eq!(p.c_lflag & (libc::ECHO | libc::ISIG), 0);
        assert_eq!(p.c_iflag & libc::ICRNL, 0);
    }

    #[test]
    fn raw_input_goes_back_as_it_is() {
        let mut t = canonical();
        t.c_lflag &= !libc::ICANON;
        let bytes = input_bytes(&t, &[], b"\x03\x04#\n");
        assert_eq!(bytes, b"\x03\x04#\n");
        assert_eq!(storing_settings(&t).c_lflag & libc::IEXTEN, 0);
    }
}
