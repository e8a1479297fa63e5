//! Shared memory across checkpoint and restart (issue 7): MAP_SHARED
//! memory whose backing object several mappings share, in one process or
//! in several processes of a tree.
//!
//! **Capture.** A shared mapping of a kernel memory object (shared
//! anonymous memory, a memfd, a file on tmpfs such as POSIX shm in
//! /dev/shm, a file deleted while mapped, a System V segment) becomes a
//! [`RegionKind::Shared`] region naming its object by device and inode
//! ([`object_of`]). The object's contents are read through the object
//! itself (`/proc/PID/map_files`, with `SEEK_DATA`/`SEEK_HOLE`), not
//! through the page tables of one process, which miss the pages only
//! another process touched. Within one checkpoint of a tree
//! ([`TreeCapture`]) the first image that maps a part of an object stores
//! it; later mappings of a part already stored store nothing.
//!
//! **Restart.** [`SharedMemory::prepare`] makes every object once, in
//! rewind, before any process is restored: new shared anonymous memory
//! (reopened through `/proc/self/map_files`, so the maps still say
//! `/dev/zero (deleted)`), a memfd of the same name, the tmpfs file at its
//! path (created again if gone), an unlinked file in the same directory,
//! or the System V segment with its id and key (`sysv.rs`). Each restored
//! process maps its regions of an object from rewind's descriptor (through
//! `/proc/<rewind>/fd`) or attaches the segment (`shmat`) at their old
//! addresses; the image that stores a region writes its pages through that
//! mapping. An object that already held data (a tmpfs file or a segment
//! that outlived the program) gets the checkpoint's contents: the stored
//! regions are emptied first (`MADV_REMOVE`).
//!
//! A shared mapping of a file on disk is not an object of this module: it
//! is mapped from its path again and shows the file's current contents, as
//! any other process of the machine sees them.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::Arc;

use libc::pid_t;

use crate::image::format::{ProcessState, Region, RegionKind, SharedKind, SharedObject};
use crate::image::PageSource;
use crate::maps::Mapping;
use crate::tracee::PAGE;
use crate::Error;

/// statfs f_type of tmpfs (and of /dev/shm).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Bookkeeping of one checkpoint over the processes of a tree, captured
/// one after the other: which parts of which objects are stored already.
#[derive(Debug, Default)]
pub struct TreeCapture {
    /// Index of the process being captured (0: the root, or a lone process).
    pub index: usize,
    stored: HashMap<(u64, u64), Vec<(u64, u64)>>,
    /// Processes captured so far that are child subreapers (forked
    /// checkpoints: a copy orphaned below one would be adopted by it).
    pub(crate) subreapers: std::collections::HashSet<libc::pid_t>,
}

impl TreeCapture {
    /// Whether this image must store the part `[offset, offset + len)` of
    /// `object`: no earlier image of the checkpoint stored all of it.
    pub fn claim(&mut self, object: &SharedObject, offset: u64, len: u64) -> bool {
        let ranges = self.stored.entry((object.dev, object.ino)).or_default();
        let end = offset.saturating_add(len);
        if covered(ranges, offset, end) {
            return false;
        }
        ranges.push((offset, end));
        true
    }
}

/// Whether the union of `ranges` covers `[start, end)`.
fn covered(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut at = start;
    for (s, e) in sorted {
        if s > at {
            break;
        }
        at = at.max(e);
        if at >= end {
            return true;
        }
    }
    at >= end
}

fn map_files_path(pid: pid_t, start: u64, end: u64) -> String {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}")
}

