//! `rewind gdbserver`: a gdb remote target (gdbstub) over a recording, with
//! reverse execution (`bs`/`bc`).
//!
//! gdb talks to [`target::Server`], which turns every request into an
//! operation of the [`Timeline`](crate::timeline::Timeline) that `rewind
//! debug` uses: registers and memory are read from the replayed process,
//! software breakpoints and hardware watchpoints become the timeline's,
//! continue/step/reverse-continue/reverse-step run it. `-- PROG ARGS`
//! records the program to its end first, then serves the recording.

mod conn;
mod hostio;
mod regs;
mod target;

use std::io::BufWriter;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, MultiThreadStopReason};

use crate::cli::{err, CliError, CliResult};
use crate::timeline::{self, TimelineOptions};
use conn::{KeepAlive, Link};
use target::{Ran, Server};

/// Where gdb connects when nothing else is said.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2345";

/// What to do with the replay when gdb detaches or the connection drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    /// Stop it there.
    Kill,
    /// Let it replay on to the end of the recording (its output shown).
    Detach,
}

pub struct GdbserverRequest {
    pub trace: Option<PathBuf>,
    /// With `trace`: a process of a recorded tree (see `debug --process`).
    pub process: Option<i32>,
    pub argv: Vec<String>,
    /// Keep the recording of PROG here (default: a temporary directory).
    pub output: Option<PathBuf>,
    pub listen: Option<String>,
    pub stdio: bool,
    pub on_disconnect: OnDisconnect,
    pub max_snapshots: usize,
    /// MiB.
    pub snapshot_memory: u64,
}

