//! System V IPC (semaphore sets, message queues, shared memory segments)
//! from rewind's own process, and shared anonymous memory objects: raw
//! syscalls with the kernel's 64-bit structures (x86-64 always uses the
//! IPC_64 layouts), one small safe function per operation.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `struct ipc64_perm` (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Ipc64Perm {
    key: i32,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
    mode: u32,
    seq: u16,
    pad2: u16,
    unused1: u64,
    unused2: u64,
}

/// `struct semid64_ds` on x86-64 (104 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Semid64Ds {
    perm: Ipc64Perm,
    otime: i64,
    unused1: u64,
    ctime: i64,
    unused2: u64,
    nsems: u64,
    unused3: u64,
    unused4: u64,
}

/// `struct msqid64_ds` on x86-64 (120 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Msqid64Ds {
    perm: Ipc64Perm,
    stime: i64,
    rtime: i64,
    ctime: i64,
    cbytes: u64,
    qnum: u64,
    qbytes: u64,
    lspid: i32,
    lrpid: i32,
    unused4: u64,
    unused5: u64,
}

/// `struct shmid64_ds` on x86-64 (112 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Shmid64Ds {
    perm: Ipc64Perm,
    segsz: u64,
    atime: i64,
    dtime: i64,
    ctime: i64,
    cpid: i32,
    lpid: i32,
    nattch: u64,
    unused4: u64,
    unused5: u64,
}

const IPC_RMID: i64 = 0;
const IPC_SET: i64 = 1;
const IPC_STAT: i64 = 2;
const GETALL: i64 = 13;
const SETALL: i64 = 17;
/// shm_perm.mode bit of a segment marked for removal.
pub const SHM_DEST: u32 = 0o1000;
pub const IPC_CREAT: i32 = 0o1000;
pub const IPC_EXCL: i32 = 0o2000;
const IPC_NOWAIT: i64 = 0o4000;
const MSG_NOERROR: i64 = 0o10000;
const MSG_COPY: i64 = 0o40000;

/// What IPC_STAT says of any of the three kinds of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcStat {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    /// Mode bits as the kernel keeps them (SHM_DEST included for segments).
    pub mode: u32,
    /// Semaphores in a set; bytes of a segment; messages in a queue.
    pub count: u64,
    /// msg_qbytes of a queue; attaches of a segment; 0 for a set.
    pub extra: u64,
}

fn ret(r: libc::c_long) -> Result<i64, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// semctl(id, 0, IPC_STAT).
pub fn sem_stat(id: i32) -> Result<IpcStat, Errno> {
    let mut ds = Semid64Ds::default();
    // SAFETY: IPC_STAT writes one semid64_ds to the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_STAT, &mut ds as *mut Semid64Ds) })?;
    Ok(IpcStat {
        key: ds.perm.key,
        uid: ds.perm.uid,
        gid: ds.perm.gid,
        mode: ds.perm.mode,
        count: ds.nsems,
        extra: 0,
    })
}

/// semctl(id, 0, GETALL): the value of each of the set's `n` semaphores.
pub fn sem_values(id: i32, n: usize) -> Result<Vec<u16>, Errno> {
    let mut values = vec![0u16; n];
    // SAFETY: GETALL writes nsems shorts; `values` holds `n`, the set's
    // size as IPC_STAT gave it (a set's size never changes).
    ret(unsafe { libc::syscall(libc::SYS_semctl, id, 0, GETALL, values.as_mut_ptr()) })?;
    Ok(values)
}

/// semctl(id, 0, SETALL): `values` must hold one value per semaphore.
pub fn sem_set_values(id: i32, values: &[u16]) -> Result<(), Errno> {
    let stat = sem_stat(id)?;
    if stat.count != values.len() as u64 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: SETALL reads nsems shorts, which `values` holds (checked).
    ret(unsafe { libc::syscall(libc::SYS_semctl, id, 0, SETALL, values.as_ptr()) })?;
    Ok(())
}

