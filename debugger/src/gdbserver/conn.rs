//! The connection to gdb: TCP or stdin/stdout. A reader thread moves the
//! bytes gdb sends into a channel, so that a long replay can notice a
//! Ctrl-C (or a closed connection) without owning the connection: it only
//! looks at [`Signals`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use gdbstub::conn::{Connection, ConnectionExt};

/// What the reader thread tells whoever runs the program.
#[derive(Clone, Default)]
pub struct Signals {
    /// Bytes received and not yet read by the protocol.
    pending: Arc<AtomicUsize>,
    /// The connection is gone (end of file or an error).
    closed: Arc<AtomicBool>,
    /// The program is running (replay in progress): a byte from gdb
    /// then is a Ctrl-C, passed on as SIGINT to stop the replay at once.
    running: Arc<AtomicBool>,
}

impl Signals {
    /// Say whether the program is running (replay in progress).
    pub fn set_running(&self, on: bool) {
        self.running.store(on, Ordering::SeqCst);
    }

    /// Interrupt a running replay the way Ctrl-C does in `rewind debug`.
    fn poke(&self) {
        if self.running.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT);
        }
    }

    /// gdb sent something (a Ctrl-C while running) or went away: stop what
    /// is running.
    pub fn wants_attention(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0 || self.closed.load(Ordering::SeqCst)
    }
}

/// Keeps gdb waiting while rewind records or loads, before the protocol
/// starts. gdb waits for the answer to its first packet for a few seconds
/// only (`set remotetimeout`, three tries), then goes on as if it had none,
/// and every later answer pairs with the wrong packet. Any character outside
/// a packet restarts its wait, so a `+` every half second (an acknowledgment,
/// and a true one: the transport loses nothing) keeps it waiting as long as
/// needed.
pub struct KeepAlive {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAlive {
    pub fn start(mut out: Box<dyn Write + Send>) -> KeepAlive {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if out.write_all(b"+").and_then(|_| out.flush()).is_err() {
                    return;
                }
                std::thread::park_timeout(std::time::Duration::from_millis(500));
            }
        });
        KeepAlive {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KeepAlive {
    /// Stops writing before the protocol starts (no byte written after).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

pub struct Link {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: VecDeque<u8>,
    out: Box<dyn Write + Send>,
    signals: Signals,
}

impl Link {
    /// A link reading `input` (in a thread of its own) and writing `out`.
    pub fn new(mut input: Box<dyn Read + Send>, out: Box<dyn Write + Send>) -> Link {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let signals = Signals::default();
        let s = signals.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match input.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        s.pending.fetch_add(n, Ordering::SeqCst);
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                        s.poke();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!("gdb connection: {e}");
                        break;
                    }
                }
            }
            s.closed.store(true, Ordering::SeqCst);
            s.poke();
        });
        Link {
            rx,
            buf: VecDeque::new(),
            out,
            signals,
        }
    }

    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    fn fill(&mut self, block: bool) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        let got = if block {
            self.rx.recv().ok()
        } else {
            match self.rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        };
        match got {
            Some(c) => {
                self.buf.extend(c);
                Ok(true)
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "gdb closed the connection",
            )),
        }
    }
}

impl Connection for Link {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.out.write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ConnectionExt for Link {
    fn read(&mut self) -> io::Result<u8> {
        self.fill(true)?;
        let b = self
            .buf
            .pop_front()
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no data"))?;
        self.signals.pending.fetch_sub(1, Ordering::SeqCst);
        Ok(b)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.fill(false)? {
            Ok(self.buf.front().copied())
        } else {
            Ok(None)
        }
    }
}
