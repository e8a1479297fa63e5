//! rewind's checkpoint-restart engine (DESIGN §3).
//!
//! It takes a running process under ptrace control ([`tracee`]), captures
//! its whole state ([`capture`]) into a durable [`image`], and brings such an
//! image back to life in a fresh process ([`restore`]). A [`session::Session`]
//! runs the event loop of `rewind launch` and `rewind restart`: it keeps the
//! program running, answers the control socket ([`control`]) and translates
//! virtual process ids ([`vids`]). What lives outside process memory is
//! handled by [`plugin::Plugin`]s; files, pipes, pids and System V IPC
//! objects ([`sysv`]) are built-in plugins. Shared memory, in one process or
//! across a process tree, is [`shm`].
//!
//! This crate knows nothing of debugging. Everything unsafe lives in [`sys`].

pub mod capture;
pub mod control;
pub mod coordinator;
pub mod creds;
pub mod environ;
pub mod fds;
pub mod forked;
pub mod image;
pub mod jobs;
pub mod maps;
pub mod plugin;
pub mod pty;
pub mod restore;
pub mod seccomp;
pub mod session;
pub mod shm;
pub mod sockets;
pub mod sys;
pub mod sysv;
pub mod tracee;
pub mod tree;
pub mod unix_sockets;
pub mod vids;
pub mod zombies;

use nix::errno::Errno;

/// Errors of the engine; each displays as one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tracee(String),
    /// The program is gone (exited or killed).
    #[error("{0}")]
    Gone(String),
    #[error("{op} on thread {tid} failed: {}", errno.desc())]
    Ptrace {
        op: &'static str,
        tid: i32,
        errno: Errno,
    },
    #[error("{what} in the target failed: {}", errno.desc())]
    Injected { what: String, errno: Errno },
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("{0}")]
    Restore(String),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn ptrace(op: &'static str, tid: i32, errno: Errno) -> Error {
        Error::Ptrace { op, tid, errno }
    }
}
