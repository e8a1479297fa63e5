//! Every structure of the durable image format, declared in one place (DESIGN §8).
//!
//! Layout of an image file (all integers little-endian; "CRC" is CRC-32C,
//! Castagnoli, stored as a u32):
//!
//! ```text
//! [ Preamble, 24 bytes: 8-byte MAGIC, u32 format version, u32 header length,
//!   u32 process state length, CRC of the 20 bytes before it              ]
//! [ Header: bincode (serde, standard config), `header length` bytes; CRC  ]
//! [ Process state: bincode `ProcessState`, `state length` bytes; CRC      ]
//! [ MemoryChunk ]*  each: 20-byte head: u32 CHUNK_MAGIC, u32 raw length,
//!                   u32 compressed length, u32 runs length, CRC of those
//!                   16 bytes; bincode Vec<PageRun> (`runs length` bytes);
//!                   CRC of the runs; zstd frame (`compressed length` bytes,
//!                   content checksum on)
//! [ Trailer, 20 bytes: u32 TRAILER_MAGIC, u64 chunk count, u64 raw bytes ]
//! ```
//!
//! Every byte is checked on reading: the CRCs cover the preamble, header,
//! state, chunk heads and run lists (each length is checked before it is
//! used); zstd's content checksum covers memory; the trailer must agree with
//! the chunks read and end the file. Only the magic and the version are
//! read before the preamble's CRC, so that other versions are recognized.
//!
//! The format version changes whenever any structure below changes shape.
//! All-zero pages are never stored: a page of a region that no run covers
//! is zero (anonymous) or comes from the mapped file (file-backed). The
//! writer puts at most `image::CHUNK_RAW_BYTES` of pages, in any number of
//! runs, in one chunk.

use serde::{Deserialize, Serialize};

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"RWNDIMG\0";
/// Current version of everything in this module.
///
/// Version 2 added `RegionKind::Shared` (and `SharedObject`, `SharedKind`)
/// at the end of its enum, version 3 `FdKind::SharedMemory` at the end of
/// its, version 4 `FdKind::Pty` after it, version 5
/// `SocketState::UnixLinked` and `UnixPending` at the end of its, version 6
/// `SocketState::Udp` and `TcpPending` after them: older images decode unchanged, so all six
/// are read.
pub const FORMAT_VERSION: u32 = 6;
/// Oldest version this build still reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Start of every memory chunk.
pub const CHUNK_MAGIC: u32 = 0x4b4e_4843; // "CHNK"
/// Start of the trailer that closes a complete image.
pub const TRAILER_MAGIC: u32 = 0x444e_4557; // "WEND"

/// Machine and program summary; readable without decoding the process state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `uname -r` of the machine that wrote the image.
    pub kernel: String,
    /// Always "x86_64" for now.
    pub arch: String,
    pub cpu: CpuSummary,
    /// Seconds since the epoch when the checkpoint was taken.
    pub created_unix: u64,
    /// Program name (comm or exe basename) and its virtual pid.
    pub prog: String,
    pub vpid: i32,
    /// Version of rewind that wrote the image (informational).
    pub writer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSummary {
    pub vendor: String,
    /// XCR0 of the writing machine: the xsave features registers may use.
    pub xcr0: u64,
    /// Size of the xsave area the kernel gave for NT_X86_XSTATE.
    pub xsave_size: u32,
}

