//! `rewind`: the command line. It parses (clap derive) and calls library
//! functions; it holds no logic of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use rewind_debugger::cli;

/// Checkpoint, restart, record, replay and debug backwards unmodified Linux
/// x86-64 programs, without hardware performance counters.
#[derive(Parser, Debug)]
#[command(name = "rewind", version)]
struct Cli {
    /// Log what the engine does on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)] // `rewind command` is the contract
enum Command {
    /// Run a program under the checkpoint engine, in the foreground.
    ///
    /// The program's stdin, stdout and stderr are rewind's. rewind exits with
    /// the program's exit status (128 + signal number when it is killed).
    /// Processes it forks are followed: a checkpoint writes one image per
    /// process of the tree.
    /// While it runs, `rewind command` checkpoints it through a control socket
    /// (mode 0600) in the checkpoint directory, or at $REWIND_CONTROL. With
    /// --coordinator it also registers with a `rewind coordinator`, which
    /// checkpoints it together with every other program registered there.
    /// A checkpoint stops the program only while it is captured and a
    /// copy-on-write copy of its memory is made; its images are written from
    /// that copy while it runs on (--no-forked-checkpoints: while it is
    /// stopped).
    Launch(LaunchArgs),
    /// Talk to a running `rewind launch` or `rewind restart`, or to a
    /// coordinator.
    ///
    /// Finds the session by $REWIND_CONTROL if set, else by the control socket
    /// in --ckpt-dir (default: the current directory). With --coordinator
    /// HOST:PORT it talks to a `rewind coordinator` instead, which applies
    /// the command to every session registered with it: --checkpoint stops
    /// them all (barrier), reads what is in flight on their TCP connections
    /// (barrier: connections between the programs are kept), captures each
    /// (barrier), then resumes them while their images are written or, with
    /// --kill, writes the images and kills them; it prints every image once
    /// all are durable, how long the programs were stopped and when the
    /// images were durable, the time of each phase and the command that
    /// restarts them all. If one session fails, disconnects or does not
    /// answer in time, the command fails naming it and the others are
    /// resumed (never killed).
    #[command(
        group(clap::ArgGroup::new("action").required(true).multiple(true).args(["checkpoint", "status", "kill", "quit", "ping"])),
        after_help = "Examples:\n  rewind command --checkpoint --kill\n  rewind command --coordinator 127.0.0.1:7779 --checkpoint\n  rewind command --coordinator node1:7779 --token $TOKEN --status"
    )]
    Command(CommandArgs),
    /// Coordinate the checkpoints of several programs, on one or many hosts.
    ///
    /// DMTCP's coordinator. Programs started with `rewind launch
    /// --coordinator HOST:PORT` or `rewind restart --coordinator HOST:PORT`
    /// register here; `rewind command --coordinator HOST:PORT` then
    /// checkpoints, describes or kills them all together. Listens on
    /// 127.0.0.1:7779 unless --listen says otherwise: it never listens on all
    /// interfaces unless asked (--listen 0.0.0.0:7779). Prints its address
    /// and a random token at start, then one line per event (sessions joining
    /// and leaving, commands and their outcome). Peers connecting from a
    /// non-loopback address must present the token (--token T or
    /// $REWIND_TOKEN); loopback peers may omit it; a wrong token is always
    /// refused. Runs until killed (Ctrl-C); sessions then run on alone.
    #[command(
        after_help = "Examples:\n  rewind coordinator                       # 127.0.0.1:7779\n  rewind coordinator --listen 10.0.0.1:7779\n  rewind launch --coordinator 127.0.0.1:7779 -- ./prog"
    )]
    Coordinator(CoordinatorArgs),
    /// Bring a checkpointed program back to life, in the foreground.
    ///
    /// The program continues where the checkpoint caught it, in a new process
    /// whose stdin, stdout and stderr are rewind's; it sees the same pid and
    /// thread ids as before. rewind exits with the program's exit status.
    ///
    /// Memory its processes shared (MAP_SHARED anonymous memory, memfds,
    /// POSIX shm) is shared again; POSIX shm files and the program's System
    /// V segments, semaphore sets and message queues get the checkpoint's
    /// contents back, with their ids and keys (an id taken by another
    /// object is an error naming it).
    Restart(RestartArgs),
    /// Run a program live and record everything nondeterministic it sees.
    ///
    /// Syscall results and the memory they wrote, signals and where they
    /// arrived, rdtsc values and the thread schedule go into a trace
    /// directory, next to an image of the program at its first instruction.
    /// No hardware performance counters are needed. Every process the
    /// program makes (fork, vfork, posix_spawn) is recorded too, in its own
    /// log (`proc-PID/`), with the order of events across processes.
    Record(RecordArgs),
    /// Re-execute a recorded program deterministically.
    ///
    /// The program runs again natively and is fed the recorded events; it
    /// never touches the outside world (its writes to stdout and stderr are
    /// shown from the trace, not performed). A recorded process tree is
    /// replayed whole: each process is made again where it was, and they
    /// run in the recorded order. Ends with the recorded exit status, or
    /// with a divergence report if a process does something else.
    Replay(ReplayArgs),
    /// Debug a program forward and backward, with gdb's commands.
    ///
    /// `rewind debug -- PROG ARGS` starts the program at its first
    /// instruction, live and recorded as far as forward commands go:
    /// reverse commands replay the history recorded so far, forward ones
    /// replay up to its end and then run the program on. It does its I/O
    /// with this terminal, once, when the debugger passes it (Ctrl-C stops
    /// a command, not the program; `kill` and `quit` kill it, unless it is
    /// about to exit). `rewind debug --trace DIR` opens a recording made by
    /// `rewind record` (its output is shown the first time replay passes
    /// it, nothing outside is touched); `rewind debug --image F` looks at a
    /// checkpoint image. Every stop has an exact moment: reverse-stepi,
    /// reverse-step/next/finish and reverse-continue go back to the
    /// instruction that really ran before.
    /// Commands come from the terminal (history, completion, an empty line
    /// repeats), from -x files and --ex, or from stdin when it is not a
    /// terminal (a live program reading stdin then wants -x/--ex and
    /// --batch). `help` lists them.
    #[command(
        after_help = "Examples:\n  rewind debug -- ./prog arg\n  rewind debug --trace rewind-trace-prog-123 -x cmds.gdb --batch\n  echo -e 'break main\\nrun\\nbt' | rewind debug --trace DIR"
    )]
    Debug(DebugArgs),
    /// Serve a recording to gdb (remote protocol), with reverse execution.
    ///
    /// gdb connects with `target remote 127.0.0.1:2345` (TCP; rewind listens
    /// on 127.0.0.1 only, never on all interfaces unless --listen says so)
    /// or starts rewind itself with `target remote | rewind gdbserver
    /// --stdio ...` (the protocol on stdin/stdout; the program's output then
    /// goes to stderr). `-- PROG ARGS` runs the program live, recorded as
    /// far as gdb goes forward (reading /dev/null with --stdio); `--trace
    /// DIR` serves a recording made by `rewind record`. gdb's
    /// break, watch/rwatch/awatch, continue, step, next, finish, until and
    /// reverse-step/next/finish/continue/stepi all work; history is
    /// read-only (writes to memory or registers are refused). `monitor
    /// help` lists rewind's own commands (when, checkpoint, goto...).
    #[command(
        after_help = "Examples:\n  rewind gdbserver -- ./prog arg          # then in gdb: target remote :2345\n  gdb ./prog -ex 'target remote | rewind gdbserver --stdio --trace DIR'"
    )]
    Gdbserver(GdbserverArgs),
    /// Find the first moment a predicate holds: the origin of a bug.
    ///
    /// Searches a recording (`--trace DIR`, or `-- PROG ARGS` recorded
    /// first) from its beginning to its end, exactly, by binary search:
    /// over in-memory snapshots and events first, then inside the last
    /// interval between two events with hardware watchpoints on the memory
    /// the predicate reads (or, for registers and --check, over single
    /// steps: exponential probing, then bisection). Reports the moment,
    /// the instruction and source line that made the predicate true, old
    /// and new values and a backtrace (`rewind debug --trace DIR` then
    /// `goto MOMENT` goes there). The predicate must be false at the start
    /// and true at the end, and stay true once true: the result is checked
    /// against every in-memory snapshot and an error says when it is not.
    /// Exit status: 0 found, 1 not found or error, 2 usage.
    #[command(
        group(clap::ArgGroup::new("predicate").required(true).args(["until", "changes", "output_re", "check"])),
        after_help = "Examples:\n  rewind bisect --trace DIR --until 'counter > 5'\n  rewind bisect --trace DIR --until '*(int*)0x601040 != 0' --json\n  rewind bisect --trace DIR --changes 'list->head'\n  rewind bisect --output 'Traceback' -- python3 script.py\n  rewind bisect --trace DIR --check 'gdb -batch -nx \"$REWIND_EXE\" \"$REWIND_CORE\" -ex \"print bad\" | grep -q \"= 1\"'"
    )]
    Bisect(BisectArgs),
}

