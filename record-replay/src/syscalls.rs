//! The reviewed syscall table of record and replay (DESIGN §4).
//!
//! For every x86-64 syscall number the recorder may see (0..=[`MAX_NR`]):
//! what record and replay do with it ([`disposition`]), its name
//! ([`name`]), whether it may block for long ([`may_block`],
//! [`may_block_call`]), and which memory of the caller the kernel wrote
//! ([`written_ranges`]), so the recorder can log those bytes and the
//! replayer write them back instead of asking the kernel.
//!
//! Sizes are the x86-64 kernel's structures, not glibc's (the kernel's
//! `struct termios` is 36 bytes, glibc's 60; the kernel's `struct
//! sigaction` 32, glibc's 152).

use libc as c;

/// What record and replay do with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deterministic and confined to the process: not trapped at all, runs
    /// natively in record and replay. Only syscalls whose result depends
    /// solely on process state that replay reproduces and that touch
    /// nothing outside: rt_sigprocmask, rt_sigreturn, sigaltstack,
    /// sched_yield, arch_prctl, set_robust_list, madvise, membarrier.
    /// Anything that reveals ids (getpid, gettid...) is `Emulate`: ids
    /// differ between the recorded and the replaying process.
    Native,
    /// Its result (and the memory it writes) come from the log in replay;
    /// the kernel is not asked. Everything that talks to the world or
    /// reveals ids or time: read/write/open/stat/clock/getrandom/getpid/
    /// futex/poll/nanosleep/socket I/O...
    Emulate,
    /// Shapes the process: runs for real in replay too (at the recorded
    /// addresses), and its result is checked against the log: mmap family,
    /// brk, clone, execve, exit, rt_sigaction, prctl, set_tid_address,
    /// shmat/shmdt, personality...
    Shape,
}

/// The highest syscall number of the table (mseal).
pub const MAX_NR: i64 = 462;

/// Longest range [`written_ranges`] reports (1 GiB).
pub const MAX_RANGE: u64 = 1 << 30;
/// Most iovecs walked in one array (the kernel's UIO_MAXIOV).
pub const UIO_MAXIOV: u64 = 1024;
/// Most messages of one recvmmsg/sendmmsg walked (the kernel's UIO_MAXIOV).
const MAX_MMSG: u64 = 1024;
/// Addresses at or above this are never user memory (57-bit user space).
const USER_END: u64 = 1 << 57;

// Numbers libc does not name (x86-64, arch/x86/entry/syscalls/syscall_64.tbl).
const NR_CREATE_MODULE: i64 = 174; // create_module (removed)
const NR_GET_KERNEL_SYMS: i64 = 177; // get_kernel_syms (removed)
const NR_QUERY_MODULE: i64 = 178; // query_module (removed)
const NR_IO_PGETEVENTS: i64 = 333; // io_pgetevents
const NR_CACHESTAT: i64 = 451; // cachestat
const NR_MAP_SHADOW_STACK: i64 = 453; // map_shadow_stack
const NR_FUTEX_WAKE: i64 = 454; // futex_wake
const NR_FUTEX_WAIT: i64 = 455; // futex_wait
const NR_FUTEX_REQUEUE: i64 = 456; // futex_requeue
const NR_STATMOUNT: i64 = 457; // statmount
const NR_LISTMOUNT: i64 = 458; // listmount
const NR_LSM_GET_SELF_ATTR: i64 = 459; // lsm_get_self_attr
const NR_LSM_SET_SELF_ATTR: i64 = 460; // lsm_set_self_attr
const NR_LSM_LIST_MODULES: i64 = 461; // lsm_list_modules

/// May block for a long time (third column of the table).
const BLOCK: bool = true;
/// Returns promptly.
const QUICK: bool = false;