/// The shared memory object behind mapping `m` of process `pid`, if it is
/// one this module makes again; None for a private mapping, a shared
/// mapping of a file on disk (mapped again by path) and device memory.
pub fn object_of(pid: pid_t, m: &Mapping) -> Option<SharedObject> {
    if !m.shared {
        return None;
    }
    let name = m.name.as_str();
    let kind = if name == "/dev/zero (deleted)" || name.starts_with("[anon_shmem:") {
        SharedKind::Anonymous
    } else if name.starts_with("/SYSV") {
        let id = i32::try_from(m.inode).ok()?;
        SharedKind::SysV(crate::sysv::segment(id).ok()?)
    } else if let Some(rest) = name.strip_prefix("/memfd:") {
        SharedKind::Memfd {
            name: rest.strip_suffix(" (deleted)").unwrap_or(rest).to_string(),
        }
    } else if let Some(path) = name.strip_suffix(" (deleted)") {
        if !path.starts_with('/') {
            return None;
        }
        SharedKind::Deleted {
            path: path.to_string(),
        }
    } else if name.starts_with('/') {
        let md = std::fs::metadata(name).ok()?;
        let fs = nix::sys::statfs::statfs(name).ok()?;
        if !md.is_file() || md.ino() != m.inode || fs.filesystem_type().0 as i64 != TMPFS_MAGIC {
            // A file on disk (mapped again by path), a device node (/dev
            // is devtmpfs, which says tmpfs too), or a path that now names
            // another file: as before.
            return None;
        }
        SharedKind::TmpfsFile {
            path: name.to_string(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        }
    } else {
        return None;
    };
    // The object itself, through the mapping (needs CAP_SYS_ADMIN or
    // CAP_CHECKPOINT_RESTORE; without it the region is stored by
    // contents, as a private copy).
    let md = std::fs::metadata(map_files_path(pid, m.start, m.end)).ok()?;
    Some(SharedObject {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        kind,
    })
}

/// Reads a shared region's pages through its object: `start` is the
/// region's address and `offset` its offset in the object.
struct ObjectPages {
    file: File,
    start: u64,
    offset: u64,
}

impl PageSource for ObjectPages {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mut pos = self.offset + (addr - self.start);
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos) {
                // Past the end of the object (a mapping longer than its
                // file): zeros, which are not stored.
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => {
                    done += n;
                    pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A source of a region's pages and the (address, length) runs to read.
pub type DataRuns = (Arc<dyn PageSource>, Vec<(u64, u64)>);

/// The pages of shared region `r` of process `pid` (at `offset` in its
/// object) that may hold data, as (address, length) runs, and a source
/// that reads them through the object. Holes of the object (never
/// written) are skipped without being read.
pub fn data_runs(pid: pid_t, r: &Region, offset: u64) -> Result<DataRuns, Error> {
    mapping_data_runs(pid, r.start, r.end, offset)
}

/// The parts of `[offset, end)` of `file` that may hold data (whole pages,
/// holes skipped), as (start, end) offsets.
pub fn data_ranges(file: &File, offset: u64, end: u64) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    let fd = file.as_raw_fd();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data after pos.
            Err(nix::errno::Errno::ENXIO) => break,
            // No SEEK_DATA here: everything may hold data.
            Err(_) => {
                runs.push((pos, end));
                break;
            }
        };
        if data >= end {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(end),
            Err(_) => end,
        };
        let (s, e) = (data & !(PAGE - 1), hole.div_ceil(PAGE) * PAGE);
        let e = e.min(end);
        match runs.last_mut() {
            Some((_, last)) if *last >= s => *last = (*last).max(e),
            _ => runs.push((s.max(offset), e)),
        }
        pos = e.max(pos + PAGE);
    }
    runs
}

/// [`data_runs`] of the mapping `[start, end)` at `offset` in its object.
fn mapping_data_runs(
    pid: pid_t,
    start: u64,
    end_addr: u64,
    offset: u64,
) -> Result<DataRuns, Error> {
    let path = map_files_path(pid, start, end_addr);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let runs = data_ranges(&file, offset, offset + (end_addr - start));
    let source: Arc<dyn PageSource> = Arc::new(ObjectPages {
        file,
        start,
        offset,
    });
    let runs = runs
        .into_iter()
        .map(|(s, e)| (start + (s - offset), e - s))
        .collect();
    Ok((source, runs))
}