#[derive(Args, Debug)]
struct BisectArgs {
    /// A trace directory written by `rewind record`.
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// With --trace of a program that made processes: process PID (its
    /// recorded pid) instead of the program's own, from its first exec or
    /// where it was made.
    #[arg(long, value_name = "PID", requires = "trace")]
    process: Option<i32>,
    /// Keep the recording of PROG in DIR (default: a temporary directory,
    /// removed on exit).
    #[arg(short = 'o', long = "keep-trace", value_name = "DIR")]
    keep_trace: Option<PathBuf>,
    /// The first moment this debugger expression is true (nonzero):
    /// globals, locals of the innermost frame, `*(int*)0x601040`,
    /// `list->head->next == 0`, `$rax == 5`... Unreadable memory counts as
    /// false.
    #[arg(long, value_name = "EXPR")]
    until: Option<String>,
    /// The last change of the value EXPR has at the end (a reverse
    /// watchpoint on the memory it reads): stops just before the
    /// instruction or syscall that changed it.
    #[arg(long, value_name = "EXPR")]
    changes: Option<String>,
    /// The first moment the program's output (stdout and stderr, as
    /// recorded) matches this regular expression: the write that did it.
    #[arg(long = "output", value_name = "REGEX")]
    output_re: Option<String>,
    /// An external check decides: at each probe rewind writes an ELF core
    /// file of the moment and runs `sh -c CMD` with REWIND_CORE (its path),
    /// REWIND_MOMENT and REWIND_EXE (the executable) in the environment.
    /// Exit 0 = true, 1..127 = false, else the search stops.
    #[arg(long, value_name = "CMD")]
    check: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// At most N single steps inside one interval between events, when the
    /// predicate cannot be watched (registers, --check).
    #[arg(long, value_name = "N", default_value = "20000000")]
    max_steps: u64,
    /// Do not check the result against the in-memory snapshots.
    #[arg(long)]
    no_check_monotone: bool,
    /// At most N in-memory snapshots.
    #[arg(long, value_name = "N", default_value = "48")]
    max_snapshots: usize,
    /// The program to record and search, and its arguments.
    #[arg(last = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

#[derive(Args, Debug)]
struct GdbserverArgs {
    /// A trace directory written by `rewind record`.
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// With --trace of a program that made processes: process PID (its
    /// recorded pid) instead of the program's own, from its first exec or
    /// where it was made.
    #[arg(long, value_name = "PID", requires = "trace")]
    process: Option<i32>,
    /// Listen for gdb on ADDR:PORT (default 127.0.0.1:2345; use
    /// 0.0.0.0:PORT to accept connections from other machines).
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "stdio")]
    listen: Option<String>,
    /// Talk to gdb on stdin and stdout (`target remote | rewind gdbserver
    /// --stdio ...`).
    #[arg(long)]
    stdio: bool,
    /// When gdb detaches or the connection drops: `kill` stops the replay
    /// there (and kills a live program), `detach` lets it replay on to the
    /// end of the recording (a live program runs to its end).
    #[arg(long, value_name = "kill|detach", default_value = "kill", value_parser = ["kill", "detach"])]
    on_disconnect: String,
    /// Keep the recording of PROG in DIR (default: a temporary directory,
    /// removed on exit).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// The program to run live and serve, and its arguments.
    #[arg(last = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