/// semctl(id, 0, IPC_SET): owner and mode.
pub fn sem_set_perm(id: i32, uid: u32, gid: u32, mode: u32) -> Result<(), Errno> {
    let mut ds = Semid64Ds::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    // SAFETY: IPC_SET reads one semid64_ds from the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_SET, &ds as *const Semid64Ds) })?;
    Ok(())
}

/// semget(key, nsems, flags).
pub fn sem_get(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: semget takes plain integers.
    ret(unsafe { libc::syscall(libc::SYS_semget, key, nsems, flags) }).map(|v| v as i32)
}

/// semctl(id, 0, IPC_RMID).
pub fn sem_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no pointer.
    ret(unsafe { libc::syscall(libc::SYS_semctl, id, 0, IPC_RMID, 0) })?;
    Ok(())
}

/// msgctl(id, IPC_STAT): `count` is the number of messages, `extra` the
/// queue's msg_qbytes.
pub fn msg_stat(id: i32) -> Result<IpcStat, Errno> {
    let mut ds = Msqid64Ds::default();
    // SAFETY: IPC_STAT writes one msqid64_ds to the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_STAT, &mut ds as *mut Msqid64Ds) })?;
    Ok(IpcStat {
        key: ds.perm.key,
        uid: ds.perm.uid,
        gid: ds.perm.gid,
        mode: ds.perm.mode,
        count: ds.qnum,
        extra: ds.qbytes,
    })
}

/// msgctl(id, IPC_SET): owner, mode and msg_qbytes.
pub fn msg_set(id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> Result<(), Errno> {
    let mut ds = Msqid64Ds::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    ds.qbytes = qbytes;
    // SAFETY: IPC_SET reads one msqid64_ds from the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_SET, &ds as *const Msqid64Ds) })?;
    Ok(())
}

/// msgget(key, flags).
pub fn msg_get(key: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: msgget takes plain integers.
    ret(unsafe { libc::syscall(libc::SYS_msgget, key, flags) }).map(|v| v as i32)
}

/// msgctl(id, IPC_RMID).
pub fn msg_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no pointer.
    ret(unsafe { libc::syscall(libc::SYS_msgctl, id, IPC_RMID, 0) })?;
    Ok(())
}

/// A `struct msgbuf` of `max` bytes of text: the type, then the text.
fn msgbuf(max: usize) -> Vec<u64> {
    vec![0u64; 1 + max.div_ceil(8)]
}

fn split_msgbuf(buf: &[u64], len: usize) -> (i64, Vec<u8>) {
    let mtype = buf.first().copied().unwrap_or(0) as i64;
    let text: Vec<u8> = buf
        .iter()
        .skip(1)
        .flat_map(|w| w.to_ne_bytes())
        .take(len)
        .collect();
    (mtype, text)
}

/// A copy of the `index`-th message of queue `id` (msgrcv with MSG_COPY:
/// the queue is left as it is), with at most `max` bytes of text.
pub fn msg_copy(id: i32, index: u64, max: usize) -> Result<(i64, Vec<u8>), Errno> {
    let mut buf = msgbuf(max);
    // SAFETY: msgrcv writes the type and at most `max` bytes of text to
    // the buffer, which holds 8 + max bytes.
    let n = ret(unsafe {
        libc::syscall(
            libc::SYS_msgrcv,
            id,
            buf.as_mut_ptr(),
            max,
            index,
            IPC_NOWAIT | MSG_COPY | MSG_NOERROR,
        )
    })?;
    Ok(split_msgbuf(&buf, n as usize))
}

