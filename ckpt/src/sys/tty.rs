//! Terminal ioctls on rewind's own descriptors of a pseudo-terminal (see
//! `crate::pty`): termios, window size, packet mode, lock, input
//! injection (TIOCSTI), the peer of a master (TIOCGPTPEER), and `kcmp`,
//! which tells whether two descriptors share one open file.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// `struct termios2` (TCGETS2/TCSETS2): the flags, the line discipline,
/// the 19 control characters and both speeds.
pub type Termios2 = libc::termios2;

/// An all-zero `termios2`.
pub fn termios2_zeroed() -> Termios2 {
    Termios2 {
        c_iflag: 0,
        c_oflag: 0,
        c_cflag: 0,
        c_lflag: 0,
        c_line: 0,
        c_cc: [0; 19],
        c_ispeed: 0,
        c_ospeed: 0,
    }
}

fn check(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument is a pointer to one `T` the kernel reads or
/// writes.
fn ioctl_ptr<T>(fd: RawFd, request: libc::Ioctl, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: every caller passes a request whose argument is a pointer to
    // a `T` of the size the kernel copies (an int, a termios2, a winsize);
    // `arg` is a valid, exclusive reference for the call's duration.
    check(unsafe { libc::ioctl(fd, request, arg as *mut T) }).map(drop)
}

/// An ioctl whose argument is a plain integer.
fn ioctl_int(fd: RawFd, request: libc::Ioctl, arg: libc::c_ulong) -> Result<libc::c_int, Errno> {
    // SAFETY: every caller passes a request whose argument is an integer
    // value, not a pointer; the kernel reads no memory of ours.
    check(unsafe { libc::ioctl(fd, request, arg) })
}

/// TCGETS2: the terminal's settings (on a master: its slave's).
pub fn get_termios(fd: RawFd) -> Result<Termios2, Errno> {
    let mut t = termios2_zeroed();
    ioctl_ptr(fd, libc::TCGETS2, &mut t)?;
    Ok(t)
}

/// TCSETS2, at once (TCSANOW).
pub fn set_termios(fd: RawFd, t: &Termios2) -> Result<(), Errno> {
    let mut t = *t;
    ioctl_ptr(fd, libc::TCSETS2, &mut t)
}

/// TIOCGLCKTRMIOS: the bits of the settings no one may change. The kernel
/// copies a `struct termios`, the first 36 bytes of a `termios2`.
pub fn get_locked_termios(fd: RawFd) -> Result<Termios2, Errno> {
    let mut t = termios2_zeroed();
    ioctl_ptr(fd, libc::TIOCGLCKTRMIOS, &mut t)?;
    Ok(t)
}

/// TIOCSLCKTRMIOS (CAP_SYS_ADMIN).
pub fn set_locked_termios(fd: RawFd, t: &Termios2) -> Result<(), Errno> {
    let mut t = *t;
    ioctl_ptr(fd, libc::TIOCSLCKTRMIOS, &mut t)
}

/// TIOCGWINSZ: rows, columns, x and y pixels.
pub fn get_winsize(fd: RawFd) -> Result<[u16; 4], Errno> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    ioctl_ptr(fd, libc::TIOCGWINSZ, &mut w)?;
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

/// TIOCSWINSZ.
pub fn set_winsize(fd: RawFd, size: [u16; 4]) -> Result<(), Errno> {
    let mut w = libc::winsize {
        ws_row: size[0],
        ws_col: size[1],
        ws_xpixel: size[2],
        ws_ypixel: size[3],
    };
    ioctl_ptr(fd, libc::TIOCSWINSZ, &mut w)
}

/// An ioctl that reads one int (TIOCGPTN, TIOCGPKT, TIOCGPTLCK, TIOCGEXCL,
/// TIOCGSID, TIOCGPGRP).
fn get_int(fd: RawFd, request: libc::Ioctl) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    ioctl_ptr(fd, request, &mut v)?;
    Ok(v)
}

/// TIOCGPTN: the index of a master's pty (/dev/pts/N).
pub fn pty_index(master: RawFd) -> Result<u32, Errno> {
    get_int(master, libc::TIOCGPTN).map(|v| v as u32)
}