/// How many in-memory snapshots the timeline keeps (debug, gdbserver).
#[derive(Args, Debug)]
struct SnapshotArgs {
    /// At most N in-memory snapshots (forked copies of the replayed
    /// process, sharing unchanged pages) to go back quickly.
    #[arg(long, value_name = "N", default_value = "48")]
    max_snapshots: usize,
    /// At most MIB of memory held by snapshots alone (the pages they no
    /// longer share); older ones are dropped first.
    #[arg(long, value_name = "MIB", default_value = "4096")]
    snapshot_memory: u64,
}

#[derive(Args, Debug)]
struct DebugArgs {
    /// A trace directory written by `rewind record`.
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    /// With --trace of a program that made processes: debug process PID
    /// (its recorded pid; `proc-PID/` in the trace) instead of the
    /// program's own. Its history starts at its first exec, or, if it never
    /// exec'd, where it was made (the tree is replayed up to there once).
    #[arg(long, value_name = "PID")]
    process: Option<i32>,
    /// A checkpoint image (`rewind command --checkpoint`) to look at: its
    /// registers, memory, threads, backtraces and variables. An image has
    /// no history, so nothing runs forward or backward from it.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Keep the recording of PROG in DIR (default: a temporary directory,
    /// removed on exit).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Run the commands in FILE first (repeatable; stops at its first
    /// error, like gdb's -x).
    #[arg(short = 'x', long = "command", value_name = "FILE")]
    scripts: Vec<PathBuf>,
    /// Run one command (repeatable, after -x files; gdb's -ex also works).
    #[arg(long = "ex", value_name = "CMD")]
    commands: Vec<String>,
    /// Exit after the -x and --ex commands instead of reading more.
    #[arg(long)]
    batch: bool,
    #[command(flatten)]
    snapshots: SnapshotArgs,
    /// The program to run live and debug, and its arguments.
    #[arg(last = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Trace directory to create (default ./rewind-trace-<prog>-<pid>).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Checksums to keep at every event: `registers` (always kept) or
    /// `memory` (also all writable memory; slow), for `replay --verify`.
    #[arg(long, value_name = "WHAT", num_args = 0..=1, require_equals = true, default_missing_value = "registers")]
    verify: Option<String>,
    /// Write a durable checkpoint into the trace every S seconds (0: none);
    /// `replay --from` starts from them.
    #[arg(long, value_name = "S", default_value = "5")]
    checkpoint_interval: f64,
    /// Take common syscalls through an in-process buffer instead of ptrace
    /// stops: reads and writes of regular files (and reads of /dev/zero,
    /// /dev/urandom...), lseek, fstat/newfstatat, clock_gettime,
    /// gettimeofday, getpid. Each glibc call site is patched after its
    /// first traced call to jump to code rewind maps at 0x200000000000; the
    /// trace stays exact and replay feeds the results back the same way
    /// (no IO). Much faster for syscall-heavy programs; there are fewer
    /// events to step between in `rewind debug`. On by default (this flag
    /// is accepted for scripts written when it was not).
    #[arg(long, conflicts_with = "no_syscallbuf")]
    syscallbuf: bool,
    /// Trace every nondeterministic syscall with ptrace stops, one event
    /// each, without the in-process buffer (slower for syscall-heavy
    /// programs).
    #[arg(long)]
    no_syscallbuf: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The trace directory written by `rewind record`.
    #[arg(value_name = "TRACE_DIR")]
    trace: PathBuf,
    /// Don't show the program's recorded output.
    #[arg(long, short)]
    quiet: bool,
    /// Compare checksums at every event with the recording's: registers,
    /// or with `=memory` also writable memory (if recorded with it).
    #[arg(long, value_name = "WHAT", num_args = 0..=1, require_equals = true, default_missing_value = "registers")]
    verify: Option<String>,
    /// Start from the trace's last checkpoint at or before event N (the
    /// output shown begins there). Not for a trace of a process tree.
    #[arg(long, value_name = "N")]
    from: Option<u64>,
}