/// The table: (disposition, name, may block) of every known number.
#[rustfmt::skip]
fn entry(nr: i64) -> Option<(Disposition, &'static str, bool)> {
    use Disposition::{Emulate, Native, Shape};
    Some(match nr {
        c::SYS_read => (Emulate, "read", BLOCK), // pipes, sockets, ttys, eventfd/timerfd/signalfd/inotify
        c::SYS_write => (Emulate, "write", BLOCK), // a full pipe or socket waits for its reader
        c::SYS_open => (Emulate, "open", BLOCK), // opening a FIFO waits for the other end
        c::SYS_close => (Emulate, "close", QUICK), // fds do not exist in replay
        c::SYS_stat => (Emulate, "stat", QUICK),
        c::SYS_fstat => (Emulate, "fstat", QUICK),
        c::SYS_lstat => (Emulate, "lstat", QUICK),
        c::SYS_poll => (Emulate, "poll", BLOCK),
        c::SYS_lseek => (Emulate, "lseek", QUICK),
        c::SYS_mmap => (Shape, "mmap", QUICK), // the recorder logs the bytes of file mappings
        c::SYS_mprotect => (Shape, "mprotect", QUICK),
        c::SYS_munmap => (Shape, "munmap", QUICK),
        c::SYS_brk => (Shape, "brk", QUICK),
        c::SYS_rt_sigaction => (Shape, "rt_sigaction", QUICK), // handlers must exist in replay for signal delivery
        c::SYS_rt_sigprocmask => (Native, "rt_sigprocmask", QUICK), // the mask is thread state replay reproduces
        c::SYS_rt_sigreturn => (Native, "rt_sigreturn", QUICK), // restores registers from the frame in user memory
        c::SYS_ioctl => (Emulate, "ioctl", QUICK),
        c::SYS_pread64 => (Emulate, "pread64", QUICK), // not on pipes or sockets (ESPIPE)
        c::SYS_pwrite64 => (Emulate, "pwrite64", QUICK),
        c::SYS_readv => (Emulate, "readv", BLOCK),
        c::SYS_writev => (Emulate, "writev", BLOCK),
        c::SYS_access => (Emulate, "access", QUICK),
        c::SYS_pipe => (Emulate, "pipe", QUICK),
        c::SYS_select => (Emulate, "select", BLOCK),
        c::SYS_sched_yield => (Native, "sched_yield", QUICK), // only one thread runs at a time anyway
        c::SYS_mremap => (Shape, "mremap", QUICK),
        c::SYS_msync => (Emulate, "msync", QUICK), // writes shared mappings back to their files
        c::SYS_mincore => (Emulate, "mincore", QUICK), // page residency is the host's business
        c::SYS_madvise => (Native, "madvise", QUICK), // process-local: DONTNEED zeroes anonymous pages in replay alike
        c::SYS_shmget => (Emulate, "shmget", QUICK),
        c::SYS_shmat => (Shape, "shmat", QUICK),
        c::SYS_shmctl => (Emulate, "shmctl", QUICK),
        c::SYS_dup => (Emulate, "dup", QUICK),
        c::SYS_dup2 => (Emulate, "dup2", QUICK),
        c::SYS_pause => (Emulate, "pause", BLOCK),
        c::SYS_nanosleep => (Emulate, "nanosleep", BLOCK),
        c::SYS_getitimer => (Emulate, "getitimer", QUICK),
        c::SYS_alarm => (Emulate, "alarm", QUICK), // returns the time left; SIGALRM is a recorded signal
        c::SYS_setitimer => (Emulate, "setitimer", QUICK),
        c::SYS_getpid => (Emulate, "getpid", QUICK), // ids differ between record and replay
        c::SYS_sendfile => (Emulate, "sendfile", BLOCK),
        c::SYS_socket => (Emulate, "socket", QUICK),
        c::SYS_connect => (Emulate, "connect", BLOCK),
        c::SYS_accept => (Emulate, "accept", BLOCK),
        c::SYS_sendto => (Emulate, "sendto", BLOCK),
        c::SYS_recvfrom => (Emulate, "recvfrom", BLOCK),
        c::SYS_sendmsg => (Emulate, "sendmsg", BLOCK),
        c::SYS_recvmsg => (Emulate, "recvmsg", BLOCK),
        c::SYS_shutdown => (Emulate, "shutdown", QUICK),
        c::SYS_bind => (Emulate, "bind", QUICK),
        c::SYS_listen => (Emulate, "listen", QUICK),
        c::SYS_getsockname => (Emulate, "getsockname", QUICK),
        c::SYS_getpeername => (Emulate, "getpeername", QUICK),
        c::SYS_socketpair => (Emulate, "socketpair", QUICK),
        c::SYS_setsockopt => (Emulate, "setsockopt", QUICK),
        c::SYS_getsockopt => (Emulate, "getsockopt", QUICK),
        c::SYS_clone => (Shape, "clone", QUICK), // the recorder refines by flags (a new process is emulated); CLONE_VFORK: see may_block_call
        c::SYS_fork => (Shape, "fork", QUICK), // idem (recorder::disposition emulates it)
        c::SYS_vfork => (Shape, "vfork", BLOCK), // the parent waits until the child execs or exits
        c::SYS_execve => (Shape, "execve", QUICK),
        c::SYS_exit => (Shape, "exit", QUICK), // clears and wakes the tid futex, walks the robust list: at its place in the log
        c::SYS_wait4 => (Emulate, "wait4", BLOCK),
        c::SYS_kill => (Emulate, "kill", QUICK), // signals are recorded where they are delivered
        c::SYS_uname => (Emulate, "uname", QUICK),
        c::SYS_semget => (Emulate, "semget", QUICK),
        c::SYS_semop => (Emulate, "semop", BLOCK),
        c::SYS_semctl => (Emulate, "semctl", QUICK),
        c::SYS_shmdt => (Shape, "shmdt", QUICK),
        c::SYS_msgget => (Emulate, "msgget", QUICK),
        c::SYS_msgsnd => (Emulate, "msgsnd", BLOCK),
        c::SYS_msgrcv => (Emulate, "msgrcv", BLOCK),
        c::SYS_msgctl => (Emulate, "msgctl", QUICK),
        c::SYS_fcntl => (Emulate, "fcntl", BLOCK), // only F_SETLKW/F_OFD_SETLKW block: see may_block_call
        c::SYS_flock => (Emulate, "flock", BLOCK), // unless LOCK_NB
        c::SYS_fsync => (Emulate, "fsync", QUICK),
        c::SYS_fdatasync => (Emulate, "fdatasync", QUICK),
        c::SYS_truncate => (Emulate, "truncate", QUICK),
        c::SYS_ftruncate => (Emulate, "ftruncate", QUICK),
        c::SYS_getdents => (Emulate, "getdents", QUICK),
        c::SYS_getcwd => (Emulate, "getcwd", QUICK),
        c::SYS_chdir => (Emulate, "chdir", QUICK), // replay never resolves a path
        c::SYS_fchdir => (Emulate, "fchdir", QUICK),
        c::SYS_rename => (Emulate, "rename", QUICK),
        c::SYS_mkdir => (Emulate, "mkdir", QUICK),
        c::SYS_rmdir => (Emulate, "rmdir", QUICK),
        c::SYS_creat => (Emulate, "creat", BLOCK), // an existing FIFO: waits for a reader
        c::SYS_link => (Emulate, "link", QUICK),
        c::SYS_unlink => (Emulate, "unlink", QUICK),
        c::SYS_symlink => (Emulate, "symlink", QUICK),
        c::SYS_readlink => (Emulate, "readlink", QUICK),
        c::SYS_chmod => (Emulate, "chmod", QUICK),
        c::SYS_fchmod => (Emulate, "fchmod", QUICK),
        c::SYS_chown => (Emulate, "chown", QUICK),
        c::SYS_fchown => (Emulate, "fchown", QUICK),
        c::SYS_lchown => (Emulate, "lchown", QUICK),
        c::SYS_umask => (Emulate, "umask", QUICK), // the replaying process's umask need not be the recorded one
        c::SYS_gettimeofday => (Emulate, "gettimeofday", QUICK),
        c::SYS_getrlimit => (Emulate, "getrlimit", QUICK),
        c::SYS_getrusage => (Emulate, "getrusage", QUICK),
        c::SYS_sysinfo => (Emulate, "sysinfo", QUICK),
        c::SYS_times => (Emulate, "times", QUICK),
        c::SYS_ptrace => (Emulate, "ptrace", QUICK),
        c::SYS_getuid => (Emulate, "getuid", QUICK),
        c::SYS_syslog => (Emulate, "syslog", QUICK),
        c::SYS_getgid => (Emulate, "getgid", QUICK),
        c::SYS_setuid => (Emulate, "setuid", QUICK),
        c::SYS_setgid => (Emulate, "setgid", QUICK),
        c::SYS_geteuid => (Emulate, "geteuid", QUICK),
        c::SYS_getegid => (Emulate, "getegid", QUICK),
        c::SYS_setpgid => (Emulate, "setpgid", QUICK),
        c::SYS_getppid => (Emulate, "getppid", QUICK),
        c::SYS_getpgrp => (Emulate, "getpgrp", QUICK),
        c::SYS_setsid => (Emulate, "setsid", QUICK),
        c::SYS_setreuid => (Emulate, "setreuid", QUICK),
        c::SYS_setregid => (Emulate, "setregid", QUICK),
        c::SYS_getgroups => (Emulate, "getgroups", QUICK),
        c::SYS_setgroups => (Emulate, "setgroups", QUICK),
        c::SYS_setresuid => (Emulate, "setresuid", QUICK),
        c::SYS_getresuid => (Emulate, "getresuid", QUICK),
        c::SYS_setresgid => (Emulate, "setresgid", QUICK),
        c::SYS_getresgid => (Emulate, "getresgid", QUICK),
        c::SYS_getpgid => (Emulate, "getpgid", QUICK),
        c::SYS_setfsuid => (Emulate, "setfsuid", QUICK),
        c::SYS_setfsgid => (Emulate, "setfsgid", QUICK),
        c::SYS_getsid => (Emulate, "getsid", QUICK),
        c::SYS_capget => (Emulate, "capget", QUICK),
        c::SYS_capset => (Emulate, "capset", QUICK),
        c::SYS_rt_sigpending => (Emulate, "rt_sigpending", QUICK), // pending signals arrive asynchronously
        c::SYS_rt_sigtimedwait => (Emulate, "rt_sigtimedwait", BLOCK),
        c::SYS_rt_sigqueueinfo => (Emulate, "rt_sigqueueinfo", QUICK),
        c::SYS_rt_sigsuspend => (Emulate, "rt_sigsuspend", BLOCK),
        c::SYS_sigaltstack => (Native, "sigaltstack", QUICK), // thread state only
        c::SYS_utime => (Emulate, "utime", QUICK),
        c::SYS_mknod => (Emulate, "mknod", QUICK),
        c::SYS_uselib => (Emulate, "uselib", QUICK),
        c::SYS_personality => (Shape, "personality", QUICK), // changes the mmap layout and READ_IMPLIES_EXEC
        c::SYS_ustat => (Emulate, "ustat", QUICK),
        c::SYS_statfs => (Emulate, "statfs", QUICK),
        c::SYS_fstatfs => (Emulate, "fstatfs", QUICK),
        c::SYS_sysfs => (Emulate, "sysfs", QUICK),
        c::SYS_getpriority => (Emulate, "getpriority", QUICK),
        c::SYS_setpriority => (Emulate, "setpriority", QUICK),
        c::SYS_sched_setparam => (Emulate, "sched_setparam", QUICK),
        c::SYS_sched_getparam => (Emulate, "sched_getparam", QUICK),
        c::SYS_sched_setscheduler => (Emulate, "sched_setscheduler", QUICK),
        c::SYS_sched_getscheduler => (Emulate, "sched_getscheduler", QUICK),
        c::SYS_sched_get_priority_max => (Emulate, "sched_get_priority_max", QUICK),
        c::SYS_sched_get_priority_min => (Emulate, "sched_get_priority_min", QUICK),
        c::SYS_sched_rr_get_interval => (Emulate, "sched_rr_get_interval", QUICK),
        c::SYS_mlock => (Emulate, "mlock", QUICK), // residency only; may fail by the host's RLIMIT_MEMLOCK
        c::SYS_munlock => (Emulate, "munlock", QUICK),
        c::SYS_mlockall => (Emulate, "mlockall", QUICK),
        c::SYS_munlockall => (Emulate, "munlockall", QUICK),
        c::SYS_vhangup => (Emulate, "vhangup", QUICK),
        c::SYS_modify_ldt => (Shape, "modify_ldt", QUICK), // LDT descriptors are process state
        c::SYS_pivot_root => (Emulate, "pivot_root", QUICK),
        c::SYS__sysctl => (Emulate, "_sysctl", QUICK),
        c::SYS_prctl => (Shape, "prctl", QUICK),
        c::SYS_arch_prctl => (Native, "arch_prctl", QUICK), // FS/GS base, CPUID faulting: thread state
        c::SYS_adjtimex => (Emulate, "adjtimex", QUICK),
        c::SYS_setrlimit => (Emulate, "setrlimit", QUICK),
        c::SYS_chroot => (Emulate, "chroot", QUICK),
        c::SYS_sync => (Emulate, "sync", QUICK),
        c::SYS_acct => (Emulate, "acct", QUICK),
        c::SYS_settimeofday => (Emulate, "settimeofday", QUICK),
        c::SYS_mount => (Emulate, "mount", QUICK),
        c::SYS_umount2 => (Emulate, "umount2", QUICK),
        c::SYS_swapon => (Emulate, "swapon", QUICK),
        c::SYS_swapoff => (Emulate, "swapoff", QUICK),
        c::SYS_reboot => (Emulate, "reboot", QUICK),
        c::SYS_sethostname => (Emulate, "sethostname", QUICK),
        c::SYS_setdomainname => (Emulate, "setdomainname", QUICK),
        c::SYS_iopl => (Emulate, "iopl", QUICK), // needs CAP_SYS_RAWIO, which replay may lack
        c::SYS_ioperm => (Emulate, "ioperm", QUICK),
        NR_CREATE_MODULE => (Emulate, "create_module", QUICK), // removed: ENOSYS
        c::SYS_init_module => (Emulate, "init_module", QUICK),
        c::SYS_delete_module => (Emulate, "delete_module", QUICK),
        NR_GET_KERNEL_SYMS => (Emulate, "get_kernel_syms", QUICK), // removed: ENOSYS
        NR_QUERY_MODULE => (Emulate, "query_module", QUICK), // removed: ENOSYS
        c::SYS_quotactl => (Emulate, "quotactl", QUICK),
        c::SYS_nfsservctl => (Emulate, "nfsservctl", QUICK), // removed: ENOSYS
        c::SYS_getpmsg => (Emulate, "getpmsg", QUICK), // never implemented
        c::SYS_putpmsg => (Emulate, "putpmsg", QUICK), // never implemented
        c::SYS_afs_syscall => (Emulate, "afs_syscall", QUICK), // never implemented
        c::SYS_tuxcall => (Emulate, "tuxcall", QUICK), // never implemented
        c::SYS_security => (Emulate, "security", QUICK), // never implemented
        c::SYS_gettid => (Emulate, "gettid", QUICK), // ids differ between record and replay
        c::SYS_readahead => (Emulate, "readahead", QUICK),
        c::SYS_setxattr => (Emulate, "setxattr", QUICK),
        c::SYS_lsetxattr => (Emulate, "lsetxattr", QUICK),
        c::SYS_fsetxattr => (Emulate, "fsetxattr", QUICK),
        c::SYS_getxattr => (Emulate, "getxattr", QUICK),
        c::SYS_lgetxattr => (Emulate, "lgetxattr", QUICK),
        c::SYS_fgetxattr => (Emulate, "fgetxattr", QUICK),
        c::SYS_listxattr => (Emulate, "listxattr", QUICK),
        c::SYS_llistxattr => (Emulate, "llistxattr", QUICK),
        c::SYS_flistxattr => (Emulate, "flistxattr", QUICK),
        c::SYS_removexattr => (Emulate, "removexattr", QUICK),
        c::SYS_lremovexattr => (Emulate, "lremovexattr", QUICK),
        c::SYS_fremovexattr => (Emulate, "fremovexattr", QUICK),
        c::SYS_tkill => (Emulate, "tkill", QUICK),
        c::SYS_time => (Emulate, "time", QUICK),
        c::SYS_futex => (Emulate, "futex", BLOCK), // wait ops block (see may_block_call); PI ops write the word
        c::SYS_sched_setaffinity => (Emulate, "sched_setaffinity", QUICK),
        c::SYS_sched_getaffinity => (Emulate, "sched_getaffinity", QUICK), // the host's CPUs
        c::SYS_set_thread_area => (Shape, "set_thread_area", QUICK), // 32-bit TLS descriptors in the GDT
        c::SYS_io_setup => (Emulate, "io_setup", QUICK), // see refused_errno: AIO completes into memory asynchronously
        c::SYS_io_destroy => (Emulate, "io_destroy", QUICK),
        c::SYS_io_getevents => (Emulate, "io_getevents", BLOCK),
        c::SYS_io_submit => (Emulate, "io_submit", QUICK),
        c::SYS_io_cancel => (Emulate, "io_cancel", QUICK),
        c::SYS_get_thread_area => (Emulate, "get_thread_area", QUICK),
        c::SYS_lookup_dcookie => (Emulate, "lookup_dcookie", QUICK),
        c::SYS_epoll_create => (Emulate, "epoll_create", QUICK),
        c::SYS_epoll_ctl_old => (Emulate, "epoll_ctl_old", QUICK), // never implemented
        c::SYS_epoll_wait_old => (Emulate, "epoll_wait_old", QUICK), // never implemented
        c::SYS_remap_file_pages => (Shape, "remap_file_pages", QUICK),
        c::SYS_getdents64 => (Emulate, "getdents64", QUICK),
        c::SYS_set_tid_address => (Shape, "set_tid_address", QUICK), // the clear-tid word must be set in replay for exit
        c::SYS_restart_syscall => (Emulate, "restart_syscall", BLOCK), // resumes an interrupted sleep or poll
        c::SYS_semtimedop => (Emulate, "semtimedop", BLOCK),
        c::SYS_fadvise64 => (Emulate, "fadvise64", QUICK),
        c::SYS_timer_create => (Emulate, "timer_create", QUICK), // its signals are recorded where delivered
        c::SYS_timer_settime => (Emulate, "timer_settime", QUICK),
        c::SYS_timer_gettime => (Emulate, "timer_gettime", QUICK),
        c::SYS_timer_getoverrun => (Emulate, "timer_getoverrun", QUICK),
        c::SYS_timer_delete => (Emulate, "timer_delete", QUICK),
        c::SYS_clock_settime => (Emulate, "clock_settime", QUICK),
        c::SYS_clock_gettime => (Emulate, "clock_gettime", QUICK),
        c::SYS_clock_getres => (Emulate, "clock_getres", QUICK),
        c::SYS_clock_nanosleep => (Emulate, "clock_nanosleep", BLOCK),
        c::SYS_exit_group => (Shape, "exit_group", QUICK),
        c::SYS_epoll_wait => (Emulate, "epoll_wait", BLOCK),
        c::SYS_epoll_ctl => (Emulate, "epoll_ctl", QUICK),
        c::SYS_tgkill => (Emulate, "tgkill", QUICK), // raise(): the signal is recorded where delivered
        c::SYS_utimes => (Emulate, "utimes", QUICK),
        c::SYS_vserver => (Emulate, "vserver", QUICK), // never implemented
        c::SYS_mbind => (Emulate, "mbind", QUICK), // NUMA placement only
        c::SYS_set_mempolicy => (Emulate, "set_mempolicy", QUICK),
        c::SYS_get_mempolicy => (Emulate, "get_mempolicy", QUICK),
        c::SYS_mq_open => (Emulate, "mq_open", QUICK),
        c::SYS_mq_unlink => (Emulate, "mq_unlink", QUICK),
        c::SYS_mq_timedsend => (Emulate, "mq_timedsend", BLOCK),
        c::SYS_mq_timedreceive => (Emulate, "mq_timedreceive", BLOCK),
        c::SYS_mq_notify => (Emulate, "mq_notify", QUICK),
        c::SYS_mq_getsetattr => (Emulate, "mq_getsetattr", QUICK),
        c::SYS_kexec_load => (Emulate, "kexec_load", QUICK),
        c::SYS_waitid => (Emulate, "waitid", BLOCK),
        c::SYS_add_key => (Emulate, "add_key", QUICK),
        c::SYS_request_key => (Emulate, "request_key", QUICK),
        c::SYS_keyctl => (Emulate, "keyctl", QUICK),
        c::SYS_ioprio_set => (Emulate, "ioprio_set", QUICK),
        c::SYS_ioprio_get => (Emulate, "ioprio_get", QUICK),
        c::SYS_inotify_init => (Emulate, "inotify_init", QUICK),
        c::SYS_inotify_add_watch => (Emulate, "inotify_add_watch", QUICK),
        c::SYS_inotify_rm_watch => (Emulate, "inotify_rm_watch", QUICK),
        c::SYS_migrate_pages => (Emulate, "migrate_pages", QUICK),
        c::SYS_openat => (Emulate, "openat", BLOCK), // opening a FIFO waits for the other end
        c::SYS_mkdirat => (Emulate, "mkdirat", QUICK),
        c::SYS_mknodat => (Emulate, "mknodat", QUICK),
        c::SYS_fchownat => (Emulate, "fchownat", QUICK),
        c::SYS_futimesat => (Emulate, "futimesat", QUICK),
        c::SYS_newfstatat => (Emulate, "newfstatat", QUICK),
        c::SYS_unlinkat => (Emulate, "unlinkat", QUICK),
        c::SYS_renameat => (Emulate, "renameat", QUICK),
        c::SYS_linkat => (Emulate, "linkat", QUICK),
        c::SYS_symlinkat => (Emulate, "symlinkat", QUICK),
        c::SYS_readlinkat => (Emulate, "readlinkat", QUICK),
        c::SYS_fchmodat => (Emulate, "fchmodat", QUICK),
        c::SYS_faccessat => (Emulate, "faccessat", QUICK),
        c::SYS_pselect6 => (Emulate, "pselect6", BLOCK),
        c::SYS_ppoll => (Emulate, "ppoll", BLOCK),
        c::SYS_unshare => (Emulate, "unshare", QUICK),
        c::SYS_set_robust_list => (Native, "set_robust_list", QUICK), // a user-space list walked at exit (which runs for real)
        c::SYS_get_robust_list => (Emulate, "get_robust_list", QUICK), // takes a tid
        c::SYS_splice => (Emulate, "splice", BLOCK),
        c::SYS_tee => (Emulate, "tee", BLOCK),
        c::SYS_sync_file_range => (Emulate, "sync_file_range", QUICK),
        c::SYS_vmsplice => (Emulate, "vmsplice", BLOCK),
        c::SYS_move_pages => (Emulate, "move_pages", QUICK),
        c::SYS_utimensat => (Emulate, "utimensat", QUICK),
        c::SYS_epoll_pwait => (Emulate, "epoll_pwait", BLOCK),
        c::SYS_signalfd => (Emulate, "signalfd", QUICK),
        c::SYS_timerfd_create => (Emulate, "timerfd_create", QUICK),
        c::SYS_eventfd => (Emulate, "eventfd", QUICK),
        c::SYS_fallocate => (Emulate, "fallocate", QUICK),
        c::SYS_timerfd_settime => (Emulate, "timerfd_settime", QUICK),
        c::SYS_timerfd_gettime => (Emulate, "timerfd_gettime", QUICK),
        c::SYS_accept4 => (Emulate, "accept4", BLOCK),
        c::SYS_signalfd4 => (Emulate, "signalfd4", QUICK),
        c::SYS_eventfd2 => (Emulate, "eventfd2", QUICK),
        c::SYS_epoll_create1 => (Emulate, "epoll_create1", QUICK),
        c::SYS_dup3 => (Emulate, "dup3", QUICK),
        c::SYS_pipe2 => (Emulate, "pipe2", QUICK),
        c::SYS_inotify_init1 => (Emulate, "inotify_init1", QUICK),
        c::SYS_preadv => (Emulate, "preadv", QUICK),
        c::SYS_pwritev => (Emulate, "pwritev", QUICK),
        c::SYS_rt_tgsigqueueinfo => (Emulate, "rt_tgsigqueueinfo", QUICK),
        c::SYS_perf_event_open => (Emulate, "perf_event_open", QUICK), // see refused_errno
        c::SYS_recvmmsg => (Emulate, "recvmmsg", BLOCK),
        c::SYS_fanotify_init => (Emulate, "fanotify_init", QUICK),
        c::SYS_fanotify_mark => (Emulate, "fanotify_mark", QUICK),
        c::SYS_prlimit64 => (Emulate, "prlimit64", QUICK),
        c::SYS_name_to_handle_at => (Emulate, "name_to_handle_at", QUICK),
        c::SYS_open_by_handle_at => (Emulate, "open_by_handle_at", QUICK),
        c::SYS_clock_adjtime => (Emulate, "clock_adjtime", QUICK),
        c::SYS_syncfs => (Emulate, "syncfs", QUICK),
        c::SYS_sendmmsg => (Emulate, "sendmmsg", BLOCK),
        c::SYS_setns => (Emulate, "setns", QUICK),
        c::SYS_getcpu => (Emulate, "getcpu", QUICK), // the host's CPU
        c::SYS_process_vm_readv => (Emulate, "process_vm_readv", QUICK),
        c::SYS_process_vm_writev => (Emulate, "process_vm_writev", QUICK),
        c::SYS_kcmp => (Emulate, "kcmp", QUICK),
        c::SYS_finit_module => (Emulate, "finit_module", QUICK),
        c::SYS_sched_setattr => (Emulate, "sched_setattr", QUICK),
        c::SYS_sched_getattr => (Emulate, "sched_getattr", QUICK),
        c::SYS_renameat2 => (Emulate, "renameat2", QUICK),
        c::SYS_seccomp => (Shape, "seccomp", QUICK), // the program's own filter must filter replay too
        c::SYS_getrandom => (Emulate, "getrandom", QUICK),
        c::SYS_memfd_create => (Emulate, "memfd_create", QUICK),
        c::SYS_kexec_file_load => (Emulate, "kexec_file_load", QUICK),
        c::SYS_bpf => (Emulate, "bpf", QUICK),
        c::SYS_execveat => (Shape, "execveat", QUICK),
        c::SYS_userfaultfd => (Emulate, "userfaultfd", QUICK), // see refused_errno
        c::SYS_membarrier => (Native, "membarrier", QUICK), // a barrier among the process's own threads
        c::SYS_mlock2 => (Emulate, "mlock2", QUICK),
        c::SYS_copy_file_range => (Emulate, "copy_file_range", QUICK),
        c::SYS_preadv2 => (Emulate, "preadv2", BLOCK), // offset -1 reads like readv (pipes, sockets)
        c::SYS_pwritev2 => (Emulate, "pwritev2", BLOCK), // offset -1 writes like writev
        c::SYS_pkey_mprotect => (Shape, "pkey_mprotect", QUICK),
        c::SYS_pkey_alloc => (Shape, "pkey_alloc", QUICK), // protection keys and PKRU are process state
        c::SYS_pkey_free => (Shape, "pkey_free", QUICK),
        c::SYS_statx => (Emulate, "statx", QUICK),
        NR_IO_PGETEVENTS => (Emulate, "io_pgetevents", BLOCK),
        c::SYS_rseq => (Emulate, "rseq", QUICK), // see refused_errno: the kernel writes the CPU into the TCB at will
        c::SYS_pidfd_send_signal => (Emulate, "pidfd_send_signal", QUICK),
        c::SYS_io_uring_setup => (Emulate, "io_uring_setup", QUICK), // see refused_errno
        c::SYS_io_uring_enter => (Emulate, "io_uring_enter", BLOCK),
        c::SYS_io_uring_register => (Emulate, "io_uring_register", QUICK),
        c::SYS_open_tree => (Emulate, "open_tree", QUICK),
        c::SYS_move_mount => (Emulate, "move_mount", QUICK),
        c::SYS_fsopen => (Emulate, "fsopen", QUICK),
        c::SYS_fsconfig => (Emulate, "fsconfig", QUICK),
        c::SYS_fsmount => (Emulate, "fsmount", QUICK),
        c::SYS_fspick => (Emulate, "fspick", QUICK),
        c::SYS_pidfd_open => (Emulate, "pidfd_open", QUICK),
        c::SYS_clone3 => (Shape, "clone3", QUICK), // the recorder refines by the flags in clone_args
        c::SYS_close_range => (Emulate, "close_range", QUICK),
        c::SYS_openat2 => (Emulate, "openat2", BLOCK), // opening a FIFO waits for the other end
        c::SYS_pidfd_getfd => (Emulate, "pidfd_getfd", QUICK),
        c::SYS_faccessat2 => (Emulate, "faccessat2", QUICK),
        c::SYS_process_madvise => (Emulate, "process_madvise", QUICK), // targets a pidfd
        c::SYS_epoll_pwait2 => (Emulate, "epoll_pwait2", BLOCK),
        c::SYS_mount_setattr => (Emulate, "mount_setattr", QUICK),
        c::SYS_quotactl_fd => (Emulate, "quotactl_fd", QUICK),
        c::SYS_landlock_create_ruleset => (Emulate, "landlock_create_ruleset", QUICK),
        c::SYS_landlock_add_rule => (Emulate, "landlock_add_rule", QUICK),
        c::SYS_landlock_restrict_self => (Emulate, "landlock_restrict_self", QUICK), // replay opens no files
        c::SYS_memfd_secret => (Emulate, "memfd_secret", QUICK),
        c::SYS_process_mrelease => (Emulate, "process_mrelease", QUICK),
        c::SYS_futex_waitv => (Emulate, "futex_waitv", BLOCK),
        c::SYS_set_mempolicy_home_node => (Emulate, "set_mempolicy_home_node", QUICK),
        NR_CACHESTAT => (Emulate, "cachestat", QUICK),
        c::SYS_fchmodat2 => (Emulate, "fchmodat2", QUICK),
        NR_MAP_SHADOW_STACK => (Shape, "map_shadow_stack", QUICK),
        NR_FUTEX_WAKE => (Emulate, "futex_wake", QUICK),
        NR_FUTEX_WAIT => (Emulate, "futex_wait", BLOCK),
        NR_FUTEX_REQUEUE => (Emulate, "futex_requeue", QUICK),
        NR_STATMOUNT => (Emulate, "statmount", QUICK),
        NR_LISTMOUNT => (Emulate, "listmount", QUICK),
        NR_LSM_GET_SELF_ATTR => (Emulate, "lsm_get_self_attr", QUICK),
        NR_LSM_SET_SELF_ATTR => (Emulate, "lsm_set_self_attr", QUICK),
        NR_LSM_LIST_MODULES => (Emulate, "lsm_list_modules", QUICK),
        c::SYS_mseal => (Shape, "mseal", QUICK), // makes mappings immutable: replay must too
        _ => return None,
    })
}

