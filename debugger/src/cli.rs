//! What each subcommand does, callable from tests as well as from `main`.

use std::path::PathBuf;
use std::time::Duration;

use rewind_ckpt::control::{self, Request};
use rewind_ckpt::coordinator::{self, link::CoordinatorLink};
use rewind_ckpt::restore::RestartOptions;
use rewind_ckpt::session::{Session, SessionOptions};

/// A failure of a subcommand: one line for the user and an exit code
/// (1 for target or user errors, 2 for usage).
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub usage: bool,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        if self.usage {
            2
        } else {
            1
        }
    }
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            usage: true,
        }
    }
}

/// An error that is not a usage error (exit code 1).
pub(crate) fn err(message: impl Into<String>) -> CliError {
    CliError {
        message: message.into(),
        usage: false,
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<rewind_ckpt::Error> for CliError {
    fn from(e: rewind_ckpt::Error) -> CliError {
        CliError {
            message: e.to_string(),
            usage: false,
        }
    }
}

pub type CliResult = Result<u8, CliError>;

/// A spinner on stderr, only when stderr is a terminal.
/// A duration in milliseconds as people read it: `8.2 ms`, `1.42 s`.
pub(crate) fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

pub(crate) fn spinner(template: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REWIND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

fn interval(s: Option<f64>) -> Result<Option<Duration>, CliError> {
    match s {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(CliError::usage(format!(
            "--interval must be a positive number of seconds, not {v}"
        ))),
    }
}

fn check_dir(dir: &std::path::Path) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(err(format!(
            "checkpoint directory {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

fn exit_status(code: i32) -> u8 {
    code.clamp(0, 255) as u8
}

pub struct LaunchRequest {
    pub argv: Vec<String>,
    pub ckpt_dir: PathBuf,
    pub interval: Option<f64>,
    pub plugins: Vec<String>,
    /// `HOST:PORT` of a `rewind coordinator` to register with.
    pub coordinator: Option<String>,
    pub token: Option<String>,
    /// `--no-forked-checkpoints`.
    pub write_stopped: bool,
}

/// Connects to the coordinator, if one is given, before anything starts; and
/// the control socket such a session uses: its own, named after this
/// process, since the sessions of one coordinator often share a directory.
fn coordinator_link(
    addr: &Option<String>,
    token: Option<String>,
    ckpt_dir: &std::path::Path,
) -> Result<(Option<CoordinatorLink>, Option<PathBuf>), CliError> {
    let Some(addr) = addr else {
        return Ok((None, None));
    };
    let link = CoordinatorLink::connect(addr, coordinator::token_from(token).as_deref())?;
    let socket = ckpt_dir.join(format!(".rewind-control-{}.sock", std::process::id()));
    Ok((Some(link), Some(socket)))
}

/// Runs the session to its end, under the coordinator if there is one.
fn run_session(mut session: Session, link: Option<CoordinatorLink>) -> CliResult {
    if let Some(link) = link {
        session.join_coordinator(link)?;
    }
    let code = session.run()?;
    session.leave_coordinator(code);
    Ok(exit_status(code))
}

pub fn launch(req: LaunchRequest) -> CliResult {
    check_dir(&req.ckpt_dir)?;
    let (link, control_socket) = coordinator_link(&req.coordinator, req.token, &req.ckpt_dir)?;
    let opts = SessionOptions {
        ckpt_dir: req.ckpt_dir,
        interval: interval(req.interval)?,
        plugins: req.plugins,
        control_socket,
        write_stopped: req.write_stopped,
    };
    rewind_ckpt::sys::process::ignore_terminal_signals();
    let session = Session::launch(&req.argv, opts)?;
    tracing::info!("launched {} as pid {}", req.argv[0], session.tracee.pid);
    run_session(session, link)
}

pub struct CommandRequest {
    /// Through a coordinator (`HOST:PORT`) instead of one session's socket.
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub ping: Option<u32>,
    pub ckpt_dir: PathBuf,
    pub checkpoint: bool,
    pub kill: bool,
    pub status: bool,
    pub quit: bool,
    pub json: bool,
}

pub fn command(req: CommandRequest) -> CliResult {
    if let Some(addr) = req.coordinator {
        return crate::coordinator_cli::command(crate::coordinator_cli::CoordinatedCommand {
            coordinator: addr,
            token: req.token,
            checkpoint: req.checkpoint,
            kill: req.kill,
            status: req.status,
            quit: req.quit,
            ping: req.ping,
            json: req.json,
        });
    }
    if req.ping.is_some() {
        return Err(CliError::usage(
            "--ping measures the barriers of a coordinator: give --coordinator HOST:PORT",
        ));
    }
    let request = if req.checkpoint {
        Request::Checkpoint { kill: req.kill }
    } else if req.status {
        Request::Status
    } else if req.kill {
        Request::Kill
    } else if req.quit {
        Request::Quit
    } else {
        return Err(CliError::usage(
            "say what to do: --checkpoint, --status, --kill or --quit",
        ));
    };
    let path = control::socket_path(&req.ckpt_dir);
    let bar = match request {
        Request::Checkpoint { .. } => spinner("{spinner} checkpointing... {elapsed}"),
        _ => None,
    };
    let resp = control::request(&path, &request);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let resp = resp?;
    if req.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&resp).unwrap_or_default()
        );
        return Ok(if resp.ok { 0 } else { 1 });
    }
    for w in &resp.warnings {
        eprintln!("rewind: warning: {w}");
    }
    if !resp.ok {
        return Err(err(resp
            .error
            .unwrap_or_else(|| "the session refused".into())));
    }
    if let Some(image) = &resp.image {
        println!("{image}");
    }
    // A process tree: one image per process, the root's first.
    for image in &resp.other_images {
        println!("{image}");
    }
    if let (Some(paused), Some(durable)) = (resp.paused_ms, resp.durable_ms) {
        eprintln!(
            "rewind: the program was stopped {}, its image{} durable after {}",
            millis(paused),
            if resp.other_images.is_empty() {
                " was"
            } else {
                "s were"
            },
            millis(durable)
        );
    }
    if let Some(s) = &resp.status {
        println!(
            "program:  {} (pid {}{})",
            s.program,
            s.pid,
            if s.pid != s.real_pid {
                format!(", real pid {}", s.real_pid)
            } else {
                String::new()
            }
        );
        println!("argv:     {}", s.argv.join(" "));
        println!("threads:  {}", s.threads.len());
        if s.processes.len() > 1 {
            println!("processes: {} ({:?})", s.processes.len(), s.processes);
        }
        println!("ckpt dir: {}", s.ckpt_dir);
        if s.restarted {
            println!("restarted from an image");
        }
        match (&s.last_checkpoint_ms, &s.last_durable_ms) {
            (Some(ms), Some(durable)) => println!(
                "last checkpoint stopped the program {ms:.1} ms, its images durable after {durable:.1} ms"
            ),
            (Some(ms), None) => println!("last checkpoint stopped the program {ms:.1} ms"),
            _ => println!("no checkpoint yet"),
        }
        if s.writing {
            println!("a checkpoint's images are being written");
        }
        for i in &s.images {
            println!("image:    {i}");
        }
    }
    Ok(0)
}

pub struct RestartRequest {
    pub images: Vec<PathBuf>,
    pub ckpt_dir: PathBuf,
    pub env: Vec<String>,
    pub interval: Option<f64>,
    pub plugins: Vec<String>,
    /// `HOST:PORT` of a `rewind coordinator` to register with.
    pub coordinator: Option<String>,
    pub token: Option<String>,
    /// `--no-forked-checkpoints`.
    pub write_stopped: bool,
}

pub fn restart(mut req: RestartRequest) -> CliResult {
    let several = req.images.len() > 1;
    check_dir(&req.ckpt_dir)?;
    let mut env = Vec::new();
    for kv in &req.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => return Err(CliError::usage(format!("--env wants K=V, not {kv:?}"))),
        }
    }
    if let (true, Some(addr)) = (several, &req.coordinator) {
        interval(req.interval)?;
        // Every image must be there, and the coordinator must accept us,
        // before anything starts.
        if let Some(missing) = req.images.iter().find(|i| !i.is_file()) {
            return Err(err(format!("{}: no such image", missing.display())));
        }
        // Several sessions' images: one child session per process tree.
        let trees = rewind_ckpt::tree::group(&req.images)?;
        if trees.len() > 1 {
            let token = coordinator::token_from(req.token.clone());
            drop(CoordinatorLink::connect(addr, token.as_deref())?);
            return crate::coordinator_cli::restart_all(&req, trees, addr, token.as_deref());
        }
    }
    // Without a coordinator, several images are one process tree (the
    // root first, as `rewind command --checkpoint` prints them; in any
    // order when their parent links make one tree, as a glob gives them).
    if req.images.is_empty() {
        return Err(CliError::usage("give the image to restart"));
    }
    if let Some(missing) = req.images.iter().find(|i| !i.is_file()) {
        if several {
            return Err(err(format!("{}: no such image", missing.display())));
        }
    }
    if several {
        if let [tree] = rewind_ckpt::tree::group(&req.images)?.as_slice() {
            req.images = tree.clone();
        }
    }
    let (link, control_socket) = coordinator_link(&req.coordinator, req.token, &req.ckpt_dir)?;
    let opts = SessionOptions {
        ckpt_dir: req.ckpt_dir,
        interval: interval(req.interval)?,
        plugins: req.plugins,
        control_socket,
        write_stopped: req.write_stopped,
    };
    rewind_ckpt::sys::process::ignore_terminal_signals();
    let bar = spinner("{spinner} restoring {msg} {elapsed}");
    let report = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.set_message(indicatif::HumanBytes(bytes).to_string());
        }
    };
    let restored = Session::restart(
        &req.images,
        opts,
        &RestartOptions {
            env,
            progress: Some(&report),
            ..Default::default()
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (session, warnings) = restored?;
    for w in warnings {
        eprintln!("rewind: warning: {w}");
    }
    run_session(session, link)
}

impl From<rewind_rr::Error> for CliError {
    fn from(e: rewind_rr::Error) -> CliError {
        CliError {
            message: e.to_string(),
            usage: false,
        }
    }
}

pub struct RecordRequest {
    pub argv: Vec<String>,
    pub output: Option<PathBuf>,
    pub verify: Option<String>,
    pub checkpoint_interval: f64,
    /// Use the in-process syscall buffer (`record --no-syscallbuf` off).
    pub syscallbuf: bool,
}

fn verify_memory(v: &Option<String>) -> Result<bool, CliError> {
    match v.as_deref() {
        None | Some("registers") => Ok(false),
        Some("memory") => Ok(true),
        Some(other) => Err(CliError::usage(format!(
            "--verify takes `registers` or `memory`, not {other:?}"
        ))),
    }
}

pub fn record(req: RecordRequest) -> CliResult {
    let verify_memory = verify_memory(&req.verify)?;
    let dir = match req.output {
        Some(d) => d,
        None => {
            let prog = std::path::Path::new(&req.argv[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "prog".into());
            PathBuf::from(format!("rewind-trace-{prog}-{}", std::process::id()))
        }
    };
    rewind_ckpt::sys::process::ignore_terminal_signals();
    // 0 turns periodic checkpoints off.
    let checkpoint_interval = if req.checkpoint_interval == 0.0 {
        None
    } else {
        interval(Some(req.checkpoint_interval))?
    };
    let rec = rewind_rr::recorder::record(
        &req.argv,
        &rewind_rr::recorder::RecordOptions {
            dir,
            verify_memory,
            checkpoint_interval,
            syscallbuf: req.syscallbuf,
        },
    )?;
    eprintln!(
        "rewind: recorded {} events ({:.1} MiB) in {}",
        rec.events,
        rec.bytes as f64 / (1u64 << 20) as f64,
        rec.dir.display()
    );
    Ok(exit_status(rec.exit_code))
}

pub struct ReplayRequest {
    pub trace: PathBuf,
    pub quiet: bool,
    pub verify: Option<String>,
    pub from: Option<u64>,
}

pub fn replay(req: ReplayRequest) -> CliResult {
    let verify_memory = verify_memory(&req.verify)?;
    let opts = rewind_rr::replayer::ReplayOptions {
        dir: req.trace,
        quiet: req.quiet,
        verify: req.verify.is_some(),
        verify_memory,
        from: req.from,
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let done = rewind_rr::replayer::replay(&opts, &mut out, &mut err)?;
    tracing::info!("replayed {} events", done.events);
    Ok(exit_status(done.exit_code))
}
