//! gdb's file access (`vFile:*` packets) and the process id gdb sees.
//!
//! gdb reads the program's files (the executable, its libraries) and
//! `/proc/PID/...` files of the process it debugs through the remote target
//! when it can. The pid gdb knows is the recorded one (the program's own
//! `getpid()`); the process that holds the current moment is a replayed copy
//! with another pid, so `/proc/<recorded pid>[/task/<recorded tid>]/...` is
//! read from that copy: its maps, auxv and links are those of the moment
//! gdb looks at. Every other path is the host's file. Files are read only.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use gdbstub::common::Pid;
use gdbstub::target::ext::extended_mode::{
    Args, AttachKind, CurrentActivePid, CurrentActivePidOps, ExtendedMode, ShouldTerminate,
};
use gdbstub::target::ext::host_io::{
    FsKind, HostIo, HostIoClose, HostIoCloseOps, HostIoErrno, HostIoError, HostIoFstat,
    HostIoFstatOps, HostIoOpen, HostIoOpenFlags, HostIoOpenMode, HostIoOpenOps, HostIoPread,
    HostIoPreadOps, HostIoReadlink, HostIoReadlinkOps, HostIoResult, HostIoSetfs, HostIoSetfsOps,
    HostIoStat,
};
use gdbstub::target::{TargetError, TargetResult};

use super::target::Server;

/// Files gdb opened, by the number it was given.
#[derive(Default)]
pub struct OpenFiles {
    files: HashMap<u32, File>,
    next: u32,
}

/// `path` with `/proc/<vpid>` and `/proc/<vpid>/task/<vtid>` turned into the
/// real ids of the process that holds the moment (`threads`: recorded id,
/// real id). Other paths are returned as they are.
pub fn translate(path: &str, vpid: i32, real_pid: i32, threads: &[(i32, i32)]) -> String {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return path.to_string();
    };
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if first.parse::<i32>().ok() != Some(vpid) {
        return path.to_string();
    }
    let mut out = format!("/proc/{real_pid}");
    let mut tail = tail;
    if let Some(t) = tail.strip_prefix("task/") {
        let (tid, after) = t.split_once('/').unwrap_or((t, ""));
        if let Some(real) = tid
            .parse::<i32>()
            .ok()
            .and_then(|v| threads.iter().find(|x| x.0 == v).map(|x| x.1))
        {
            out.push_str(&format!("/task/{real}"));
            tail = after;
            if tail.is_empty() {
                return out;
            }
        }
    }
    if !tail.is_empty() {
        out.push('/');
        out.push_str(tail);
    }
    out
}

fn errno_of(e: &std::io::Error) -> HostIoErrno {
    match e.raw_os_error() {
        Some(libc::EPERM) => HostIoErrno::EPERM,
        Some(libc::ENOENT) | Some(libc::ESRCH) => HostIoErrno::ENOENT,
        Some(libc::EINTR) => HostIoErrno::EINTR,
        Some(libc::EIO) => HostIoErrno::EIO,
        Some(libc::EBADF) => HostIoErrno::EBADF,
        Some(libc::EACCES) => HostIoErrno::EACCES,
        Some(libc::ENOTDIR) => HostIoErrno::ENOTDIR,
        Some(libc::EISDIR) => HostIoErrno::EISDIR,
        Some(libc::EINVAL) => HostIoErrno::EINVAL,
        Some(libc::EMFILE) => HostIoErrno::EMFILE,
        Some(libc::ENAMETOOLONG) => HostIoErrno::ENAMETOOLONG,
        _ => HostIoErrno::EUNKNOWN,
    }
}

fn io_err<E>(e: std::io::Error) -> HostIoError<E> {
    HostIoError::Errno(errno_of(&e))
}

impl Server {
    fn host_path(&self, name: &[u8]) -> Result<String, HostIoErrno> {
        let path = std::str::from_utf8(name).map_err(|_| HostIoErrno::ENOENT)?;
        let real = self.tl.replayer().tracee().pid;
        Ok(translate(
            path,
            self.vpid,
            real,
            &self.tl.replayer().threads(),
        ))
    }

    fn open_file(&self, fd: u32) -> Result<&File, HostIoErrno> {
        self.files.files.get(&fd).ok_or(HostIoErrno::EBADF)
    }
}

impl HostIo for Server {
    fn support_open(&mut self) -> Option<HostIoOpenOps<'_, Self>> {
        Some(self)
    }
    fn support_close(&mut self) -> Option<HostIoCloseOps<'_, Self>> {
        Some(self)
    }
    fn support_pread(&mut self) -> Option<HostIoPreadOps<'_, Self>> {
        Some(self)
    }
    fn support_fstat(&mut self) -> Option<HostIoFstatOps<'_, Self>> {
        Some(self)
    }
    fn support_readlink(&mut self) -> Option<HostIoReadlinkOps<'_, Self>> {
        Some(self)
    }
    fn support_setfs(&mut self) -> Option<HostIoSetfsOps<'_, Self>> {
        Some(self)
    }
}