/// What record and replay do with syscall `nr`; `Emulate` for unknown
/// numbers (their outputs are unknown: only the result is replayed).
pub fn disposition(nr: i64) -> Disposition {
    entry(nr).map_or(Disposition::Emulate, |e| e.0)
}

/// The syscall's name, "unknown" for numbers the table does not know.
pub fn name(nr: i64) -> &'static str {
    entry(nr).map_or("unknown", |e| e.1)
}

/// Whether `nr` is a syscall of the table.
pub fn is_known(nr: i64) -> bool {
    entry(nr).is_some()
}

/// Syscalls that may block for a long time in some form (read on
/// pipes/sockets/ttys, futex wait, poll/select/epoll_wait, nanosleep, wait4,
/// accept, recv*, pause, sigsuspend, opening a FIFO, F_SETLKW...): the
/// recorder may run another thread meanwhile. Conservative: true when any
/// form of the call may block; [`may_block_call`] looks at the arguments.
pub fn may_block(nr: i64) -> bool {
    entry(nr).is_some_and(|e| e.2)
}

/// [`may_block`] refined by the arguments where they tell (futex op, fcntl
/// command, LOCK_NB, WNOHANG, MSG_DONTWAIT, O_NONBLOCK, a zero poll or
/// epoll timeout, CLONE_VFORK). Still conservative where the answer lives
/// in memory or in the fd (a read on a nonblocking socket counts as
/// blocking).
pub fn may_block_call(nr: i64, args: &[u64; 6]) -> bool {
    const MSG_DONTWAIT: u64 = c::MSG_DONTWAIT as u64;
    match nr {
        c::SYS_futex => matches!(
            args[1] & FUTEX_CMD_MASK,
            FUTEX_WAIT | FUTEX_LOCK_PI | FUTEX_WAIT_BITSET | FUTEX_WAIT_REQUEUE_PI | FUTEX_LOCK_PI2
        ),
        c::SYS_fcntl => matches!(args[1] as i32, c::F_SETLKW | c::F_OFD_SETLKW),
        c::SYS_flock => args[1] & c::LOCK_NB as u64 == 0,
        c::SYS_wait4 => args[2] & c::WNOHANG as u64 == 0,
        c::SYS_waitid => args[3] & c::WNOHANG as u64 == 0,
        c::SYS_recvfrom | c::SYS_sendto | c::SYS_recvmsg | c::SYS_sendmsg => {
            let flags = if nr == c::SYS_recvmsg || nr == c::SYS_sendmsg {
                args[2]
            } else {
                args[3]
            };
            flags & MSG_DONTWAIT == 0
        }
        c::SYS_recvmmsg | c::SYS_sendmmsg => args[3] & MSG_DONTWAIT == 0,
        c::SYS_open => args[1] & c::O_NONBLOCK as u64 == 0,
        c::SYS_openat => args[2] & c::O_NONBLOCK as u64 == 0,
        c::SYS_poll => args[2] as i32 != 0,
        c::SYS_epoll_wait | c::SYS_epoll_pwait => args[3] as i32 != 0,
        c::SYS_clone => args[0] & c::CLONE_VFORK as u64 != 0,
        _ => may_block(nr),
    }
}