/// TIOCGPKT: whether a master is in packet mode.
pub fn packet_mode(master: RawFd) -> Result<bool, Errno> {
    get_int(master, libc::TIOCGPKT).map(|v| v != 0)
}

/// TIOCPKT.
pub fn set_packet_mode(master: RawFd, on: bool) -> Result<(), Errno> {
    let mut v: libc::c_int = on.into();
    ioctl_ptr(master, libc::TIOCPKT, &mut v)
}

/// TIOCGPTLCK: whether the slave is still locked (no unlockpt yet).
pub fn pty_locked(master: RawFd) -> Result<bool, Errno> {
    get_int(master, libc::TIOCGPTLCK).map(|v| v != 0)
}

/// TIOCSPTLCK.
pub fn set_pty_locked(master: RawFd, locked: bool) -> Result<(), Errno> {
    let mut v: libc::c_int = locked.into();
    ioctl_ptr(master, libc::TIOCSPTLCK, &mut v)
}

/// TIOCGEXCL: whether the terminal is in exclusive mode (TIOCEXCL).
pub fn exclusive(fd: RawFd) -> Result<bool, Errno> {
    get_int(fd, libc::TIOCGEXCL).map(|v| v != 0)
}

/// TIOCEXCL.
pub fn set_exclusive(fd: RawFd) -> Result<(), Errno> {
    ioctl_int(fd, libc::TIOCEXCL, 0).map(drop)
}

/// TIOCGSID through a master: the session whose controlling terminal the
/// pty is (ENOTTY if none).
pub fn session_of(master: RawFd) -> Result<i32, Errno> {
    get_int(master, libc::TIOCGSID)
}

/// TIOCGPGRP through a master: the pty's foreground process group.
pub fn foreground_of(master: RawFd) -> Result<i32, Errno> {
    get_int(master, libc::TIOCGPGRP)
}

/// Mark a new descriptor of ours close-on-exec. Opening with O_CLOEXEC
/// would do it too, but the kernel keeps that bit in the open file's flags
/// (fdinfo shows it for every descriptor of the file, in every process a
/// restored program hands it to): it is set on our descriptor only.
fn owned_cloexec(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD takes a plain integer.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(owned)
}

/// TIOCGPTPEER: a new open file of a master's slave, with `flags` (O_RDWR,
/// O_NOCTTY, O_NONBLOCK...); our descriptor is close-on-exec, the open
/// file is not marked so.
pub fn open_peer(master: RawFd, flags: i32) -> Result<OwnedFd, Errno> {
    let fd = ioctl_int(
        master,
        libc::TIOCGPTPEER,
        (flags & !libc::O_CLOEXEC) as libc::c_ulong,
    )?;
    owned_cloexec(fd)
}

/// Open the pty multiplexer `path` (/dev/ptmx): a new pty's master, read
/// and write, not our controlling terminal; our descriptor is
/// close-on-exec, the open file is not marked so.
pub fn open_ptmx(path: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) })?;
    owned_cloexec(fd)
}

/// TIOCSTI: put one byte in the terminal's input as if it had arrived
/// (through the line discipline, at once; CAP_SYS_ADMIN for a terminal
/// that is not our controlling one).
pub fn insert_input(fd: RawFd, byte: u8) -> Result<(), Errno> {
    let mut b = byte;
    ioctl_ptr(fd, libc::TIOCSTI, &mut b)
}

/// Whether descriptor `fd1` of `pid1` and `fd2` of `pid2` share one open
/// file (`kcmp(KCMP_FILE)`; both processes must be ours to trace).
pub fn same_file(
    pid1: libc::pid_t,
    fd1: RawFd,
    pid2: libc::pid_t,
    fd2: RawFd,
) -> Result<bool, Errno> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp with KCMP_FILE takes plain integers and reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(r == 0)
}

/// Wait up to `ms` milliseconds for `fd` to be readable (or writable with
/// `write`); returns whether it is. `ms` 0 only asks (a pty's poll also
/// moves what waits in its buffer to the line discipline first).
pub fn ready(fd: RawFd, write: bool, ms: i32) -> Result<bool, Errno> {
    let mut p = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = check(unsafe { libc::poll(&mut p, 1, ms) })?;
    let want = if write { libc::POLLOUT } else { libc::POLLIN };
    Ok(n > 0 && p.revents & want != 0)
}