impl HostIoOpen for Server {
    fn open(
        &mut self,
        filename: &[u8],
        flags: HostIoOpenFlags,
        _mode: HostIoOpenMode,
    ) -> HostIoResult<u32, Self> {
        // History is read-only, and so is everything gdb reads of it.
        let write = HostIoOpenFlags::O_WRONLY
            | HostIoOpenFlags::O_RDWR
            | HostIoOpenFlags::O_CREAT
            | HostIoOpenFlags::O_TRUNC
            | HostIoOpenFlags::O_APPEND;
        if flags.intersects(write) {
            return Err(HostIoError::Errno(HostIoErrno::EROFS));
        }
        let path = self.host_path(filename).map_err(HostIoError::Errno)?;
        let file = File::open(&path).map_err(io_err)?;
        let fd = self.files.next;
        self.files.next = self.files.next.wrapping_add(1);
        self.files.files.insert(fd, file);
        Ok(fd)
    }
}

impl HostIoClose for Server {
    fn close(&mut self, fd: u32) -> HostIoResult<(), Self> {
        match self.files.files.remove(&fd) {
            Some(_) => Ok(()),
            None => Err(HostIoError::Errno(HostIoErrno::EBADF)),
        }
    }
}

impl HostIoPread for Server {
    fn pread(
        &mut self,
        fd: u32,
        count: usize,
        offset: u64,
        buf: &mut [u8],
    ) -> HostIoResult<usize, Self> {
        let file = self.open_file(fd).map_err(HostIoError::Errno)?;
        let n = count.min(buf.len());
        // Files in /proc are read from their start in order; read_at
        // works for them as for regular files.
        let mut done = 0;
        while done < n {
            match file.read_at(&mut buf[done..n], offset + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if done > 0 => {
                    tracing::debug!("vFile:pread after {done} bytes: {e}");
                    break;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(done)
    }
}

impl HostIoFstat for Server {
    fn fstat(&mut self, fd: u32) -> HostIoResult<HostIoStat, Self> {
        let m = self
            .open_file(fd)
            .map_err(HostIoError::Errno)?
            .metadata()
            .map_err(io_err)?;
        Ok(HostIoStat {
            st_dev: m.dev() as u32,
            st_ino: m.ino() as u32,
            st_mode: HostIoOpenMode::from_bits_truncate(m.mode()),
            st_nlink: m.nlink() as u32,
            st_uid: m.uid(),
            st_gid: m.gid(),
            st_rdev: m.rdev() as u32,
            st_size: m.size(),
            st_blksize: m.blksize(),
            st_blocks: m.blocks(),
            st_atime: m.atime() as u32,
            st_mtime: m.mtime() as u32,
            st_ctime: m.ctime() as u32,
        })
    }
}

impl HostIoReadlink for Server {
    fn readlink(&mut self, filename: &[u8], buf: &mut [u8]) -> HostIoResult<usize, Self> {
        let path = self.host_path(filename).map_err(HostIoError::Errno)?;
        let target = std::fs::read_link(&path).map_err(io_err)?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }
}

impl HostIoSetfs for Server {
    fn setfs(&mut self, fs: FsKind) -> HostIoResult<(), Self> {
        // One process, one mount namespace: the server's (rewind runs the
        // program in its own), whichever gdb names.
        let _ = fs;
        Ok(())
    }
}

/// Extended mode is implemented only so gdb learns the real process id
/// (gdbstub asks `CurrentActivePid` through it); `target extended-remote`
/// cannot run or attach to other programs.
impl ExtendedMode for Server {
    fn run(&mut self, _filename: Option<&[u8]>, _args: Args<'_, '_>) -> TargetResult<Pid, Self> {
        Err(TargetError::NonFatal)
    }

    fn attach(&mut self, _pid: Pid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn query_if_attached(&mut self, _pid: Pid) -> TargetResult<AttachKind, Self> {
        // As before extended mode: gdb's `quit` detaches, and
        // --on-disconnect decides what happens to a live program.
        Ok(AttachKind::Attach)
    }

    fn kill(&mut self, _pid: Option<Pid>) -> TargetResult<ShouldTerminate, Self> {
        Ok(ShouldTerminate::Yes)
    }

    fn restart(&mut self) -> Result<(), Self::Error> {
        Err("restarting the program is not supported: start another rewind gdbserver".into())
    }

    fn support_current_active_pid(&mut self) -> Option<CurrentActivePidOps<'_, Self>> {
        Some(self)
    }
}

impl CurrentActivePid for Server {
    fn current_active_pid(&mut self) -> Result<Pid, Self::Error> {
        Pid::new(self.vpid.max(1) as usize).ok_or_else(|| "no process".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn recorded_ids_become_the_copy_s() {
        let threads = [(100, 7000), (101, 7001)];
        assert_eq!(
            translate("/proc/100/maps", 100, 7000, &threads),
            "/proc/7000/maps"
        );
        assert_eq!(
            translate("/proc/100/task/101/maps", 100, 7000, &threads),
            "/proc/7000/task/7001/maps"
        );
        assert_eq!(
            translate("/proc/100/task/101", 100, 7000, &threads),
            "/proc/7000/task/7001"
        );
        assert_eq!(translate("/proc/100", 100, 7000, &threads), "/proc/7000");
        // Another process, an unknown thread, a file elsewhere: untouched.
        assert_eq!(
            translate("/proc/55/maps", 100, 7000, &threads),
            "/proc/55/maps"
        );
        assert_eq!(
            translate("/proc/100/task/9/maps", 100, 7000, &threads),
            "/proc/7000/task/9/maps"
        );
        assert_eq!(
            translate("/usr/lib/libc.so", 100, 7000, &threads),
            "/usr/lib/libc.so"
        );
        assert_eq!(
            translate("/proc/1000/maps", 100, 7000, &threads),
            "/proc/1000/maps"
        );
    }
}