/// The whole process except the contents of its memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    pub vpid: i32,
    pub vppid: i32,
    /// Virtual process group and session ids. A process tree is a set of
    /// images, one per process, linked by `vpid`/`vppid`; restart recreates
    /// groups and sessions led inside the tree (see `tree.rs`), others are
    /// informational.
    pub vpgid: i32,
    pub vsid: i32,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub cwd: String,
    pub umask: u32,
    pub personality: u32,
    pub rlimits: Vec<Rlimit>,
    pub mm: MmFields,
    /// Raw auxv bytes as the kernel gave them.
    pub auxv: Vec<u8>,
    pub regions: Vec<Region>,
    /// Thread 0 is the thread-group leader.
    pub threads: Vec<ThreadState>,
    /// Signal actions for signals 1..=64 (index 0 is signal 1).
    pub sigactions: Vec<SigAction>,
    /// Process-wide pending signals (raw 128-byte siginfo each).
    pub shared_pending: Vec<Vec<u8>>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF: (interval, value) in microseconds.
    pub itimers: [(u64, u64); 3],
    pub fds: Vec<FdState>,
    /// Virtual-to-real id table of the process when it was captured
    /// (informational; restart builds a new one).
    pub vids: Vec<(i32, i32)>,
    /// Opaque state saved by plugins, by plugin name.
    pub plugin_data: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

/// The mm fields that `prctl(PR_SET_MM_MAP)` restores (see `struct prctl_mm_map`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// One line of /proc/pid/maps, and how to bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    pub shared: bool,
    pub kind: RegionKind,
    /// The name /proc/pid/maps showed (path or [heap], [stack]...).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionKind {
    /// Private anonymous memory (including [heap] and [stack]): every
    /// non-zero page is stored.
    Anon,
    /// A file mapping re-mapped from `path` at restart; for private mappings
    /// the pages that differ from the file are stored.
    File {
        path: String,
        offset: u64,
        identity: FileIdentity,
    },
    /// Memory whose backing cannot be re-opened (deleted file, memfd,
    /// MAP_SHARED|MAP_ANONYMOUS, SysV shm): contents are stored and the
    /// region is recreated as anonymous memory of the same sharing.
    Contents,
    /// The kernel's [vdso], [vvar] and [vvar_vclock]: moved, never written.
    Vdso,
    Vvar,
    VvarVclock,
    /// MAP_SHARED memory of a kernel object that other mappings, of this
    /// process or of other processes of its tree, may share (shared
    /// anonymous memory, memfd, POSIX shm on tmpfs, System V shm). A restart
    /// makes each object once and maps it again in every region that held
    /// it, so writes by one process are seen by the others.
    Shared {
        object: SharedObject,
        /// Offset of the region's first byte in the object.
        offset: u64,
        /// Whether this image stores the region's pages. In a checkpoint of
        /// a tree, the first image (the root's first) that maps a part of an
        /// object stores it; later mappings of a part already stored do
        /// not, and their restart needs that image too.
        stored: bool,
    },
}

/// A shared memory object as the checkpoint found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedObject {
    /// Device and inode of the object at the checkpoint: the mappings with
    /// the same pair share one object.
    pub dev: u64,
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
    pub kind: SharedKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedKind {
    /// MAP_SHARED|MAP_ANONYMOUS memory ("/dev/zero (deleted)" in the maps):
    /// made again as shared anonymous memory.
    Anonymous,
    /// A memfd: made again with memfd_create under the same name.
    Memfd { name: String },
    /// A file on tmpfs that is still linked (POSIX shared memory in
    /// /dev/shm): its mapped parts get the checkpoint's contents back; it
    /// is created again, with its mode and owner, if it is gone.
    TmpfsFile {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A file deleted while mapped (a POSIX shm object after shm_unlink, a
    /// deleted file): made again as an unlinked file in the same directory
    /// (else a memfd), with the checkpoint's contents.
    Deleted { path: String },
    /// A System V shared memory segment attached with shmat: made again
    /// with the same id and key when it is gone (see `sysv.rs`).
    SysV(SysVShm),
}

/// A System V shared memory segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysVShm {
    pub id: i32,
    /// IPC_PRIVATE (0) or the key it was made with; 0 too once removed.
    pub key: i32,
    pub size: u64,
    pub perm: IpcPerm,
    /// Marked for removal (IPC_RMID) while still attached: removed again
    /// once the restarted processes are attached.
    pub removed: bool,
}

/// Owner and mode of a System V IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcPerm {
    pub uid: u32,
    pub gid: u32,
    /// The low 9 permission bits.
    pub mode: u32,
}