/// Takes the first message off queue `id` without waiting; None when it
/// is empty.
pub fn msg_take(id: i32, max: usize) -> Result<Option<(i64, Vec<u8>)>, Errno> {
    let mut buf = msgbuf(max);
    // SAFETY: msgrcv writes the type and at most `max` bytes of text to
    // the buffer, which holds 8 + max bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_msgrcv,
            id,
            buf.as_mut_ptr(),
            max,
            0,
            IPC_NOWAIT | MSG_NOERROR,
        )
    };
    match ret(r) {
        Ok(n) => Ok(Some(split_msgbuf(&buf, n as usize))),
        Err(Errno::ENOMSG) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Queues a message without waiting (msgsnd with IPC_NOWAIT).
pub fn msg_send(id: i32, mtype: i64, text: &[u8]) -> Result<(), Errno> {
    let mut buf = msgbuf(text.len());
    buf[0] = mtype as u64;
    for (i, chunk) in text.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        buf[1 + i] = u64::from_ne_bytes(w);
    }
    // SAFETY: msgsnd reads the type and text.len() bytes of text from the
    // buffer, which holds them.
    ret(unsafe { libc::syscall(libc::SYS_msgsnd, id, buf.as_ptr(), text.len(), IPC_NOWAIT) })?;
    Ok(())
}

/// shmctl(id, IPC_STAT): `count` is the segment's size, `extra` its
/// number of attaches.
pub fn shm_stat(id: i32) -> Result<IpcStat, Errno> {
    let mut ds = Shmid64Ds::default();
    // SAFETY: IPC_STAT writes one shmid64_ds to the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_shmctl, id, IPC_STAT, &mut ds as *mut Shmid64Ds) })?;
    Ok(IpcStat {
        key: ds.perm.key,
        uid: ds.perm.uid,
        gid: ds.perm.gid,
        mode: ds.perm.mode,
        count: ds.segsz,
        extra: ds.nattch,
    })
}

/// shmctl(id, IPC_SET): owner and mode.
pub fn shm_set_perm(id: i32, uid: u32, gid: u32, mode: u32) -> Result<(), Errno> {
    let mut ds = Shmid64Ds::default();
    ds.perm.uid = uid;
    ds.perm.gid = gid;
    ds.perm.mode = mode;
    // SAFETY: IPC_SET reads one shmid64_ds from the pointer, a valid local.
    ret(unsafe { libc::syscall(libc::SYS_shmctl, id, IPC_SET, &ds as *const Shmid64Ds) })?;
    Ok(())
}

/// shmget(key, size, flags).
pub fn shm_get(key: i32, size: u64, flags: i32) -> Result<i32, Errno> {
    // SAFETY: shmget takes plain integers.
    ret(unsafe { libc::syscall(libc::SYS_shmget, key, size, flags) }).map(|v| v as i32)
}