/// A process just forked from a stopped one (an in-memory snapshot, see
/// `tracee::fork_stopped`) shares every MAP_SHARED object with it, which a
/// snapshot must not (DESIGN §3): each shared memory object the child maps
/// is copied into a new one of rewind's, mapped over the old mappings
/// (same addresses, offsets and protection). System V segments and files
/// on disk stay shared.
pub fn unshare_after_fork(child: &crate::tracee::Tracee) -> Result<(), Error> {
    let pid = child.pid;
    let mut groups: Vec<((u64, u64), u64, Vec<Mapping>)> = Vec::new();
    for m in crate::maps::read(pid)? {
        let Some(object) = object_of(pid, &m) else {
            continue;
        };
        if matches!(object.kind, SharedKind::SysV(_)) {
            continue;
        }
        let key = (object.dev, object.ino);
        let need = (m.offset + m.len()).max(object.size);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => {
                g.1 = g.1.max(need);
                g.2.push(m);
            }
            None => groups.push((key, need, vec![m])),
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let tid = pid;
    let inject = |nr: i64, args: &[u64], what: &str| -> Result<u64, Error> {
        let r = crate::tracee::syscall_in_place(child, tid, nr, args)?;
        if r < 0 {
            return Err(Error::Tracee(format!(
                "{what} in a snapshot failed: {}",
                crate::tracee::errno_text(r)
            )));
        }
        Ok(r as u64)
    };
    // A private page of the child's for the paths it opens.
    let scratch = inject(
        libc::SYS_mmap,
        &[
            0,
            PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
        "mmap",
    )?;
    let result = (|| {
        for (_, size, mappings) in &groups {
            let copy = File::from(crate::sys::ipc::shared_anonymous(*size).map_err(|e| {
                Error::Tracee(format!(
                    "cannot copy shared memory for a snapshot: {}",
                    e.desc()
                ))
            })?);
            let mut buf = vec![0u8; 1 << 20];
            for m in mappings {
                let (source, runs) = mapping_data_runs(pid, m.start, m.end, m.offset)?;
                for (addr, len) in runs {
                    let mut at = addr;
                    while at < addr + len {
                        let n = (addr + len - at).min(buf.len() as u64) as usize;
                        source
                            .read(at, &mut buf[..n])
                            .map_err(|e| Error::io(map_files_path(pid, m.start, m.end), e))?;
                        copy.write_all_at(&buf[..n], m.offset + (at - m.start))
                            .map_err(|e| Error::io("a snapshot's copy of shared memory", e))?;
                        at += n as u64;
                    }
                }
            }
            let mut path =
                format!("/proc/{}/fd/{}", std::process::id(), copy.as_raw_fd()).into_bytes();
            path.push(0);
            child.write_mem(scratch, &path)?;
            let fd = inject(
                libc::SYS_openat,
                &[
                    libc::AT_FDCWD as u64,
                    scratch,
                    (libc::O_RDWR | libc::O_CLOEXEC) as u64,
                    0,
                ],
                "open",
            )?;
            let mapped = mappings.iter().try_for_each(|m| {
                inject(
                    libc::SYS_mmap,
                    &[
                        m.start,
                        m.len(),
                        m.prot as u64,
                        (libc::MAP_SHARED | libc::MAP_FIXED) as u64,
                        fd,
                        m.offset,
                    ],
                    "mmap",
                )
                .map(drop)
            });
            inject(libc::SYS_close, &[fd], "close")?;
            mapped?;
        }
        Ok(())
    })();
    inject(libc::SYS_munmap, &[scratch, PAGE], "munmap")?;
    result
}

/// How a restored process maps an object made by [`SharedMemory::prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// rewind's descriptor of it: opened through `/proc/<rewind>/fd` and
    /// mapped.
    Fd(RawFd),
    /// A System V segment to attach (`shmat`), by its id.
    SysV(i32),
}

/// One object as the restart made it.
struct Made {
    backing: Backing,
    /// It held data already (a tmpfs file, a segment that outlived the
    /// program): stored regions are emptied before their pages are written.
    reset: bool,
    _fd: Option<OwnedFd>,
}

/// Every shared memory object (and System V object) of the images being
/// restarted, made once. Dropped before [`SharedMemory::finish`], it
/// removes the System V objects it created.
pub struct SharedMemory {
    made: HashMap<(u64, u64), Made>,
    ipc: crate::sysv::Restored,
}

impl SharedMemory {
    /// Makes every object the regions of `states` (the images of one
    /// restart) map, and, with `recreate_ipc`, the System V objects of the
    /// checkpoint. Without `recreate_ipc` (replay, inspection), POSIX and
    /// System V shared memory come back as shared anonymous memory with
    /// the checkpoint's contents, and nothing outside rewind is touched.
    pub fn prepare(states: &[&ProcessState], recreate_ipc: bool) -> Result<SharedMemory, Error> {
        check_stored(states)?;
        let mut out = SharedMemory {
            made: HashMap::new(),
            ipc: crate::sysv::Restored::default(),
        };
        // The extent each object needs: its size, and every mapping's end.
        let mut objects: Vec<(&SharedObject, u64)> = Vec::new();
        for st in states {
            for r in &st.regions {
                if let RegionKind::Shared { object, offset, .. } = &r.kind {
                    let need = offset.saturating_add(r.end - r.start).max(object.size);
                    match objects
                        .iter_mut()
                        .find(|(o, _)| (o.dev, o.ino) == (object.dev, object.ino))
                    {
                        Some((_, n)) => *n = (*n).max(need),
                        None => objects.push((object, need)),
                    }
                }
            }
        }
        if recreate_ipc {
            if let Some(sysv) = states.iter().find_map(|s| crate::sysv::state_of(s)) {
                out.ipc.restore(&sysv?)?;
            }
        }
        for (object, need) in objects {
            let made = out.make(object, need, recreate_ipc)?;
            out.made.insert((object.dev, object.ino), made);
        }
        Ok(out)
    }

    fn make(
        &mut self,
        object: &SharedObject,
        need: u64,
        recreate_ipc: bool,
    ) -> Result<Made, Error> {
        let fd_made = |fd: OwnedFd, reset: bool| Made {
            backing: Backing::Fd(fd.as_raw_fd()),
            reset,
            _fd: Some(fd),
        };
        let anonymous = |size: u64| {
            crate::sys::ipc::shared_anonymous(size).map_err(|e| {
                Error::Restore(format!(
                    "cannot make {size} bytes of shared memory: {} (restart needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)",
                    e.desc()
                ))
            })
        };
        Ok(match &object.kind {
            SharedKind::Anonymous => fd_made(anonymous(need)?, false),
            SharedKind::TmpfsFile { .. } | SharedKind::SysV(_) if !recreate_ipc => {
                fd_made(anonymous(need)?, false)
            }
            SharedKind::Memfd { name } => fd_made(memfd(name, need)?, false),
            SharedKind::Deleted { path } => fd_made(unlinked_file(path, need)?, false),
            SharedKind::TmpfsFile {
                path,
                mode,
                uid,
                gid,
            } => {
                let existed = std::path::Path::new(path).exists();
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .mode(*mode)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                if !existed {
                    // As it was: the umask does not apply, the owner is
                    // the checkpoint's.
                    let _ = std::os::unix::fs::fchown(&file, Some(*uid), Some(*gid));
                    let _ =
                        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(*mode));
                }
                file.set_len(need).map_err(|e| Error::io(path, e))?;
                fd_made(OwnedFd::from(file), existed)
            }
            SharedKind::SysV(seg) => {
                let (id, reset) = self.ipc.segment(seg)?;
                Made {
                    backing: Backing::SysV(id),
                    reset,
                    _fd: None,
                }
            }
        })
    }

    /// How to map `object`, and whether its stored regions must be emptied
    /// before their pages are written.
    pub fn backing(&self, object: &SharedObject) -> Option<(Backing, bool)> {
        self.made
            .get(&(object.dev, object.ino))
            .map(|m| (m.backing, m.reset))
    }

    /// Every process is restored and attached: segments that were marked
    /// for removal at the checkpoint are marked again, and nothing is
    /// rolled back any more. Returns warnings.
    pub fn finish(mut self) -> Vec<String> {
        std::mem::take(&mut self.ipc).finish()
    }
}