/// System V semaphore sets and message queues of a program (the "sysv"
/// plugin's data, bincode, in the root image of a checkpoint), with the
/// segments it made that no process had attached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysVState {
    pub semaphores: Vec<SysVSem>,
    pub queues: Vec<SysVMsg>,
    /// Segments no process of the program had attached, with their
    /// contents.
    pub detached_shm: Vec<DetachedSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedSegment {
    pub segment: SysVShm,
    /// Its non-zero pages, as (offset, bytes) runs.
    pub pages: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysVSem {
    pub id: i32,
    pub key: i32,
    pub perm: IpcPerm,
    /// semval of each semaphore.
    pub values: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysVMsg {
    pub id: i32,
    pub key: i32,
    pub perm: IpcPerm,
    /// msg_qbytes: the most bytes the queue may hold.
    pub qbytes: u64,
    /// Queued messages in order: (type, text).
    pub messages: Vec<(i64, Vec<u8>)>,
}

/// What a file looked like at checkpoint; restart refuses a file that changed
/// under a mapping whose pages were not all stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub vtid: i32,
    /// The thread's name (/proc/pid/task/tid/comm).
    pub comm: String,
    /// `struct user_regs_struct`, 27 u64 in kernel order.
    pub regs: Vec<u64>,
    /// NT_X86_XSTATE bytes.
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    /// Thread-directed pending signals (raw 128-byte siginfo each).
    pub pending: Vec<Vec<u8>>,
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    pub altstack: (u64, i32, u64),
    /// rseq registration: (address, length, signature).
    pub rseq: Option<(u64, u32, u32)>,
    pub clear_child_tid: u64,
    /// (head, len) of the robust futex list.
    pub robust_list: (u64, u64),
}

/// One `struct kernel_sigaction` (handler, flags, restorer, mask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    pub fd: i32,
    /// O_* flags from fdinfo (access mode, O_APPEND, O_NONBLOCK...).
    pub flags: u32,
    pub cloexec: bool,
    pub kind: FdKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// One of the descriptors `rewind launch` passed in (its stdin, stdout or
    /// stderr): restart passes its own descriptor of the same number.
    Inherited {
        from: i32,
    },
    /// A terminal: re-bound to the terminal of `rewind restart`.
    Tty {
        path: String,
    },
    /// A file or device node re-opened by path.
    Path {
        path: String,
        pos: u64,
    },
    /// A file that was deleted while open: contents stored.
    DeletedFile {
        path: String,
        pos: u64,
        contents: Vec<u8>,
    },
    /// One end of a pipe; pipes are matched by `id` (the kernel inode).
    Pipe {
        id: u64,
        write_end: bool,
        buffered: Vec<u8>,
    },
    EventFd {
        count: u64,
        semaphore: bool,
    },
    TimerFd {
        clockid: i32,
        /// (interval, value) in nanoseconds; value is relative to capture time.
        interval_ns: u64,
        value_ns: u64,
        ticks: u64,
    },
    SignalFd {
        mask: u64,
    },
    Epoll {
        watches: Vec<EpollWatch>,
    },
    /// Something the engine cannot recreate (socket to the outside world...):
    /// restored as /dev/null with a warning naming it.
    Unsupported {
        what: String,
    },
    /// One end of a connected pair of unix sockets whose two ends are both
    /// in the program (socketpair): the pair is made again; `queued` holds
    /// what waited to be read at this end (messages, or stream bytes).
    UnixPair {
        /// The smaller inode of the two ends.
        id: u64,
        /// 0 for the end with the smaller inode.
        end: u8,
        sock_type: i32,
        queued: Vec<Vec<u8>>,
    },
    /// A listening TCP socket: bound again to its address and port.
    TcpListener {
        v6: bool,
        /// The address, 4 or 16 bytes in network order.
        addr: Vec<u8>,
        port: u16,
    },
    /// A listening unix socket: bound again to its path (a stale socket
    /// file there is removed first) or abstract name (leading NUL).
    UnixListener {
        name: Vec<u8>,
        sock_type: i32,
    },
    /// A descriptor a plugin recreates at restart (a KVM VM, a tun device):
    /// the file plugin leaves its number free.
    Plugin {
        plugin: String,
        what: String,
    },
    /// A socket that rewind rebuilds itself at restart and hands to the
    /// program (see `crate::sockets`). `id` is its inode at the checkpoint:
    /// the descriptors of one socket, in one process or in several, share
    /// it, and a connection's two ends name each other by it.
    Socket {
        id: u64,
        socket: SocketState,
    },
    /// A descriptor of a shared memory object the process maps too (a file
    /// deleted while open and mapped, such as MPICH's segments, or a
    /// memfd): opened at restart on the object its mappings share (see
    /// `crate::shm`), whose contents the regions store; `unmapped` holds
    /// the data of the parts no mapping of this process covers, as
    /// (offset, bytes), written into the object at restart.
    SharedMemory {
        object: SharedObject,
        pos: u64,
        unmapped: Vec<(u64, Vec<u8>)>,
    },
    /// One end of a pseudo-terminal the program made (a process of the
    /// checkpoint opened /dev/ptmx and holds its master): the pair is made
    /// again at restart (see `crate::pty`), with its settings and the
    /// bytes in flight, and the descriptors that shared an open file share
    /// one again. A terminal whose master is outside the program (the one
    /// `rewind launch` ran in) is [`FdKind::Tty`] instead.
    Pty {
        /// The master side (/dev/ptmx), else a slave (/dev/pts/N).
        master: bool,
        /// Which open file of that side: descriptors of the checkpoint with
        /// the same number share one (inherited across fork, dup'ed). The
        /// master has one open file, 0; slaves are numbered from 1.
        file: u32,
        pty: Box<PtyState>,
    },
}