/// shmctl(id, IPC_RMID).
pub fn shm_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no pointer.
    ret(unsafe { libc::syscall(libc::SYS_shmctl, id, IPC_RMID, 0) })?;
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` of segment `id` through a brief
/// read-only attach of rewind's own.
pub fn shm_read(id: i32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let size = shm_stat(id)?.count;
    if offset
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > size)
    {
        return Err(Errno::EINVAL);
    }
    // SAFETY: shmat maps the segment where the kernel chooses; nothing of
    // ours lives there.
    let at = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if at as isize == -1 {
        return Err(Errno::last());
    }
    // SAFETY: the segment is mapped readable at `at` for `size` bytes and
    // [offset, offset + len) lies inside it (checked); `buf` is ours.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (at as *const u8).add(offset as usize),
            buf.as_mut_ptr(),
            buf.len(),
        );
        libc::shmdt(at);
    }
    Ok(())
}

/// Writes `data` at `offset` of segment `id` through a brief attach of
/// rewind's own.
pub fn shm_write(id: i32, offset: u64, data: &[u8]) -> Result<(), Errno> {
    let size = shm_stat(id)?.count;
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|end| end > size)
    {
        return Err(Errno::EINVAL);
    }
    // SAFETY: shmat maps the segment where the kernel chooses; nothing of
    // ours lives there.
    let at = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if at as isize == -1 {
        return Err(Errno::last());
    }
    // SAFETY: the segment is mapped writable at `at` for `size` bytes and
    // [offset, offset + len) lies inside it (checked); `data` is ours.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (at as *mut u8).add(offset as usize),
            data.len(),
        );
        libc::shmdt(at);
    }
    Ok(())
}

/// A new shared anonymous memory object of `size` bytes (what
/// mmap(MAP_SHARED|MAP_ANONYMOUS) makes: "/dev/zero (deleted)" in the
/// maps), as a descriptor others may open through /proc and map. Needs
/// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (/proc/self/map_files).
pub fn shared_anonymous(size: u64) -> Result<OwnedFd, Errno> {
    let len = usize::try_from(size).map_err(|_| Errno::EINVAL)?;
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: a new mapping where the kernel chooses; nothing of ours is
    // replaced, and it is unmapped below before anyone uses it.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let start = at as usize;
    let path = format!("/proc/self/map_files/{:x}-{:x}\0", start, start + len);
    // SAFETY: `path` is NUL-terminated; open returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    };
    let err = Errno::last();
    // SAFETY: the mapping made above, used by nothing else.
    unsafe { libc::munmap(at, len) };
    if fd < 0 {
        return Err(err);
    }
    // SAFETY: `fd` was just opened and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structure_sizes() {
        assert_eq!(std::mem::size_of::<Ipc64Perm>(), 48);
        assert_eq!(std::mem::size_of::<Semid64Ds>(), 104);
        assert_eq!(std::mem::size_of::<Msqid64Ds>(), 120);
        assert_eq!(std::mem::size_of::<Shmid64Ds>(), 112);
    }

    #[test]
    fn semaphores_queues_and_segments_round_trip() {
        let sem = sem_get(0, 3, IPC_CREAT | 0o600).expect("semget");
        sem_set_values(sem, &[1, 0, 7]).expect("setall");
        assert_eq!(sem_values(sem, 3).expect("getall"), vec![1, 0, 7]);
        assert_eq!(sem_stat(sem).expect("stat").count, 3);
        sem_remove(sem).expect("rmid");
        assert!(sem_stat(sem).is_err());

        let q = msg_get(0, IPC_CREAT | 0o600).expect("msgget");
        msg_send(q, 3, b"hello").expect("send");
        msg_send(q, 5, b"").expect("send");
        assert_eq!(msg_stat(q).expect("stat").count, 2);
        assert_eq!(msg_copy(q, 1, 64).expect("copy"), (5, Vec::new()));
        assert_eq!(msg_copy(q, 0, 64).expect("copy"), (3, b"hello".to_vec()));
        assert_eq!(msg_stat(q).expect("stat").count, 2, "a copy takes nothing");
        assert_eq!(msg_take(q, 64).expect("take"), Some((3, b"hello".to_vec())));
        assert_eq!(msg_take(q, 64).expect("take"), Some((5, Vec::new())));
        assert_eq!(msg_take(q, 64).expect("take"), None);
        msg_remove(q).expect("rmid");

        let shm = shm_get(0, 10_000, IPC_CREAT | 0o600).expect("shmget");
        shm_write(shm, 9_000, b"abc").expect("write");
        let mut b = [0u8; 4];
        shm_read(shm, 8_999, &mut b).expect("read");
        assert_eq!(&b, b"\0abc");
        assert!(shm_read(shm, 9_998, &mut b).is_err());
        shm_remove(shm).expect("rmid");
    }

    #[test]
    fn shared_anonymous_object_is_writable_through_its_descriptor() {
        use std::os::unix::fs::FileExt;
        let fd = shared_anonymous(3 * 4096).expect("object");
        let file = std::fs::File::from(fd);
        file.write_all_at(b"xyz", 4096).expect("write");
        let mut b = [0u8; 3];
        file.read_exact_at(&mut b, 4096).expect("read");
        assert_eq!(&b, b"xyz");
        assert_eq!(file.metadata().expect("stat").len(), 3 * 4096);
    }
}