/// Every region that does not store its pages must be covered by regions
/// of the same object that do, in the images given.
fn check_stored(states: &[&ProcessState]) -> Result<(), Error> {
    let mut stored: HashMap<(u64, u64), Vec<(u64, u64)>> = HashMap::new();
    for st in states {
        for r in &st.regions {
            if let RegionKind::Shared {
                object,
                offset,
                stored: true,
            } = &r.kind
            {
                stored
                    .entry((object.dev, object.ino))
                    .or_default()
                    .push((*offset, offset + (r.end - r.start)));
            }
        }
    }
    for st in states {
        for r in &st.regions {
            if let RegionKind::Shared {
                object,
                offset,
                stored: false,
            } = &r.kind
            {
                let have = stored
                    .get(&(object.dev, object.ino))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                if !covered(have, *offset, offset + (r.end - r.start)) {
                    return Err(Error::Restore(format!(
                        "the shared memory {} at {:#x}-{:#x} of process {} is stored in the image of another process of its tree: restart all the images of that checkpoint together",
                        r.name, r.start, r.end, st.vpid
                    )));
                }
            }
        }
    }
    Ok(())
}

fn memfd(name: &str, size: u64) -> Result<OwnedFd, Error> {
    let cname = std::ffi::CString::new(name.replace('\0', ""))
        .map_err(|_| Error::Restore(format!("memfd name {name:?}")))?;
    let fd = nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| Error::Restore(format!("memfd_create({name}): {}", e.desc())))?;
    let file = File::from(fd);
    file.set_len(size)
        .map_err(|e| Error::io(format!("memfd:{name}"), e))?;
    Ok(OwnedFd::from(file))
}