/// A pseudo-terminal of the program as the checkpoint found it (every
/// descriptor of it carries the same copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyState {
    /// Its index: the slave is /dev/pts/<index>.
    pub index: u32,
    /// The path the master was opened through (/dev/ptmx).
    pub ptmx: String,
    pub termios: Termios,
    /// TIOCGLCKTRMIOS: the settings' bits no one may change (usually none).
    pub locked_termios: Termios,
    /// Rows, columns, x and y pixels.
    pub winsize: [u16; 4],
    /// The master is in packet mode (TIOCPKT).
    pub packet_mode: bool,
    /// The slave is locked (no unlockpt yet).
    pub locked: bool,
    /// Exclusive mode (TIOCEXCL).
    pub exclusive: bool,
    /// What the slave side wrote that the master's reader has not read, as
    /// that reader gets it (after output processing).
    pub output: Vec<u8>,
    /// Complete lines waiting for the slave's reader in canonical mode, one
    /// by one as a read returns them: each ends with its newline (or EOL
    /// character), except a line ended by the EOF character (an empty one
    /// is a bare EOF).
    pub input_lines: Vec<Vec<u8>>,
    /// Then the rest of the input: the line being typed (canonical mode),
    /// or every byte waiting (non-canonical mode).
    pub input_rest: Vec<u8>,
    /// The session whose controlling terminal it is (the virtual pid of
    /// its leader), and its foreground process group (virtual).
    pub session: Option<i32>,
    pub foreground: Option<i32>,
}

/// A process stopped by job control at the checkpoint (the `jobs`
/// plugin's data): it is held stopped after a restart until a SIGCONT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStop {
    /// The signal that stopped it (SIGTSTP, SIGTTIN, SIGTTOU, SIGSTOP).
    pub signal: i32,
}

/// A terminal's settings (`struct termios2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    /// The line discipline (0, N_TTY).
    pub line: u8,
    /// The control characters (c_cc, 19 of them).
    pub cc: Vec<u8>,
    pub ispeed: u32,
    pub ospeed: u32,
}

