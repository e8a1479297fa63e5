//! Every structure of the trace format, declared in one place (DESIGN §4).
//!
//! A trace is a directory:
//!
//! ```text
//! header        8-byte TRACE_MAGIC, u32 LE version, u32 LE length, bincode TraceHeader
//! initial.rwd   the engine's image of the program at its first instruction
//! exec-N.rwd    images taken when the program exec'd another binary
//! events        chunks: u32 LE CHUNK_MAGIC, u32 LE event count, u32 LE raw
//!               length, u32 LE compressed length, zstd frame (checksummed)
//!               of the bincode events, one after another
//! end           bincode TraceEnd, written when the recording finished
//! proc-PID/     a process the program made (fork, vfork, clone without
//!               CLONE_THREAD), recorded too: its own `events`, `exec-N.rwd`
//!               and `end`; it starts as a copy of its parent at the
//!               parent's `Event::Fork`
//! blobs/KEY     the bytes of a file the program mapped, zstd, one per file
//!               version and range however many processes map it (`Mapped`)
//! schedule      with such processes: SCHEDULE_MAGIC, then a zstd frame of
//!               the bincode `Schedule` (the order across processes)
//! ```

use serde::{Deserialize, Serialize};

pub const TRACE_MAGIC: [u8; 8] = *b"RWNDTRC\0";
/// Version 2 added `Event::Mark`, version 3 `Event::Buffered` and
/// `Event::Patch` (the syscall buffer), version 4 `Event::Fork`, the
/// processes of a tree and `Event::Mapped`; versions 1 to 3 are read as
/// well.
pub const TRACE_VERSION: u32 = 4;
pub const TRACE_VERSION_MIN: u32 = 1;
pub const CHUNK_MAGIC: u32 = 0x5645_4e54; // "TNEV"
pub const SCHEDULE_MAGIC: [u8; 8] = *b"RWNDSCH\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub kernel: String,
    /// CPU vendor and the "flags" line of /proc/cpuinfo: CPUID cannot be
    /// trapped here, so replay on a CPU with other features is refused.
    pub cpu_vendor: String,
    pub cpu_flags: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub created_unix: u64,
    /// Memory checksums were recorded at every event (--verify=memory).
    pub verify_memory: bool,
    /// The CPU the program was pinned to: CPUID (which cannot be trapped
    /// here) reports the CPU's APIC id, so replay runs on the same one.
    pub cpu: u32,
}

/// One nondeterministic event, in the order the recorder processed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A trapped syscall made by `tid`, with its result and the memory the
    /// kernel wrote. `regs` is a checksum of the registers at entry.
    Syscall {
        tid: i32,
        nr: i64,
        args: [u64; 6],
        ret: i64,
        writes: Vec<(u64, Vec<u8>)>,
        regs: u64,
        mem: Option<u64>,
        /// For writes: 1 or 2 when the descriptor was the recording
        /// session's stdout or stderr (what replay shows), else 0.
        console: u8,
    },
    /// `tid` entered a syscall that may block (its result is a later
    /// `Syscall` event): replay runs the thread up to here at this point.
    Enter {
        tid: i32,
        nr: i64,
        args: [u64; 6],
        regs: u64,
    },
    /// rdtsc (aux None) or rdtscp executed by `tid`.
    Rdtsc {
        tid: i32,
        value: u64,
        aux: Option<u32>,
        regs: u64,
    },
    /// A signal delivered to `tid`: synchronous ones re-occur by themselves
    /// in replay; asynchronous ones were delivered right after `tid`'s last
    /// syscall and are sent again there.
    Signal {
        tid: i32,
        sig: i32,
        info: Vec<u8>,
        sync: bool,
        regs: u64,
    },
    /// `tid` exec'd: the process is replaced by image `image` (a file of the
    /// trace directory).
    Exec { tid: i32, image: String },
    /// `tid` was preempted after running too long without an event, with
    /// this register file (`user_regs_struct`, 27 words): replay runs it
    /// until its registers are these again (DESIGN §5, no counters).
    Preempt { tid: i32, regs: Vec<u64> },
    /// A periodic checkpoint: image `image` holds the process exactly as it
    /// was here (every thread stopped at a syscall boundary or not yet
    /// started); `replay --from` starts from it.
    Checkpoint { image: String },
    /// Where a debugger stopped a live recording (`rewind debug -- PROG`):
    /// `tid` ran from the previous event to its first arrival at a
    /// breakpoint at `addr`, with this register file (27 words, checked in
    /// replay). Replay runs the thread there.
    Mark { tid: i32, addr: u64, regs: Vec<u64> },
    /// Syscalls `tid` made through the in-process buffer since its last
    /// stop (record/replay `sbuf`): records of `sbuf::REC_HEADER` bytes
    /// (size, nr, args, result, written address and length) followed by
    /// the written bytes. Replay loads them into the buffer; the thread
    /// consumes them before its next event.
    Buffered { tid: i32, data: Vec<u8> },
    /// A syscall site patched to jump to the buffer's code, after the
    /// syscall event of `tid` there: `area` (if not 0) is a new stub area
    /// of `sbuf::AREA_LEN` bytes mapped first (r-x), then `writes`.
    Patch {
        tid: i32,
        area: u64,
        writes: Vec<(u64, Vec<u8>)>,
    },
    /// `tid`, inside fork, vfork or a clone without CLONE_THREAD, made the
    /// process `child` (recorded in `proc-<child>/`). The call's result is
    /// its later `Syscall` event. Replaying the whole tree, the call runs
    /// for real here; replaying one process, nothing happens.
    Fork { tid: i32, child: i32 },
    /// The bytes of a file `tid` just mapped privately (the `Syscall` event
    /// of the mmap comes right before): file `blobs/<blob>` of the trace
    /// (zstd), stored once however many processes map the same file, is
    /// written at `addr`.
    Mapped { tid: i32, addr: u64, blob: String },
}

impl Event {
    pub fn tid(&self) -> i32 {
        match self {
            Event::Syscall { tid, .. }
            | Event::Enter { tid, .. }
            | Event::Rdtsc { tid, .. }
            | Event::Signal { tid, .. }
            | Event::Exec { tid, .. }
            | Event::Preempt { tid, .. }
            | Event::Mark { tid, .. }
            | Event::Buffered { tid, .. }
            | Event::Patch { tid, .. }
            | Event::Fork { tid, .. }
            | Event::Mapped { tid, .. } => *tid,
            Event::Checkpoint { .. } => 0,
        }
    }
}

/// The order of events across the processes of a recorded tree: replay
/// applies the events of `runs[0].0` until it has applied `runs[0].1` of
/// them, then goes on with `runs[1]`, and so on. Only one thread of the
/// whole tree ran user code at a time while recording, so this order also
/// fixes what processes sharing memory saw of each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The program's process (its log is the trace directory's).
    pub root: i32,
    /// (process, events of it applied at the end of this run).
    pub runs: Vec<(i32, u64)>,
    /// Every process made, in order: (child, parent process).
    pub children: Vec<(i32, i32)>,
}

/// How the recording ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEnd {
    pub events: u64,
    pub chunks: u64,
    /// The program's exit code as a shell sees it (128 + signal).
    pub exit_code: i32,
}