/// Syscalls whose effects a log cannot hold: the kernel keeps writing the
/// process's memory or steering its execution after the call returns
/// (rseq: the CPU number in the TCB and critical-section aborts at every
/// preemption; io_uring and AIO: completions written asynchronously;
/// userfaultfd: pages filled by another thread's ioctls; perf_event_open:
/// ring buffers). The recorder should make them fail with this errno
/// (skip the call, e.g. by setting orig_rax to -1 at the seccomp stop, and
/// log the failure like any `Emulate` result): glibc and the usual
/// libraries fall back when they are missing.
pub fn refused_errno(nr: i64) -> Option<i32> {
    match nr {
        c::SYS_rseq | c::SYS_io_uring_setup | c::SYS_io_setup | c::SYS_userfaultfd => {
            Some(c::ENOSYS)
        }
        c::SYS_perf_event_open => Some(c::EACCES),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Memory written by syscalls.

// x86-64 kernel structure sizes.
const TIMESPEC: u64 = 16;
const TIMEVAL: u64 = 16;
const TIMEZONE: u64 = 8;
const ITIMERVAL: u64 = 32;
const ITIMERSPEC: u64 = 32;
const STAT: u64 = 144;
const STATX: u64 = 256;
const STATFS: u64 = 120;
const USTAT: u64 = 32;
const UTSNAME: u64 = 6 * 65;
const SYSINFO: u64 = 112;
const TMS: u64 = 32;
const RUSAGE: u64 = 144;
const RLIMIT: u64 = 16;
const SIGINFO: u64 = 128;
const KSIGACTION: u64 = 32; // handler, flags, restorer, mask
const SIGSET: u64 = 8;
const STACK_T: u64 = 24;
const EPOLL_EVENT: u64 = 12; // packed on x86-64
const POLLFD: u64 = 8;
const IOVEC: u64 = 16;
const MSGHDR: u64 = 56;
const MMSGHDR: u64 = 64; // msghdr + msg_len + padding
const SOCKADDR_MAX: u64 = 128; // sizeof(struct sockaddr_storage)
const CAP_DATA: u64 = 12;
const KTERMIOS: u64 = 36; // the kernel's struct termios (c_cc[19], no speeds)
const TERMIO: u64 = 18;
const WINSIZE: u64 = 8;
const IFREQ: u64 = 40;
const TIMEX: u64 = 208;
const IO_EVENT: u64 = 32;
const MQ_ATTR: u64 = 64;
const USER_DESC: u64 = 16;
const SHMID_DS: u64 = 112;
const MSQID_DS: u64 = 120;
const USER_REGS: u64 = 216;
const USER_FPREGS: u64 = 512;
const IO_URING_PARAMS: u64 = 120;
const CACHESTAT: u64 = 40;
const MAX_HANDLE_SZ: u64 = 128;

const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_UNLOCK_PI: u64 = 7;
const FUTEX_TRYLOCK_PI: u64 = 8;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAIT_REQUEUE_PI: u64 = 11;
const FUTEX_CMP_REQUEUE_PI: u64 = 12;
const FUTEX_LOCK_PI2: u64 = 13;

/// The kernel's error convention: -4095..=-1.
fn is_error(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

/// Interrupted by a signal: -EINTR as the program sees it, or one of the
/// restart codes a tracer sees at the syscall-exit stop before the signal
/// is handled (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND,
/// ERESTART_RESTARTBLOCK).
pub fn interrupted(ret: i64) -> bool {
    matches!(ret, -4 | -512 | -513 | -514 | -516)
}

/// Collects ranges, reading the caller's memory where the kernel left
/// lengths and pointers there.
struct Writes<'a> {
    out: Vec<(u64, u64)>,
    mem: &'a mut dyn FnMut(u64, &mut [u8]) -> bool,
}

impl Writes<'_> {
    /// One written range; null, empty, kernel-space and absurd ones are
    /// dropped or cut (at 1 GiB and at the end of user space).
    fn add(&mut self, addr: u64, len: u64) {
        if addr == 0 || len == 0 || addr >= USER_END {
            return;
        }
        let len = len.min(MAX_RANGE).min(USER_END - addr);
        self.out.push((addr, len));
    }

    fn bytes<const N: usize>(&mut self, addr: u64) -> Option<[u8; N]> {
        if addr == 0 || addr >= USER_END || USER_END - addr < N as u64 {
            return None;
        }
        let mut b = [0u8; N];
        (self.mem)(addr, &mut b).then_some(b)
    }

    fn u32_at(&mut self, addr: u64) -> Option<u32> {
        self.bytes::<4>(addr).map(u32::from_le_bytes)
    }

    fn u64_at(&mut self, addr: u64) -> Option<u64> {
        self.bytes::<8>(addr).map(u64::from_le_bytes)
    }

    /// `total` bytes spread over the iovec array in order.
    fn iovecs(&mut self, iov: u64, count: u64, mut total: u64) {
        for i in 0..count.min(UIO_MAXIOV) {
            if total == 0 {
                break;
            }
            let Some(at) = iov.checked_add(i * IOVEC) else {
                break;
            };
            let Some(e) = self.bytes::<16>(at) else { break };
            let base = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(e[8..].try_into().unwrap_or_default());
            let take = len.min(total);
            self.add(base, take);
            total -= take;
        }
    }

    /// A socket address and its length word, as `move_addr_to_user` leaves
    /// them: the length after the call is the address's real length.
    fn sockaddr(&mut self, addr: u64, lenp: u64) {
        if addr == 0 || lenp == 0 {
            return;
        }
        if let Some(len) = self.u32_at(lenp) {
            self.add(addr, u64::from(len).min(SOCKADDR_MAX));
        }
        self.add(lenp, 4);
    }

    /// A received message: name, data over the iovecs, ancillary data, and
    /// the msghdr fields the kernel updates.
    fn msghdr(&mut self, hdr: u64, len: u64) {
        let Some(h) = self.bytes::<{ MSGHDR as usize }>(hdr) else {
            return;
        };
        let word = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
        let (name, namelen) = (
            word(0),
            u64::from(u32::from_le_bytes(h[8..12].try_into().unwrap_or_default())),
        );
        let (iov, iovlen, control, controllen) = (word(16), word(24), word(32), word(40));
        if name != 0 {
            self.add(name, namelen.min(SOCKADDR_MAX));
            self.add(hdr + 8, 4);
        }
        self.iovecs(iov, iovlen, len);
        if control != 0 {
            self.add(control, controllen);
        }
        self.add(hdr + 40, 8);
        self.add(hdr + 48, 4);
    }

    /// A pointer to a loff_t the kernel updates.
    fn offset(&mut self, p: u64) {
        self.add(p, 8);
    }

    fn collect(&mut self, nr: i64, a: &[u64; 6], ret: i64) {
        // Calls that write even when they fail.
        match nr {
            // The time left, written when a signal interrupts the sleep.
            c::SYS_nanosleep => {
                if interrupted(ret) {
                    self.add(a[1], TIMESPEC);
                }
                return;
            }
            c::SYS_clock_nanosleep => {
                if interrupted(ret) && a[1] & c::TIMER_ABSTIME as u64 == 0 {
                    self.add(a[3], TIMESPEC);
                }
                return;
            }
            // revents are stored even when the wait is interrupted.
            c::SYS_poll | c::SYS_ppoll => {
                if !is_error(ret) || interrupted(ret) {
                    self.add(a[0], u64::from(a[1] as u32).saturating_mul(POLLFD));
                }
                if nr == c::SYS_ppoll && ret != -(c::EFAULT as i64) {
                    self.add(a[2], TIMESPEC);
                }
                return;
            }
            // fd sets only on success; the time left whatever the result.
            c::SYS_select | c::SYS_pselect6 => {
                if !is_error(ret) {
                    let n = a[0] as i32;
                    if n > 0 {
                        let bytes = (n as u64).div_ceil(64) * 8;
                        for set in [a[1], a[2], a[3]] {
                            self.add(set, bytes);
                        }
                    }
                }
                if ret != -(c::EFAULT as i64) {
                    self.add(
                        a[4],
                        if nr == c::SYS_select {
                            TIMEVAL
                        } else {
                            TIMESPEC
                        },
                    );
                }
                return;
            }
            // A bad or missing version is answered in the header.
            c::SYS_capget => {
                if ret == -(c::EINVAL as i64) || (ret == 0 && a[1] == 0) {
                    self.add(a[0], 4);
                } else if ret == 0 {
                    let v1 = self.u32_at(a[0]) == Some(0x1998_0330);
                    self.add(a[1], if v1 { CAP_DATA } else { 2 * CAP_DATA });
                }
                return;
            }
            c::SYS_futex => {
                // PI ops store the owner's tid and the waiters bit in the
                // word, also on some failures (timeouts).
                let op = a[1] & FUTEX_CMD_MASK;
                let ok = !is_error(ret)
                    || matches!(ret, -110 /* ETIMEDOUT */ | -35 /* EDEADLK */)
                    || interrupted(ret);
                match op {
                    FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_TRYLOCK_PI | FUTEX_UNLOCK_PI if ok => {
                        self.add(a[0], 4)
                    }
                    FUTEX_WAIT_REQUEUE_PI if ok => {
                        self.add(a[4], 4);
                    }
                    FUTEX_WAKE_OP | FUTEX_CMP_REQUEUE_PI if !is_error(ret) => self.add(a[4], 4),
                    _ => {}
                }
                return;
            }
            _ => {}
        }
        if is_error(ret) {
            return;
        }
        let n = ret as u64;
        match nr {
            c::SYS_read | c::SYS_pread64 => self.add(a[1], n),
            c::SYS_readv | c::SYS_preadv | c::SYS_preadv2 => self.iovecs(a[1], a[2], n),
            // The fd's direction is unknown: if it was a pipe's write end
            // the "written" bytes are the caller's own, unchanged.
            c::SYS_vmsplice => self.iovecs(a[1], a[2], n),
            c::SYS_process_vm_readv => self.iovecs(a[1], a[2], n),
            c::SYS_recvfrom => {
                self.add(a[1], n);
                self.sockaddr(a[4], a[5]);
            }
            c::SYS_recvmsg => self.msghdr(a[1], n),
            c::SYS_recvmmsg => {
                for i in 0..n.min(a[2] & 0xffff_ffff).min(MAX_MMSG) {
                    let hdr = a[1].wrapping_add(i * MMSGHDR);
                    let Some(len) = self.u32_at(hdr.wrapping_add(MSGHDR)) else {
                        break;
                    };
                    self.msghdr(hdr, u64::from(len));
                    self.add(hdr.wrapping_add(MSGHDR), 4);
                }
                if n > 0 {
                    self.add(a[4], TIMESPEC);
                }
            }
            c::SYS_sendmmsg => {
                for i in 0..n.min(a[2] & 0xffff_ffff).min(MAX_MMSG) {
                    self.add(a[1].wrapping_add(i * MMSGHDR + MSGHDR), 4);
                }
            }
            c::SYS_msgrcv => self.add(a[1], n.saturating_add(8)),
            c::SYS_mq_timedreceive => {
                self.add(a[1], n);
                self.add(a[3], 4);
            }
            c::SYS_mq_getsetattr => self.add(a[2], MQ_ATTR),
            c::SYS_io_getevents | NR_IO_PGETEVENTS => self.add(a[3], n.saturating_mul(IO_EVENT)),
            c::SYS_io_uring_setup => self.add(a[1], IO_URING_PARAMS),

            c::SYS_stat | c::SYS_lstat | c::SYS_fstat => self.add(a[1], STAT),
            c::SYS_newfstatat => self.add(a[2], STAT),
            c::SYS_statx => self.add(a[4], STATX),
            c::SYS_statfs | c::SYS_fstatfs => self.add(a[1], STATFS),
            c::SYS_ustat => self.add(a[1], USTAT),
            c::SYS_getdents | c::SYS_getdents64 | c::SYS_readlink => self.add(a[1], n),
            c::SYS_readlinkat => self.add(a[2], n),
            c::SYS_getcwd => self.add(a[0], n),
            // size 0 asks for the size and writes nothing.
            c::SYS_getxattr | c::SYS_lgetxattr | c::SYS_fgetxattr if a[3] != 0 => self.add(a[2], n),
            c::SYS_listxattr | c::SYS_llistxattr | c::SYS_flistxattr if a[2] != 0 => {
                self.add(a[1], n)
            }
            c::SYS_name_to_handle_at => {
                if let Some(bytes) = self.u32_at(a[2]) {
                    self.add(a[2], 8 + u64::from(bytes).min(MAX_HANDLE_SZ));
                }
                self.add(a[3], 4);
            }
            c::SYS_uname => self.add(a[0], UTSNAME),
            c::SYS_sysinfo => self.add(a[0], SYSINFO),
            c::SYS_times => self.add(a[0], TMS),
            c::SYS_getrusage => self.add(a[1], RUSAGE),
            // SYSLOG_ACTION_READ, READ_ALL, READ_CLEAR
            c::SYS_syslog if matches!(a[0], 2..=4) => self.add(a[1], n),

            c::SYS_clock_gettime | c::SYS_clock_getres => self.add(a[1], TIMESPEC),
            c::SYS_gettimeofday => {
                self.add(a[0], TIMEVAL);
                self.add(a[1], TIMEZONE);
            }
            c::SYS_time => self.add(a[0], 8),
            c::SYS_adjtimex => self.add(a[0], TIMEX),
            c::SYS_clock_adjtime => self.add(a[1], TIMEX),
            c::SYS_getitimer => self.add(a[1], ITIMERVAL),
            c::SYS_setitimer => self.add(a[2], ITIMERVAL),
            c::SYS_timer_create => self.add(a[2], 4),
            c::SYS_timer_gettime | c::SYS_timerfd_gettime => self.add(a[1], ITIMERSPEC),
            c::SYS_timer_settime | c::SYS_timerfd_settime => self.add(a[3], ITIMERSPEC),
            c::SYS_sched_rr_get_interval => self.add(a[1], TIMESPEC),

            c::SYS_getrandom => self.add(a[0], n),
            c::SYS_pipe | c::SYS_pipe2 => self.add(a[0], 8),
            c::SYS_socketpair => self.add(a[3], 8),
            c::SYS_accept | c::SYS_accept4 | c::SYS_getsockname | c::SYS_getpeername => {
                self.sockaddr(a[1], a[2])
            }
            c::SYS_getsockopt => {
                if let Some(len) = self.u32_at(a[4]) {
                    self.add(a[3], u64::from(len));
                }
                self.add(a[4], 4);
            }
            c::SYS_epoll_wait
            | c::SYS_epoll_pwait
            | c::SYS_epoll_pwait2
            | c::SYS_epoll_wait_old => self.add(a[1], n.saturating_mul(EPOLL_EVENT)),
            c::SYS_sendfile => self.offset(a[2]),
            c::SYS_copy_file_range | c::SYS_splice => {
                self.offset(a[1]);
                self.offset(a[3]);
            }

            // WNOHANG with no child ready returns 0 and writes nothing.
            c::SYS_wait4 if ret > 0 => {
                self.add(a[1], 4);
                self.add(a[3], RUSAGE);
            }
            c::SYS_waitid => {
                self.add(a[2], SIGINFO);
                self.add(a[4], RUSAGE);
            }

            c::SYS_rt_sigaction => self.add(a[2], KSIGACTION),
            c::SYS_rt_sigprocmask => self.add(a[2], SIGSET),
            c::SYS_rt_sigpending => self.add(a[0], SIGSET),
            c::SYS_rt_sigtimedwait => self.add(a[1], SIGINFO),
            c::SYS_sigaltstack => self.add(a[1], STACK_T),

            c::SYS_getrlimit => self.add(a[1], RLIMIT),
            c::SYS_prlimit64 => self.add(a[3], RLIMIT),
            c::SYS_getresuid | c::SYS_getresgid => {
                for p in [a[0], a[1], a[2]] {
                    self.add(p, 4);
                }
            }
            // size 0 asks for the count and writes nothing.
            c::SYS_getgroups if a[0] as u32 != 0 => self.add(a[1], n.saturating_mul(4)),
            c::SYS_sched_getaffinity => self.add(a[2], n),
            c::SYS_sched_getparam => self.add(a[1], 4),
            c::SYS_sched_getattr => self.add(a[1], a[2].min(4096)),
            c::SYS_getcpu => {
                self.add(a[0], 4);
                self.add(a[1], 4);
            }
            c::SYS_get_robust_list => {
                self.add(a[1], 8);
                self.add(a[2], 8);
            }
            c::SYS_get_thread_area => self.add(a[0], USER_DESC),
            c::SYS_get_mempolicy => {
                self.add(a[0], 4);
                let maxnode = a[2].min(1 << 20);
                if maxnode > 1 {
                    self.add(a[1], (maxnode - 1).div_ceil(64) * 8);
                }
            }
            c::SYS_mincore => self.add(a[2], a[1].div_ceil(4096)),
            // modify_ldt(0 or 2) reads the LDT into the buffer.
            c::SYS_modify_ldt if a[0] == 0 || a[0] == 2 => self.add(a[1], n),

            c::SYS_ioctl => self.ioctl(a[1] as u32, a[2]),
            c::SYS_prctl => self.prctl(a, n),
            // ARCH_GET_FS, ARCH_GET_GS, ARCH_GET_XCOMP_SUPP/PERM/GUEST_PERM, ARCH_SHSTK_STATUS
            c::SYS_arch_prctl
                if matches!(a[0], 0x1003 | 0x1004 | 0x1021 | 0x1022 | 0x1024 | 0x5005) =>
            {
                self.add(a[1], 8)
            }
            // SECCOMP_GET_NOTIF_SIZES: struct seccomp_notif_sizes (3 × u16).
            c::SYS_seccomp if a[0] == 3 => self.add(a[2], 6),
            c::SYS_ptrace => self.ptrace(a),
            // IPC_STAT, SHM_STAT, SHM_STAT_ANY
            c::SYS_shmctl if matches!(a[1] & 0xff, 2 | 13 | 15) => self.add(a[2], SHMID_DS),
            // IPC_STAT, MSG_STAT, MSG_STAT_ANY
            c::SYS_msgctl if matches!(a[1] & 0xff, 2 | 11 | 13) => self.add(a[2], MSQID_DS),

            NR_CACHESTAT => self.add(a[2], CACHESTAT),
            NR_STATMOUNT => self.add(a[1], a[2]),
            NR_LISTMOUNT => self.add(a[1], n.saturating_mul(8)),
            NR_LSM_GET_SELF_ATTR => {
                if let Some(size) = self.u32_at(a[2]) {
                    self.add(a[1], u64::from(size));
                }
                self.add(a[2], 4);
            }
            NR_LSM_LIST_MODULES => {
                self.add(a[0], n.saturating_mul(8));
                self.add(a[1], 4);
            }
            // clone/clone3 tid words and mmap'd file bytes are added by the
            // recorder; everything else writes nothing in the caller.
            _ => {}
        }
    }

    fn ioctl(&mut self, req: u32, arg: u64) {
        let len = match req {
            0x5401 => KTERMIOS,            // TCGETS
            0x5405 => TERMIO,              // TCGETA
            0x5456 => KTERMIOS,            // TIOCGLCKTRMIOS
            0x5413 => WINSIZE,             // TIOCGWINSZ
            0x541B => 4,                   // FIONREAD / TIOCINQ / SIOCINQ
            0x5411 => 4,                   // TIOCOUTQ / SIOCOUTQ
            0x540F | 0x5429 => 4,          // TIOCGPGRP, TIOCGSID
            0x5415 | 0x5419 | 0x5424 => 4, // TIOCMGET, TIOCGSOFTCAR, TIOCGETD
            0x5460 => 8,                   // FIOQSIZE
            0x8903 | 0x8904 => 4,          // FIOGETOWN, SIOCGPGRP
            0x8906 | 0x8907 => 16,         // SIOCGSTAMP, SIOCGSTAMPNS
            0x0001 | 0x0002 => 4,          // FIBMAP, FIGETBSZ
            0x1260 => 8,                   // BLKGETSIZE
            0x1268 => 4,                   // BLKSSZGET
            0x8910 | 0x8913 | 0x8915 | 0x8917 | 0x8919 | 0x891b | 0x891d | 0x8921 | 0x8927
            | 0x8933 | 0x8942 => {
                IFREQ // SIOCGIFNAME/FLAGS/ADDR/DSTADDR/BRDADDR/NETMASK/METRIC/MTU/HWADDR/INDEX/TXQLEN
            }
            // KVM getters with a count in their header and entries after
            // it: KVM_GET_MSRS (16-byte entries), KVM_GET_MSR_INDEX_LIST
            // (u32 indices), KVM_GET_CPUID2 and KVM_GET_SUPPORTED_CPUID
            // (40-byte entries).
            0xc008_ae88 | 0xc004_ae02 | 0xc008_ae91 | 0xc008_ae05 => {
                let (header, entry) = match req {
                    0xc008_ae88 => (8, 16),
                    0xc004_ae02 => (4, 4),
                    _ => (8, 40),
                };
                let n = u64::from(self.u32_at(arg).unwrap_or(0)).min(1 << 16);
                header + n * entry
            }
            // TUNSETIFF writes the ifreq back (the name a "tun%d" pattern
            // became), TUNGETIFF fills one: both are numbered as an int.
            0x4004_54ca | 0x8004_54d2 => IFREQ,
            0x8912 => {
                // SIOCGIFCONF: struct ifconf { int len; char *buf }, len updated.
                if let Some(len) = self.u32_at(arg) {
                    if let Some(buf) = self.u64_at(arg + 8) {
                        self.add(buf, u64::from(len));
                    }
                }
                4
            }
            // FIONBIO, FIOASYNC, FIOCLEX, FIONCLEX, TCSETS* and the other
            // legacy numbers have no direction bits: nothing written.
            _ => {
                let dir = req >> 30;
                let size = u64::from((req >> 16) & 0x3fff);
                if dir & 2 != 0 {
                    size
                } else {
                    0
                }
            }
        };
        self.add(arg, len);
    }

    fn prctl(&mut self, a: &[u64; 6], n: u64) {
        match a[0] as i32 {
            // PR_GET_PDEATHSIG, PR_GET_UNALIGN, PR_GET_FPEMU, PR_GET_FPEXC,
            // PR_GET_TSC, PR_GET_CHILD_SUBREAPER: an int at arg2.
            2 | 5 | 9 | 11 | 25 | 37 => self.add(a[1], 4),
            16 => self.add(a[1], 16),                   // PR_GET_NAME
            40 | 74 => self.add(a[1], 8), // PR_GET_TID_ADDRESS, PR_GET_SHADOW_STACK_STATUS
            0x4155_5856 => self.add(a[1], n.min(a[2])), // PR_GET_AUXV: returns the full size
            _ => {}
        }
    }

    fn ptrace(&mut self, a: &[u64; 6]) {
        let data = a[3];
        match a[0] {
            1..=3 => self.add(data, 8),        // PTRACE_PEEKTEXT/PEEKDATA/PEEKUSER
            12 => self.add(data, USER_REGS),   // PTRACE_GETREGS
            14 => self.add(data, USER_FPREGS), // PTRACE_GETFPREGS
            0x4201 => self.add(data, 8),       // PTRACE_GETEVENTMSG
            0x4202 => self.add(data, SIGINFO), // PTRACE_GETSIGINFO
            0x4204 => {
                // PTRACE_GETREGSET: an iovec whose length is updated.
                if let (Some(base), Some(len)) =
                    (self.u64_at(data), self.u64_at(data.wrapping_add(8)))
                {
                    self.add(base, len);
                }
                self.add(data.wrapping_add(8), 8);
            }
            _ => {}
        }
    }
}

/// Memory a syscall wrote in the caller's address space, given its
/// arguments and its return value (raw, negative = -errno): (address,
/// length) pairs, empty when it failed or wrote nothing. Exceptions that
/// write on failure: nanosleep/clock_nanosleep interrupted (the time left),
/// poll/ppoll interrupted (revents), the timeouts of select/pselect6/ppoll,
/// capget's header version, PI futex words. `read_mem(addr, buf) -> bool`
/// reads the caller's memory after the syscall, for iovec arrays,
/// msghdrs and lengths the kernel stored in memory; a failed read skips
/// that part. Ranges are capped at 1 GiB and iovec arrays at 1024 entries.
///
/// Not here, the recorder adds them: the tid words of clone/clone3 and the
/// file bytes of mmap. restart_syscall writes what the syscall it resumes
/// writes: the recorder should ask with that syscall's number and
/// arguments.
pub fn written_ranges(
    nr: i64,
    args: &[u64; 6],
    ret: i64,
    read_mem: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Vec<(u64, u64)> {
    let mut w = Writes {
        out: Vec::new(),
        mem: read_mem,
    };
    w.collect(nr, args, ret);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Byte-addressed fake memory of the caller.
    #[derive(Default)]
    struct Mem(HashMap<u64, u8>);

    impl Mem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn put_u32(&mut self, addr: u64, v: u32) {
            self.put(addr, &v.to_le_bytes());
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
        fn iov(&mut self, at: u64, entries: &[(u64, u64)]) {
            for (i, (base, len)) in entries.iter().enumerate() {
                self.put_u64(at + 16 * i as u64, *base);
                self.put_u64(at + 16 * i as u64 + 8, *len);
            }
        }
        fn ranges(&self, nr: i64, args: [u64; 6], ret: i64) -> Vec<(u64, u64)> {
            let mut read = |addr: u64, buf: &mut [u8]| {
                for (i, b) in buf.iter_mut().enumerate() {
                    match self.0.get(&(addr + i as u64)) {
                        Some(v) => *b = *v,
                        None => return false,
                    }
                }
                true
            };
            written_ranges(nr, &args, ret, &mut read)
        }
    }

    fn ranges(nr: i64, args: [u64; 6], ret: i64) -> Vec<(u64, u64)> {
        Mem::default().ranges(nr, args, ret)
    }

    #[test]
    fn names() {
        assert_eq!(name(c::SYS_read), "read");
        assert_eq!(name(0), "read");
        assert_eq!(name(c::SYS_newfstatat), "newfstatat");
        assert_eq!(name(c::SYS_exit_group), "exit_group");
        assert_eq!(name(NR_IO_PGETEVENTS), "io_pgetevents");
        assert_eq!(name(c::SYS_rseq), "rseq");
        assert_eq!(name(c::SYS_clone3), "clone3");
        assert_eq!(name(NR_FUTEX_WAIT), "futex_wait");
        assert_eq!(name(462), "mseal");
        for nr in [-1, 335, 400, 423, 463, 512, 1 << 40, i64::MIN] {
            assert_eq!(name(nr), "unknown", "{nr}");
            assert!(!is_known(nr));
            assert_eq!(disposition(nr), Disposition::Emulate);
            assert!(!may_block(nr));
            assert!(written_ranges(nr, &[0x1000; 6], 100, &mut |_, _| true).is_empty());
        }
    }

    #[test]
    fn every_number_named_once() {
        let mut seen = HashSet::new();
        for nr in 0..=MAX_NR {
            let n = name(nr);
            assert!(!n.is_empty());
            if n == "unknown" {
                assert!((335..=423).contains(&nr), "{nr} has no name");
                continue;
            }
            assert!(seen.insert(n), "{n} named twice");
        }
        assert_eq!(seen.len() as i64, MAX_NR + 1 - (423 - 335 + 1));
    }

    #[test]
    fn libc_numbers_agree_with_names() {
        assert_eq!(name(174), "create_module");
        assert_eq!(name(333), "io_pgetevents");
        assert_eq!(name(451), "cachestat");
        assert_eq!(name(453), "map_shadow_stack");
        assert_eq!(name(c::SYS_fchmodat2), "fchmodat2");
        assert_eq!(c::SYS_fchmodat2, 452);
        assert_eq!(c::SYS_mseal, 462);
    }

    /// The untrapped set is deliberate: changing it needs a review.
    #[test]
    fn native_set_is_pinned() {
        let native: Vec<&str> = (0..=MAX_NR)
            .filter(|&nr| disposition(nr) == Disposition::Native)
            .map(name)
            .collect();
        assert_eq!(
            native,
            [
                "rt_sigprocmask",
                "rt_sigreturn",
                "sched_yield",
                "madvise",
                "sigaltstack",
                "arch_prctl",
                "set_robust_list",
                "membarrier"
            ]
        );
    }

    #[test]
    fn dispositions() {
        use Disposition::*;
        for (nr, d) in [
            (c::SYS_read, Emulate),
            (c::SYS_getpid, Emulate),
            (c::SYS_gettid, Emulate),
            (c::SYS_clock_gettime, Emulate),
            (c::SYS_futex, Emulate),
            (c::SYS_rseq, Emulate),
            (c::SYS_mmap, Shape),
            (c::SYS_mprotect, Shape),
            (c::SYS_brk, Shape),
            (c::SYS_clone3, Shape),
            (c::SYS_execve, Shape),
            (c::SYS_exit, Shape),
            (c::SYS_exit_group, Shape),
            (c::SYS_rt_sigaction, Shape),
            (c::SYS_set_tid_address, Shape),
            (c::SYS_rt_sigprocmask, Native),
            (c::SYS_madvise, Native),
            (c::SYS_arch_prctl, Native),
        ] {
            assert_eq!(disposition(nr), d, "{}", name(nr));
        }
        assert_eq!(refused_errno(c::SYS_rseq), Some(c::ENOSYS));
        assert_eq!(refused_errno(c::SYS_read), None);
    }

    #[test]
    fn blocking() {
        for nr in [
            c::SYS_read,
            c::SYS_futex,
            c::SYS_poll,
            c::SYS_epoll_wait,
            c::SYS_wait4,
            c::SYS_accept4,
            c::SYS_pause,
        ] {
            assert!(may_block(nr), "{}", name(nr));
        }
        for nr in [
            c::SYS_getpid,
            c::SYS_mmap,
            c::SYS_close,
            c::SYS_fstat,
            c::SYS_clock_gettime,
        ] {
            assert!(!may_block(nr), "{}", name(nr));
        }
        let call = |nr, a1: u64, a2: u64, a3: u64| may_block_call(nr, &[0, a1, a2, a3, 0, 0]);
        assert!(!call(c::SYS_futex, 1 | 128, 0, 0)); // FUTEX_WAKE_PRIVATE
        assert!(call(c::SYS_futex, 9 | 128 | 256, 0, 0)); // FUTEX_WAIT_BITSET_PRIVATE|CLOCK_REALTIME
        assert!(!call(c::SYS_fcntl, c::F_GETFL as u64, 0, 0));
        assert!(call(c::SYS_fcntl, c::F_SETLKW as u64, 0, 0));
        assert!(!call(c::SYS_poll, 1, 0, 0));
        assert!(call(c::SYS_poll, 1, u64::MAX, 0)); // timeout -1
        assert!(!call(c::SYS_wait4, 0, c::WNOHANG as u64, 0));
        assert!(!call(c::SYS_recvfrom, 0, 0, c::MSG_DONTWAIT as u64));
        assert!(call(c::SYS_read, 0, 0, 0));
        assert!(!call(c::SYS_getpid, 0, 0, 0));
    }

    #[test]
    fn read_and_failures() {
        assert_eq!(
            ranges(c::SYS_read, [3, 0x1000, 4096, 0, 0, 0], 100),
            [(0x1000, 100)]
        );
        assert_eq!(
            ranges(c::SYS_pread64, [3, 0x1000, 4096, 7, 0, 0], 4096),
            [(0x1000, 4096)]
        );
        assert!(ranges(c::SYS_read, [3, 0x1000, 4096, 0, 0, 0], 0).is_empty());
        assert!(ranges(c::SYS_read, [3, 0x1000, 4096, 0, 0, 0], -11).is_empty()); // EAGAIN
        assert!(ranges(c::SYS_read, [3, 0x1000, 4096, 0, 0, 0], -512).is_empty()); // ERESTARTSYS
        assert!(ranges(c::SYS_fstat, [3, 0x1000, 0, 0, 0, 0], -9).is_empty());
        assert!(ranges(c::SYS_getsockname, [3, 0x1000, 0x2000, 0, 0, 0], -88).is_empty());
    }

    #[test]
    fn readv_spreads_ret_over_iovecs() {
        let mut m = Mem::default();
        m.iov(
            0x9000,
            &[(0x1000, 10), (0x2000, 0), (0x3000, 20), (0x4000, 5)],
        );
        assert_eq!(
            m.ranges(c::SYS_readv, [3, 0x9000, 4, 0, 0, 0], 25),
            [(0x1000, 10), (0x3000, 15)]
        );
        assert_eq!(
            m.ranges(c::SYS_preadv2, [3, 0x9000, 4, 0, 0, 0], 35),
            [(0x1000, 10), (0x3000, 20), (0x4000, 5)]
        );
        // More bytes than the iovecs hold (garbage): stop at the array's end.
        assert_eq!(
            m.ranges(c::SYS_preadv, [3, 0x9000, 4, 0, 0, 0], 1000),
            [(0x1000, 10), (0x3000, 20), (0x4000, 5)]
        );
        // An unreadable array or an absurd count: what can be read, no panic.
        assert!(m
            .ranges(c::SYS_readv, [3, 0xdead_0000, 4, 0, 0, 0], 25)
            .is_empty());
        assert_eq!(
            m.ranges(c::SYS_readv, [3, 0x9000, u64::MAX, 0, 0, 0], 12),
            [(0x1000, 10), (0x3000, 2)]
        );
        assert!(m
            .ranges(c::SYS_readv, [3, u64::MAX - 8, 4, 0, 0, 0], 25)
            .is_empty());
    }

    #[test]
    fn recvmsg_and_recvmmsg() {
        let mut m = Mem::default();
        let hdr = 0x8000;
        m.put_u64(hdr, 0x5000); // msg_name
        m.put_u64(hdr + 8, 16); // msg_namelen after the call, padding
        m.put_u64(hdr + 16, 0x9000); // msg_iov
        m.put_u64(hdr + 24, 2); // msg_iovlen
        m.put_u64(hdr + 32, 0x6000); // msg_control
        m.put_u64(hdr + 40, 24); // msg_controllen after the call
        m.put_u64(hdr + 48, 0); // msg_flags and padding
        m.iov(0x9000, &[(0x1000, 20), (0x2000, 100)]);
        let want = vec![
            (0x5000, 16),
            (hdr + 8, 4),
            (0x1000, 20),
            (0x2000, 10),
            (0x6000, 24),
            (hdr + 40, 8),
            (hdr + 48, 4),
        ];
        assert_eq!(m.ranges(c::SYS_recvmsg, [3, hdr, 0, 0, 0, 0], 30), want);
        assert!(m
            .ranges(c::SYS_recvmsg, [3, hdr, 0, 0, 0, 0], -11)
            .is_empty());

        // recvmmsg: the same header twice in a vector, msg_len 30 then 5.
        let vec = 0xa000;
        for i in 0..2u64 {
            let h = vec + 64 * i;
            m.put_u64(h, 0);
            m.put_u64(h + 8, 0);
            m.put_u64(h + 16, 0x9000);
            m.put_u64(h + 24, 2);
            m.put_u64(h + 32, 0);
            m.put_u64(h + 40, 0);
            m.put_u64(h + 48, 0);
            m.put_u32(h + 56, if i == 0 { 30 } else { 5 });
        }
        let got = m.ranges(c::SYS_recvmmsg, [3, vec, 8, 0, 0x7000, 0], 2);
        assert_eq!(
            got,
            [
                (0x1000, 20),
                (0x2000, 10),
                (vec + 40, 8),
                (vec + 48, 4),
                (vec + 56, 4),
                (0x1000, 5),
                (vec + 64 + 40, 8),
                (vec + 64 + 48, 4),
                (vec + 64 + 56, 4),
                (0x7000, 16)
            ]
        );
    }

    #[test]
    fn socket_addresses() {
        let mut m = Mem::default();
        m.put_u32(0x2000, 16); // *addrlen after accept
        assert_eq!(
            m.ranges(c::SYS_accept, [3, 0x1000, 0x2000, 0, 0, 0], 5),
            [(0x1000, 16), (0x2000, 4)]
        );
        assert_eq!(
            m.ranges(c::SYS_accept4, [3, 0x1000, 0x2000, 0, 0, 0], 5),
            [(0x1000, 16), (0x2000, 4)]
        );
        assert!(m
            .ranges(c::SYS_accept4, [3, 0, 0, c::SOCK_CLOEXEC as u64, 0, 0], 5)
            .is_empty());
        assert_eq!(
            m.ranges(c::SYS_recvfrom, [3, 0x4000, 512, 0, 0x1000, 0x2000], 64),
            [(0x4000, 64), (0x1000, 16), (0x2000, 4)]
        );
        assert_eq!(
            m.ranges(c::SYS_recvfrom, [3, 0x4000, 512, 0, 0, 0], 64),
            [(0x4000, 64)]
        );
        // A garbage length is cut at sockaddr_storage.
        m.put_u32(0x3000, 0xffff_ffff);
        assert_eq!(
            m.ranges(c::SYS_getpeername, [3, 0x1000, 0x3000, 0, 0, 0], 0),
            [(0x1000, 128), (0x3000, 4)]
        );
        // getsockopt: optval with the optlen left after the call.
        m.put_u32(0x5000, 4);
        assert_eq!(
            m.ranges(
                c::SYS_getsockopt,
                [
                    3,
                    c::SOL_SOCKET as u64,
                    c::SO_ERROR as u64,
                    0x6000,
                    0x5000,
                    0
                ],
                0
            ),
            [(0x6000, 4), (0x5000, 4)]
        );
        // Unreadable length word: only the word itself.
        assert_eq!(
            m.ranges(c::SYS_getsockname, [3, 0x1000, 0x7000, 0, 0, 0], 0),
            [(0x7000, 4)]
        );
        assert_eq!(
            ranges(c::SYS_socketpair, [1, 1, 0, 0x1000, 0, 0], 0),
            [(0x1000, 8)]
        );
        assert_eq!(
            ranges(c::SYS_pipe2, [0x1000, 0, 0, 0, 0, 0], 0),
            [(0x1000, 8)]
        );
    }

    #[test]
    fn ioctl_decoding() {
        let io = |req: u64| ranges(c::SYS_ioctl, [1, req, 0x1000, 0, 0, 0], 0);
        assert_eq!(io(0x5413), [(0x1000, 8)]); // TIOCGWINSZ
        assert_eq!(io(0x5401), [(0x1000, 36)]); // TCGETS: the kernel's termios
        assert_eq!(io(0x541B), [(0x1000, 4)]); // FIONREAD
        assert!(io(0x5421).is_empty()); // FIONBIO
        assert!(io(0x5452).is_empty()); // FIOASYNC
        assert!(io(0x5402).is_empty()); // TCSETS
        assert_eq!(io(0x802c_542a), [(0x1000, 44)]); // TCGETS2 = _IOR('T', 0x2A, struct termios2)
        assert_eq!(io(0x8004_5430), [(0x1000, 4)]); // TIOCGPTN = _IOR('T', 0x30, unsigned int)
        assert_eq!(io(0x4004_54ca), [(0x1000, IFREQ)]); // TUNSETIFF writes the ifreq back
        assert_eq!(io(0x8004_54d2), [(0x1000, IFREQ)]); // TUNGETIFF
        assert!(io(0x402c_542b).is_empty()); // TCSETS2 = _IOW
        assert_eq!(io(0xc008_6601), [(0x1000, 8)]); // _IOWR('f', 1, long)
                                                    // The request is an unsigned int: garbage above bit 31 is ignored.
        assert_eq!(io(0xffff_ffff_0000_5413), [(0x1000, 8)]);
        assert!(ranges(c::SYS_ioctl, [1, 0x5413, 0x1000, 0, 0, 0], -25).is_empty()); // ENOTTY
        assert_eq!(std::mem::size_of::<libc::termios2>(), 44);
        assert_eq!(std::mem::size_of::<libc::winsize>() as u64, WINSIZE);
    }

    #[test]
    fn sleeps_write_the_time_left_when_interrupted() {
        let rem = [0x1000, 0x2000, 0, 0, 0, 0];
        assert_eq!(ranges(c::SYS_nanosleep, rem, -4), [(0x2000, 16)]); // EINTR
        assert_eq!(ranges(c::SYS_nanosleep, rem, -516), [(0x2000, 16)]); // ERESTART_RESTARTBLOCK
        assert!(ranges(c::SYS_nanosleep, rem, 0).is_empty());
        assert!(ranges(c::SYS_nanosleep, rem, -22).is_empty());
        assert!(ranges(c::SYS_nanosleep, [0x1000, 0, 0, 0, 0, 0], -4).is_empty());
        let rel = [c::CLOCK_MONOTONIC as u64, 0, 0x1000, 0x2000, 0, 0];
        assert_eq!(ranges(c::SYS_clock_nanosleep, rel, -4), [(0x2000, 16)]);
        let abs = [
            c::CLOCK_MONOTONIC as u64,
            c::TIMER_ABSTIME as u64,
            0x1000,
            0x2000,
            0,
            0,
        ];
        assert!(ranges(c::SYS_clock_nanosleep, abs, -514).is_empty());
    }

    #[test]
    fn polls_and_selects() {
        assert_eq!(
            ranges(c::SYS_poll, [0x1000, 3, 0, 0, 0, 0], 1),
            [(0x1000, 24)]
        );
        assert_eq!(
            ranges(c::SYS_poll, [0x1000, 3, u64::MAX, 0, 0, 0], -516),
            [(0x1000, 24)]
        );
        assert!(ranges(c::SYS_poll, [0x1000, 3, 0, 0, 0, 0], -14).is_empty());
        assert_eq!(
            ranges(c::SYS_ppoll, [0x1000, 2, 0x2000, 0, 0, 0], 0),
            [(0x1000, 16), (0x2000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_select, [65, 0x1000, 0, 0x3000, 0x4000, 0], 1),
            [(0x1000, 16), (0x3000, 16), (0x4000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_select, [65, 0x1000, 0, 0x3000, 0x4000, 0], -4),
            [(0x4000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_pselect6, [3, 0x1000, 0, 0, 0, 0x5000], 0),
            [(0x1000, 8)]
        );
        assert_eq!(
            ranges(c::SYS_epoll_wait, [5, 0x1000, 64, u64::MAX, 0, 0], 3),
            [(0x1000, 36)]
        );
        assert!(ranges(c::SYS_epoll_pwait, [5, 0x1000, 64, 0, 0, 0], 0).is_empty());
    }

    #[test]
    fn fixed_size_structures() {
        assert_eq!(
            ranges(c::SYS_fstat, [3, 0x1000, 0, 0, 0, 0], 0),
            [(0x1000, 144)]
        );
        assert_eq!(
            ranges(c::SYS_newfstatat, [3, 0x2000, 0x1000, 0, 0, 0], 0),
            [(0x1000, 144)]
        );
        assert_eq!(
            ranges(c::SYS_statx, [3, 0x2000, 0, 0xfff, 0x1000, 0], 0),
            [(0x1000, 256)]
        );
        assert_eq!(
            ranges(c::SYS_uname, [0x1000, 0, 0, 0, 0, 0], 0),
            [(0x1000, 390)]
        );
        assert_eq!(
            ranges(c::SYS_times, [0x1000, 0, 0, 0, 0, 0], 4_000_000),
            [(0x1000, 32)]
        );
        assert_eq!(
            ranges(c::SYS_clock_gettime, [1, 0x1000, 0, 0, 0, 0], 0),
            [(0x1000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_gettimeofday, [0x1000, 0, 0, 0, 0, 0], 0),
            [(0x1000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_rt_sigaction, [2, 0x1000, 0x2000, 8, 0, 0], 0),
            [(0x2000, 32)]
        );
        assert!(ranges(c::SYS_rt_sigaction, [2, 0x1000, 0, 8, 0, 0], 0).is_empty());
        assert_eq!(
            ranges(c::SYS_wait4, [u64::MAX, 0x1000, 0, 0x2000, 0, 0], 1234),
            [(0x1000, 4), (0x2000, 144)]
        );
        assert!(ranges(c::SYS_wait4, [u64::MAX, 0x1000, 1, 0, 0, 0], 0).is_empty()); // WNOHANG, nothing
        assert_eq!(
            ranges(c::SYS_waitid, [0, 0, 0x1000, 4, 0, 0], 0),
            [(0x1000, 128)]
        );
        assert_eq!(
            ranges(c::SYS_getresuid, [0x1000, 0x1004, 0x1008, 0, 0, 0], 0),
            [(0x1000, 4), (0x1004, 4), (0x1008, 4)]
        );
        assert_eq!(
            ranges(c::SYS_getgroups, [32, 0x1000, 0, 0, 0, 0], 3),
            [(0x1000, 12)]
        );
        assert!(ranges(c::SYS_getgroups, [0, 0x1000, 0, 0, 0, 0], 3).is_empty());
        assert_eq!(
            ranges(c::SYS_getcwd, [0x1000, 4096, 0, 0, 0, 0], 5),
            [(0x1000, 5)]
        );
        assert_eq!(
            ranges(c::SYS_prctl, [16, 0x1000, 0, 0, 0, 0], 0),
            [(0x1000, 16)]
        ); // PR_GET_NAME
        assert!(ranges(c::SYS_prctl, [15, 0x1000, 0, 0, 0, 0], 0).is_empty()); // PR_SET_NAME
        assert_eq!(
            ranges(c::SYS_arch_prctl, [0x1003, 0x1000, 0, 0, 0, 0], 0),
            [(0x1000, 8)]
        ); // ARCH_GET_FS
        assert!(ranges(c::SYS_arch_prctl, [0x1002, 0x1000, 0, 0, 0, 0], 0).is_empty()); // ARCH_SET_FS
        assert_eq!(
            ranges(c::SYS_sendfile, [1, 3, 0x1000, 100, 0, 0], 100),
            [(0x1000, 8)]
        );
        assert!(ranges(
            c::SYS_mmap,
            [0, 4096, 3, 0x22, u64::MAX, 0],
            0x7f00_0000_0000
        )
        .is_empty());
        assert!(ranges(c::SYS_futex, [0x1000, 0, 1, 0, 0, 0], 0).is_empty()); // FUTEX_WAIT
        assert_eq!(
            ranges(c::SYS_futex, [0x1000, 5 | 128, 1, 1, 0x2000, 0], 1),
            [(0x2000, 4)]
        ); // FUTEX_WAKE_OP
    }

    #[test]
    fn capget_versions() {
        let mut m = Mem::default();
        m.put_u32(0x1000, 0x2008_0522); // _LINUX_CAPABILITY_VERSION_3
        assert_eq!(
            m.ranges(c::SYS_capget, [0x1000, 0x2000, 0, 0, 0, 0], 0),
            [(0x2000, 24)]
        );
        m.put_u32(0x1000, 0x1998_0330); // _LINUX_CAPABILITY_VERSION_1
        assert_eq!(
            m.ranges(c::SYS_capget, [0x1000, 0x2000, 0, 0, 0, 0], 0),
            [(0x2000, 12)]
        );
        // Probing with a null data pointer: the kernel answers in the header.
        assert_eq!(
            m.ranges(c::SYS_capget, [0x1000, 0, 0, 0, 0, 0], 0),
            [(0x1000, 4)]
        );
        assert!(m
            .ranges(c::SYS_capget, [0x1000, 0x2000, 0, 0, 0, 0], -1)
            .is_empty());
    }

    #[test]
    fn absurd_values_are_capped() {
        assert_eq!(
            ranges(c::SYS_read, [3, 0x1000, u64::MAX, 0, 0, 0], i64::MAX),
            [(0x1000, MAX_RANGE)]
        );
        assert!(ranges(c::SYS_read, [3, u64::MAX - 10, 4096, 0, 0, 0], 100).is_empty());
        assert_eq!(
            ranges(c::SYS_read, [3, USER_END - 10, 4096, 0, 0, 0], 100),
            [(USER_END - 10, 10)]
        );
        assert_eq!(
            ranges(c::SYS_getrandom, [0x1000, 16, 0, 0, 0, 0], 16),
            [(0x1000, 16)]
        );
        assert_eq!(
            ranges(c::SYS_epoll_wait, [5, 0x1000, 64, 0, 0, 0], i64::MAX),
            [(0x1000, MAX_RANGE)]
        );
        assert_eq!(
            ranges(c::SYS_ioctl, [1, 0xbfff_0000, 0x1000, 0, 0, 0], 0),
            [(0x1000, 0x3fff)]
        );
        // Every known syscall survives garbage arguments with any memory.
        for nr in 0..=MAX_NR {
            for ret in [0, 1, 4096, i64::MAX, -4, -516] {
                let _ = written_ranges(nr, &[u64::MAX; 6], ret, &mut |_, b| {
                    b.fill(0xff);
                    true
                });
                let _ = written_ranges(nr, &[0x1000; 6], ret, &mut |_, _| false);
            }
        }
    }

    #[test]
    fn kernel_sizes_match_libc() {
        use std::mem::size_of;
        assert_eq!(size_of::<libc::stat>() as u64, STAT);
        assert_eq!(size_of::<libc::statx>() as u64, STATX);
        assert_eq!(size_of::<libc::statfs>() as u64, STATFS);
        assert_eq!(size_of::<libc::utsname>() as u64, UTSNAME);
        assert_eq!(size_of::<libc::sysinfo>() as u64, SYSINFO);
        assert_eq!(size_of::<libc::tms>() as u64, TMS);
        assert_eq!(size_of::<libc::rusage>() as u64, RUSAGE);
        assert_eq!(size_of::<libc::rlimit>() as u64, RLIMIT);
        assert_eq!(size_of::<libc::siginfo_t>() as u64, SIGINFO);
        assert_eq!(size_of::<libc::stack_t>() as u64, STACK_T);
        assert_eq!(size_of::<libc::epoll_event>() as u64, EPOLL_EVENT);
        assert_eq!(size_of::<libc::pollfd>() as u64, POLLFD);
        assert_eq!(size_of::<libc::iovec>() as u64, IOVEC);
        assert_eq!(size_of::<libc::msghdr>() as u64, MSGHDR);
        assert_eq!(size_of::<libc::mmsghdr>() as u64, MMSGHDR);
        assert_eq!(size_of::<libc::sockaddr_storage>() as u64, SOCKADDR_MAX);
        assert_eq!(size_of::<libc::itimerval>() as u64, ITIMERVAL);
        assert_eq!(size_of::<libc::itimerspec>() as u64, ITIMERSPEC);
        assert_eq!(size_of::<libc::timespec>() as u64, TIMESPEC);
        assert_eq!(size_of::<libc::timex>() as u64, TIMEX);
        assert_eq!(size_of::<libc::mq_attr>() as u64, MQ_ATTR);
        assert_eq!(size_of::<libc::shmid_ds>() as u64, SHMID_DS);
        assert_eq!(size_of::<libc::msqid_ds>() as u64, MSQID_DS);
        assert_eq!(size_of::<libc::ifreq>() as u64, IFREQ);
        assert_eq!(size_of::<libc::user_regs_struct>() as u64, USER_REGS);
        assert_eq!(size_of::<libc::user_fpregs_struct>() as u64, USER_FPREGS);
    }
}