/// What a socket was at the checkpoint, enough to make it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketState {
    /// A listening TCP socket (connections not accepted yet are not kept).
    TcpListener {
        addr: std::net::SocketAddr,
        backlog: u32,
        options: Vec<SockOpt>,
    },
    /// One end of a TCP connection whose other end is part of the
    /// checkpoint too (same process tree, or another program of the
    /// coordinator's computation), read with TCP_REPAIR.
    Tcp(Box<TcpConnection>),
    /// A unix socket: listening, bound, connected or neither.
    Unix(Box<UnixEnd>),
    /// A TCP socket not connected (nor connecting, nor listening): made
    /// again, bound to `addr` when its port is not 0.
    TcpBound {
        addr: std::net::SocketAddr,
        options: Vec<SockOpt>,
    },
    /// A connection whose other end is not part of the checkpoint: it comes
    /// back as a closed connection that first delivers what had arrived.
    Closed {
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET (of the unix socket
        /// standing in for it).
        sock_type: i32,
        /// What waited to be read.
        queued: Vec<Vec<u8>>,
        /// Its description (`TCP 127.0.0.1:5000 -> 10.0.0.2:80`).
        what: String,
        /// The other end was alive outside the checkpoint (a warning at
        /// restart), rather than already closed.
        outside: bool,
    },
    /// A unix datagram socket that exchanged datagrams with sockets of
    /// other programs of the coordinator's computation (version 5): the
    /// restarts of those programs hand their sockets to each other, so
    /// that datagrams in flight are sent again from their senders.
    UnixLinked {
        end: Box<UnixEnd>,
        links: Vec<DgramLink>,
    },
    /// The client end of a unix connection that the listener `listener`
    /// (part of the checkpoint) had not accepted yet, `position`th in its
    /// queue, the client having sent nothing yet (version 5): connected to
    /// the rebuilt listener again, in queue order, for the program to
    /// accept.
    UnixPending {
        end: Box<UnixEnd>,
        listener: u64,
        position: u32,
    },
    /// A UDP socket (IPv4 or IPv6, version 6): made again with its
    /// address, its peer and options, the datagrams waiting at it sent to
    /// it again from their senders' addresses.
    Udp(Box<UdpEnd>),
    /// The client end of a TCP connection that the listener `listener`
    /// (part of the checkpoint) had not accepted yet, nothing sent on it
    /// either way (version 6): connected to the rebuilt listener again
    /// from the same address, `position`th in the order of the listener's
    /// queue, for the program to accept.
    TcpPending {
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        listener: u64,
        position: u32,
        options: Vec<SockOpt>,
    },
}

impl SocketState {
    /// The unix socket this is, if it is one.
    pub fn unix(&self) -> Option<&UnixEnd> {
        match self {
            SocketState::Unix(u)
            | SocketState::UnixLinked { end: u, .. }
            | SocketState::UnixPending { end: u, .. } => Some(u),
            _ => None,
        }
    }

    /// Its links to datagram sockets of other programs.
    pub fn dgram_links(&self) -> &[DgramLink] {
        match self {
            SocketState::UnixLinked { links, .. } => links,
            SocketState::Udp(u) => &u.links,
            _ => &[],
        }
    }
}

/// A datagram socket of another program of the coordinator's computation
/// that a unix datagram socket of this one exchanged datagrams with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramLink {
    /// Its inode at the checkpoint.
    pub id: u64,
    /// Its name (empty if unnamed).
    pub name: Vec<u8>,
    /// The host (`hostname/netns inode`) both lived on.
    pub host: String,
    /// Datagrams from it wait at this socket, or this socket is connected
    /// to it: the restart takes it from the other program's restart (to
    /// send them again from it, to connect to it).
    pub takes: bool,
    /// The other way round: the restart hands this socket to the other
    /// program's. Neither: the two could exchange datagrams (one is named),
    /// so their programs are only held until both are back.
    pub gives: bool,
}