pub fn gdbserver(req: GdbserverRequest) -> CliResult {
    if req.trace.is_some() != req.argv.is_empty() {
        return Err(CliError::usage(if req.trace.is_some() {
            "give either --trace DIR or -- PROG ARGS, not both"
        } else {
            "nothing to serve: give --trace DIR or -- PROG ARGS"
        }));
    }
    if req.stdio && req.listen.is_some() {
        return Err(CliError::usage(
            "give either --listen ADDR:PORT or --stdio, not both",
        ));
    }
    // With --stdio, stdout carries the protocol: keep it for gdb and send
    // everything else written to fd 1 (the program's output, while it is
    // recorded or replayed) to stderr; the program reads /dev/null.
    let stdio = if req.stdio {
        let out = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| err(format!("cannot use stdout: {e}")))?;
        let inp = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| err(format!("cannot use stdin: {e}")))?;
        let null = std::fs::File::open("/dev/null").map_err(|e| err(format!("/dev/null: {e}")))?;
        nix::unistd::dup2(2, 1).map_err(|e| err(format!("cannot redirect stdout: {e}")))?;
        nix::unistd::dup2(null.as_raw_fd(), 0)
            .map_err(|e| err(format!("cannot redirect stdin: {e}")))?;
        Some((std::fs::File::from(inp), std::fs::File::from(out)))
    } else {
        None
    };
    // gdb's end of the connection, kept waiting (KeepAlive) while the
    // recording is made and loaded: with --stdio it is there from the start;
    // on TCP, a thread accepts it meanwhile (listening at once, so that a
    // busy port is said at once).
    let pending = match stdio {
        Some((inp, out)) => {
            let beat = out
                .try_clone()
                .map_err(|e| err(format!("cannot use stdout: {e}")))?;
            Pending::Stdio(inp, out, KeepAlive::start(Box::new(beat)))
        }
        None => {
            let addr = req.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
            let l = TcpListener::bind(&addr)
                .map_err(|e| err(format!("cannot listen on {addr}: {e}")))?;
            eprintln!("Listening on {addr} (gdb: target remote {addr})");
            let accepting = std::thread::spawn(move || {
                let (stream, peer) = l.accept()?;
                let _ = stream.set_nodelay(true);
                let beat = KeepAlive::start(Box::new(stream.try_clone()?));
                Ok((stream, peer, beat))
            });
            Pending::Tcp(accepting, addr)
        }
    };

    // Tests simulate a slow start (a loaded machine) with this.
    if let Some(ms) = std::env::var("REWIND_TEST_SLOW_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let opts = TimelineOptions {
        max_snapshots: req.max_snapshots,
        memory_budget: req.snapshot_memory << 20,
        ..Default::default()
    };
    // `-- PROG`: live, recorded as far as gdb goes forward (with --stdio
    // its stdout is our stderr and it reads /dev/null, set above).
    let (tl, _temp) = if let Some(dir) = &req.trace {
        let _ = rewind_ckpt::sys::set_child_subreaper();
        let (trace, image) = crate::debug_cli::load_trace(dir, req.process)?;
        // The program's replayed output goes to stderr: with --stdio,
        // stdout is gdb's.
        let console = rewind_rr::replayer::Console::new(
            if req.stdio {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            },
            Box::new(std::io::stderr()),
        );
        let tl = timeline::Timeline::open_image(trace, &image, console, opts)
            .map_err(|e| err(e.to_string()))?;
        (tl, None)
    } else {
        let (tl, temp) =
            crate::debug_cli::live_timeline(&req.argv, req.output.as_deref(), opts, req.stdio)?;
        (tl, Some(temp))
    };
    let exe = crate::debug_cli::executable(&tl);

    // Ready: the keep-alive stops before the protocol starts.
    let link = match pending {
        Pending::Stdio(inp, out, beat) => {
            drop(beat);
            Link::new(Box::new(inp), Box::new(BufWriter::new(out)))
        }
        Pending::Tcp(accepting, addr) => {
            let (stream, peer, beat) = accepting
                .join()
                .map_err(|_| err("the thread accepting gdb's connection failed"))?
                .map_err(|e| err(format!("accepting a connection on {addr}: {e}")))?;
            drop(beat);
            eprintln!("rewind: gdb connected from {peer}");
            let input = stream
                .try_clone()
                .map_err(|e| err(format!("connection: {e}")))?;
            Link::new(Box::new(input), Box::new(BufWriter::new(stream)))
        }
    };
    // A Ctrl-C from gdb becomes our SIGINT, which stops the replay.
    rewind_ckpt::sys::catch_interrupt().map_err(|e| err(format!("cannot catch SIGINT: {e}")))?;
    let signals = link.signals();
    let mut server = Server::new(tl, exe, signals.clone());
    server.tl.progress = Some(Box::new(move |_what: &str| signals.wants_attention()));

    let stub = GdbStub::new(link);
    let outcome = stub.run_blocking::<EventLoop>(&mut server);
    let (code, end) = match outcome {
        Ok(DisconnectReason::Kill) => (Ok(0), OnDisconnect::Kill),
        Ok(DisconnectReason::Disconnect) => (Ok(0), req.on_disconnect),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
            (Ok(0), OnDisconnect::Kill)
        }
        Err(e) if e.is_connection_error() => {
            let msg = e.to_string();
            let gone = e.into_connection_error().is_some_and(|(io, _)| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                )
            });
            if gone {
                eprintln!("rewind: gdb closed the connection");
                (Ok(0), req.on_disconnect)
            } else {
                (
                    Err(err(format!("gdb connection: {msg}"))),
                    req.on_disconnect,
                )
            }
        }
        Err(e) => (
            Err(err(format!("gdb session ended: {e}"))),
            req.on_disconnect,
        ),
    };
    if end == OnDisconnect::Detach {
        // Detached: the program goes on to the end of its recording (a
        // live one to its own end).
        server.tl.breakpoints.clear();
        server.tl.watches.clear();
        server.tl.progress = None;
        let _ = rewind_ckpt::sys::take_interrupt();
        if let Err(e) = server.tl.cont(&mut |_, _| false) {
            eprintln!("rewind: {e}");
        }
    }
    // A live program about to exit exits; any other is killed.
    server.tl.finish_live(end == OnDisconnect::Kill);
    code
}

/// gdb's connection while rewind gets ready.
enum Pending {
    Stdio(std::fs::File, std::fs::File, KeepAlive),
    /// The thread accepting the connection, and the address.
    Tcp(
        std::thread::JoinHandle<std::io::Result<(TcpStream, std::net::SocketAddr, KeepAlive)>>,
        String,
    ),
}

enum EventLoop {}

impl run_blocking::BlockingEventLoop for EventLoop {
    type Target = Server;
    type Connection = Link;
    type StopReason = MultiThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Server,
        conn: &mut Link,
    ) -> Result<
        run_blocking::Event<MultiThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<String, <Link as Connection>::Error>,
    > {
        loop {
            match target.run_pending() {
                Ran::Stopped(stop) => return Ok(run_blocking::Event::TargetStopped(stop)),
                Ran::Interrupted => {
                    // gdb's byte (a Ctrl-C), or the end of the connection.
                    // A SIGINT from elsewhere: run again, never wait for
                    // gdb, which waits for us.
                    let from_gdb = conn.peek().map(|b| b.is_some()).unwrap_or(true);
                    if from_gdb {
                        let byte = conn
                            .read()
                            .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                        return Ok(run_blocking::Event::IncomingData(byte));
                    }
                }
            }
        }
    }

    fn on_interrupt(target: &mut Server) -> Result<Option<MultiThreadStopReason<u64>>, String> {
        target.action = None;
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: target.current_tid(),
            signal: Signal::SIGINT,
        }))
    }
}