#[derive(Args, Debug)]
struct CoordinatorArgs {
    /// Listen on ADDR:PORT (port 0: any free port, printed at start). Use
    /// 0.0.0.0:PORT to accept sessions from other hosts (they need the
    /// token).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7779")]
    listen: String,
    /// Seconds a session has to answer each barrier; one that does not is
    /// reported and the others are resumed.
    #[arg(long, value_name = "S", default_value = "60")]
    timeout: f64,
}

#[derive(Args, Debug)]
struct LaunchArgs {
    /// Also checkpoint every S seconds (fractions allowed).
    #[arg(long, value_name = "S")]
    interval: Option<f64>,
    /// Directory for images and the control socket.
    #[arg(long, value_name = "D", default_value = ".")]
    ckpt_dir: PathBuf,
    /// Plugins to load, comma-separated: kvm (programs that run virtual
    /// machines through /dev/kvm), tun (programs using tun/tap devices). The
    /// files and pids plugins are always loaded.
    #[arg(long, value_name = "P,..", value_delimiter = ',')]
    plugin: Vec<String>,
    /// Register with the `rewind coordinator` at HOST:PORT and obey it.
    /// The control socket is then D/.rewind-control-<rewind's pid>.sock.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// The coordinator's token (needed unless the coordinator is reached
    /// over loopback); default $REWIND_TOKEN.
    #[arg(long, value_name = "T", requires = "coordinator")]
    token: Option<String>,
    /// Write every image while the program is stopped, instead of from a
    /// copy-on-write copy of its memory while it runs on: longer pauses, no
    /// extra memory.
    #[arg(long)]
    no_forked_checkpoints: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

#[derive(Args, Debug)]
struct CommandArgs {
    /// Directory of the session to talk to (where its control socket is).
    #[arg(long, value_name = "D", default_value = ".")]
    ckpt_dir: PathBuf,
    /// Write a checkpoint image now; prints its path once it is durable (the
    /// program runs on meanwhile), and on stderr how long the program was
    /// stopped and when the image was durable.
    #[arg(long)]
    checkpoint: bool,
    /// Kill the program (with --checkpoint: right after the image is written,
    /// the program stopped until then: it never runs on).
    #[arg(long)]
    kill: bool,
    /// Print the program, its pids and its images.
    #[arg(long)]
    status: bool,
    /// Stop supervising: the program runs on without rewind (launched
    /// programs only).
    #[arg(long)]
    quit: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
    /// Talk to the `rewind coordinator` at HOST:PORT: the command applies
    /// to every session registered there.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// The coordinator's token (needed unless the coordinator is reached
    /// over loopback); default $REWIND_TOKEN.
    #[arg(long, value_name = "T", requires = "coordinator")]
    token: Option<String>,
    /// Run N no-op barriers across every session of the coordinator and
    /// print their round-trip times.
    #[arg(long, value_name = "N", requires = "coordinator")]
    ping: Option<u32>,
}

#[derive(Args, Debug)]
struct RestartArgs {
    /// Directory for later images and the control socket.
    #[arg(long, value_name = "D", default_value = ".")]
    ckpt_dir: PathBuf,
    /// Set an environment variable in the restored program (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Checkpoint every S seconds after the restart.
    #[arg(long, value_name = "S")]
    interval: Option<f64>,
    /// Plugins to load, comma-separated (restart loads the ones the image
    /// names by itself).
    #[arg(long, value_name = "P,..", value_delimiter = ',')]
    plugin: Vec<String>,
    /// Register with the `rewind coordinator` at HOST:PORT and obey it.
    /// The control socket is then D/.rewind-control-<rewind's pid>.sock.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// The coordinator's token (needed unless the coordinator is reached
    /// over loopback); default $REWIND_TOKEN.
    #[arg(long, value_name = "T", requires = "coordinator")]
    token: Option<String>,
    /// Write the images of later checkpoints while the program is stopped,
    /// instead of from a copy-on-write copy of its memory while it runs on.
    #[arg(long)]
    no_forked_checkpoints: bool,
    /// The image(s) to restart (ckpt_<prog>_<pid>.rwd). Several images are
    /// the processes of one tree, as the checkpoint of a program that forked
    /// printed them (any order: the root is found by parent links): the
    /// tree is rebuilt with its parent/child links, process groups and
    /// sessions. With --coordinator, the images are split into process
    /// trees, each restarted as a session of its own (sharing this
    /// terminal) that registers with the coordinator; a program connected
    /// to other programs of the coordinator waits, stopped, until they are
    /// restarted too (on any host: their connections are made again between
    /// the new hosts' addresses). rewind exits when all have ended, with the
    /// first nonzero status.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    // gdb users type -ex; clap spells it --ex.
    let args = std::env::args_os().map(|a| if a == "-ex" { "--ex".into() } else { a });
    let cli = Cli::parse_from(args);
    rewind_plugin_kvm::register();
    rewind_plugin_tun::register();
    cli::init_logging(cli.verbose);
    let result = match cli.command {
        Command::Launch(a) => cli::launch(cli::LaunchRequest {
            argv: a.argv,
            ckpt_dir: a.ckpt_dir,
            interval: a.interval,
            plugins: a.plugin,
            coordinator: a.coordinator,
            token: a.token,
            write_stopped: a.no_forked_checkpoints,
        }),
        Command::Command(a) => cli::command(cli::CommandRequest {
            coordinator: a.coordinator,
            token: a.token,
            ping: a.ping,
            ckpt_dir: a.ckpt_dir,
            checkpoint: a.checkpoint,
            kill: a.kill,
            status: a.status,
            quit: a.quit,
            json: a.json,
        }),
        Command::Restart(a) => cli::restart(cli::RestartRequest {
            images: a.images,
            ckpt_dir: a.ckpt_dir,
            env: a.env,
            interval: a.interval,
            plugins: a.plugin,
            coordinator: a.coordinator,
            token: a.token,
            write_stopped: a.no_forked_checkpoints,
        }),
        Command::Coordinator(a) => rewind_debugger::coordinator_cli::coordinator(
            rewind_debugger::coordinator_cli::CoordinatorRequest {
                listen: a.listen,
                timeout: a.timeout,
            },
        ),
        Command::Record(a) => cli::record(cli::RecordRequest {
            argv: a.argv,
            output: a.output,
            verify: a.verify,
            checkpoint_interval: a.checkpoint_interval,
            syscallbuf: a.syscallbuf || !a.no_syscallbuf,
        }),
        Command::Replay(a) => cli::replay(cli::ReplayRequest {
            trace: a.trace,
            quiet: a.quiet,
            verify: a.verify,
            from: a.from,
        }),
        Command::Debug(a) => {
            rewind_debugger::debug_cli::debug(rewind_debugger::debug_cli::DebugRequest {
                trace: a.trace,
                process: a.process,
                image: a.image,
                argv: a.argv,
                output: a.output,
                scripts: a.scripts,
                commands: a.commands,
                batch: a.batch,
                max_snapshots: a.snapshots.max_snapshots,
                snapshot_memory: a.snapshots.snapshot_memory,
            })
        }
        Command::Bisect(a) => {
            use rewind_debugger::repl::Search;
            let search = match (a.until, a.changes, a.output_re, a.check) {
                (Some(e), ..) => Search::Until(e),
                (_, Some(e), ..) => Search::Changes(e),
                (_, _, Some(r), _) => Search::Output(r),
                (_, _, _, Some(c)) => Search::Check(c),
                _ => Search::Until(String::new()),
            };
            rewind_debugger::bisect_cli::bisect(rewind_debugger::bisect_cli::BisectRequest {
                trace: a.trace,
                process: a.process,
                argv: a.argv,
                output: a.keep_trace,
                search,
                json: a.json,
                max_steps: a.max_steps,
                check_monotone: !a.no_check_monotone,
                max_snapshots: a.max_snapshots,
            })
        }
        Command::Gdbserver(a) => {
            use rewind_debugger::gdbserver::{self, OnDisconnect};
            gdbserver::gdbserver(gdbserver::GdbserverRequest {
                trace: a.trace,
                process: a.process,
                argv: a.argv,
                output: a.output,
                listen: a.listen,
                stdio: a.stdio,
                on_disconnect: if a.on_disconnect == "detach" {
                    OnDisconnect::Detach
                } else {
                    OnDisconnect::Kill
                },
                max_snapshots: a.snapshots.max_snapshots,
                snapshot_memory: a.snapshots.snapshot_memory,
            })
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rewind: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