/// A UDP socket as the checkpoint found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpEnd {
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// The address it is bound to (None: no port yet).
    pub local: Option<std::net::SocketAddr>,
    /// The address it is connected to.
    pub remote: Option<std::net::SocketAddr>,
    /// The datagrams waiting to be read, in order, with their senders.
    pub queued: Vec<Datagram>,
    pub options: Vec<SockOpt>,
    /// UDP sockets of other programs of the coordinator's computation it
    /// has datagrams from (`takes`: their restarts hand them over, and the
    /// datagrams are sent again from them), or that have datagrams from it
    /// (`gives`), or that could exchange datagrams with it (neither: the
    /// programs are only held until both are back). `name` is the other
    /// socket's address as [`crate::sockets::sockaddr`] makes it.
    pub links: Vec<DgramLink>,
}

/// A datagram waiting at a UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    /// The sender's address, as `recvfrom` reported it.
    pub from: Option<std::net::SocketAddr>,
    pub data: Vec<u8>,
}

/// A socket option as `getsockopt` returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockOpt {
    pub level: i32,
    pub name: i32,
    pub value: Vec<u8>,
}

/// Where the other end of a connection comes back from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerPlace {
    /// An image of the same process tree: the same restart rebuilds it.
    Tree,
    /// Another program of the coordinator's computation: its own restart
    /// rebuilds it. `host` identifies the network namespace the connection
    /// lived in (`hostname/netns inode`), which matters for loopback ones.
    Computation { host: String },
}

/// One end of a TCP connection (DESIGN §3: sequence numbers and both
/// queues, read without consuming them). Sequence numbers leave out FINs:
/// `snd_una` is the first byte not yet acknowledged, `copied_seq` the first
/// byte not yet read by the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpConnection {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// The kernel's TCP state number (1 = ESTABLISHED...).
    pub state: u8,
    pub peer: PeerPlace,
    pub snd_una: u32,
    /// Bytes sent but not acknowledged, then bytes not sent yet.
    pub sent: Vec<u8>,
    pub unsent: Vec<u8>,
    /// The program shut its sending side down (a FIN follows the data).
    pub fin_sent: bool,
    pub copied_seq: u32,
    /// Bytes received and not read yet.
    pub received: Vec<u8>,
    /// The peer's FIN arrived.
    pub fin_received: bool,
    pub mss: u32,
    /// `tcpi_options` (TCPI_OPT_*), and window scales.
    pub tcp_options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// TCP_TIMESTAMP (the timestamp clock, with its offset).
    pub timestamp: u32,
    /// TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: Option<[u32; 5]>,
    /// SO_SNDBUF, SO_RCVBUF and SO_BUF_LOCK.
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub buf_lock: u32,
    pub options: Vec<SockOpt>,
}

/// A unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixEnd {
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub sock_type: i32,
    /// The name it is bound to: a path (relative ones are the program's
    /// cwd's), or an abstract name starting with a NUL byte; empty if none.
    pub name: Vec<u8>,
    /// Listening, with this backlog.
    pub listening: Option<u32>,
    pub peer: Option<UnixPeer>,
    /// What waits to be read: datagrams and records one by one with the
    /// sender's name, a stream's bytes as one entry.
    pub queued: Vec<Message>,
    /// sk_shutdown (1: no more reading, 2: no more writing).
    pub shutdown: u8,
    pub options: Vec<SockOpt>,
}

/// The other end of a connected unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixPeer {
    /// Its inode (the `id` of its [`FdKind::Socket`] when it is part of
    /// the checkpoint).
    pub id: u64,
    /// Its name (a server's path for a connection made through a listener).
    pub name: Vec<u8>,
    /// Whether it is part of the checkpoint; if not, whether it was alive.
    pub held: bool,
    pub alive: bool,
    /// Held by another program of the coordinator's computation, on the
    /// host (`hostname/netns inode`) both lived on: that program's restart
    /// rebuilds the connection with this one's.
    pub elsewhere: Option<String>,
}

/// One message waiting at a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's name (raw unix address bytes after the family; empty
    /// when unnamed).
    pub from: Vec<u8>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWatch {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// A run of consecutive stored pages inside one memory chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    pub addr: u64,
    pub len: u64,
}