/// A new unlinked file of `size` bytes in the directory of `path` (a file
/// that was deleted while mapped), else a memfd named after it.
fn unlinked_file(path: &str, size: u64) -> Result<OwnedFd, Error> {
    let p = std::path::Path::new(path);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shared".into());
    let made = p.parent().and_then(|dir| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir)
            .ok()
    });
    match made {
        Some(file) => {
            file.set_len(size).map_err(|e| Error::io(path, e))?;
            Ok(OwnedFd::from(file))
        }
        None => memfd(&name, size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(ino: u64) -> SharedObject {
        SharedObject {
            dev: 1,
            ino,
            size: 0x4000,
            kind: SharedKind::Anonymous,
        }
    }

    #[test]
    fn first_mapping_of_a_part_stores_it() {
        let mut t = TreeCapture::default();
        assert!(t.claim(&object(5), 0, 0x4000));
        // The same object again (a child's mapping, a split): stored.
        assert!(!t.claim(&object(5), 0, 0x4000));
        assert!(!t.claim(&object(5), 0x1000, 0x2000));
        // Another object, or a part not stored yet.
        assert!(t.claim(&object(6), 0, 0x4000));
        assert!(t.claim(&object(5), 0x3000, 0x2000));
        assert!(!t.claim(&object(5), 0, 0x5000));
    }

    #[test]
    fn coverage_of_unions() {
        assert!(covered(&[(0, 10), (10, 20)], 0, 20));
        assert!(covered(&[(10, 20), (0, 12)], 5, 15));
        assert!(!covered(&[(0, 10), (11, 20)], 0, 20));
        assert!(!covered(&[], 0, 1));
        assert!(covered(&[(0, 10)], 3, 3));
    }
}
