//! Harness for rewind's end-to-end tests.
//!
//! The tests drive the real `rewind` binary the way a user does (`rewind launch`, `rewind command`,
//! `rewind restart`) on the C fixtures of `tests/targets/` (built by `build.rs`) and on real programs.
//! The oracle is DESIGN §9 (a): what a program prints before a checkpoint, followed by what its
//! restarted copy prints, is exactly what an uninterrupted run prints, and both parts are non-empty
//! (the checkpoint really landed mid-run).
//!
//! Everything here fails with a message that says what was running, what it printed and what rewind
//! said on stderr, and nothing waits forever: every wait has a deadline, after which the process group
//! is killed. A [`Running`] process is killed when dropped, so a failing test leaves nothing behind.
//! Each test works in its own [`Scratch`] directory (kept for diagnosis when the test fails), so tests
//! running concurrently never share a checkpoint directory.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a program may take to print the lines a test waits for.
pub const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole run may take (a restart of a 1 GiB image included).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `rewind command` may take (writing a 1 GiB image included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a launch may take to go away once `rewind command --checkpoint --kill` has returned.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(5);
/// Longest piece of a program's output quoted in a failure message.
const QUOTE_LIMIT: usize = 4000;

// ---------------------------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------------------------

/// The `rewind` binary under test: `$REWIND_BIN` if set, else the one cargo built next to this test
/// executable (which lives in `target/<profile>/deps/`).
pub fn rewind_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("REWIND_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "REWIND_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("cannot find the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()));
    let bin = profile_dir.join("rewind");
    assert!(
        bin.is_file(),
        "no rewind binary at {}: build it first: cargo build -p rewind-debugger (or set REWIND_BIN)",
        bin.display()
    );
    bin
}

/// The compiled fixture `tests/targets/<name>.c`.
pub fn target(name: &str) -> PathBuf {
    let path = Path::new(env!("REWIND_TARGETS_DIR")).join(name);
    assert!(
        path.is_file(),
        "no fixture {} (is there a tests/targets/{name}.c?)",
        path.display()
    );
    path
}

/// A command running the fixture `tests/targets/<name>.c`; add arguments, environment or a working
/// directory as to any [`Command`] (but not `env_clear`, which cannot be read back).
pub fn fixture(name: &str) -> Command {
    Command::new(target(name))
}

/// A command running the system's python3 (found on PATH, so the path is absolute).
pub fn python3() -> Command {
    let path = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("python3"))
                .find(|p| p.is_file())
        })
        .expect("python3 not found on PATH (scripts/setup.sh installs it)");
    Command::new(path)
}

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// A directory of one's own for one test, under the system temp dir. Removed when the test passes;
/// kept (and its path printed) when it fails, minus any file over 256 MiB.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh, empty directory whose name starts with the test's name.
    pub fn new(test: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rewind-test-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory (nothing is created).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// A subdirectory, created if needed.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            prune_big_files(&self.path);
            eprintln!(
                "test scratch directory kept for diagnosis: {}",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn prune_big_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => prune_big_files(&path),
            Ok(meta) if meta.len() > 256 << 20 && fs::remove_file(&path).is_ok() => {
                let mib = meta.len() >> 20;
                eprintln!(
                    "removed {} ({mib} MiB) from the kept scratch directory",
                    path.display()
                );
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running processes
// ---------------------------------------------------------------------------------------------

/// Where a process's stdout goes: a file, created or emptied (`> path`) or appended to (`>> path`,
/// opened with O_APPEND, keeping what is there). Its stderr goes to `<path>.stderr`.
#[derive(Clone, Debug)]
pub struct Redirect {
    path: PathBuf,
    append: bool,
}

impl Redirect {
    /// Like the shell's `> path`.
    pub fn to(path: impl Into<PathBuf>) -> Redirect {
        Redirect {
            path: path.into(),
            append: false,
        }
    }

    /// Like the shell's `>> path`: the file keeps its content and the fd has O_APPEND.
    pub fn append_to(path: impl Into<PathBuf>) -> Redirect {
        Redirect {
            path: path.into(),
            append: true,
        }
    }

    fn stderr_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".stderr");
        PathBuf::from(name)
    }
}

/// What a test waits for in a program's output before it checkpoints.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// At least this many complete lines.
    Lines(usize),
    /// A complete line containing this text.
    LineContaining(&'static str),
}

impl Wait {
    fn satisfied_by(self, output: &str) -> bool {
        let complete = &output[..output.rfind('\n').map_or(0, |i| i + 1)];
        match self {
            Wait::Lines(n) => complete.lines().count() >= n,
            Wait::LineContaining(text) => complete.lines().any(|line| line.contains(text)),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Lines(n) => write!(f, "{n} lines of output"),
            Wait::LineContaining(text) => write!(f, "a line containing {text:?}"),
        }
    }
}

/// A `rewind launch` or `rewind restart` running in the background, in its own process group, with
/// stdout and stderr going to files. Killed (with its whole process group) when dropped unfinished.
pub struct Running {
    what: String,
    child: Option<Child>,
    ckpt_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// Bytes the stdout file held before this process started (append mode).
    stdout_start: usize,
}

/// `rewind launch --ckpt-dir CKPT_DIR -- PROGRAM ARGS...`, with the program, arguments, environment
/// changes and working directory taken from `program`.
pub fn launch(program: &Command, ckpt_dir: &Path, stdout: Redirect) -> Running {
    launch_with(&[], program, ckpt_dir, stdout)
}

/// [`launch`] with flags before `--` (`--plugin tun`, `--coordinator ADDR`...).
pub fn launch_with(
    flags: &[&str],
    program: &Command,
    ckpt_dir: &Path,
    stdout: Redirect,
) -> Running {
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("launch")
        .arg("--ckpt-dir")
        .arg(ckpt_dir)
        .args(flags)
        .arg("--");
    copy_program(program, &mut cmd);
    spawn(cmd, ckpt_dir, stdout)
}

/// `rewind restart --ckpt-dir CKPT_DIR [--env K=V]... IMAGE`, run from CKPT_DIR.
pub fn restart(image: &Path, ckpt_dir: &Path, env: &[(&str, &str)], stdout: Redirect) -> Running {
    let mut cmd = restart_command(ckpt_dir, &[]);
    for (key, value) in env {
        cmd.arg("--env").arg(format!("{key}={value}"));
    }
    cmd.arg(image);
    spawn(cmd, ckpt_dir, stdout)
}

/// `rewind restart --ckpt-dir CKPT_DIR IMAGES...` of a process tree (the root's image first), run
/// from CKPT_DIR.
pub fn restart_tree(images: &[PathBuf], ckpt_dir: &Path, stdout: Redirect) -> Running {
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("restart").arg("--ckpt-dir").arg(ckpt_dir);
    cmd.args(images).current_dir(ckpt_dir);
    spawn(cmd, ckpt_dir, stdout)
}

/// Any `rewind ARGS...` in the background from `dir`, like [`launch`]: its own process group, stdin
/// empty, stdout to a file and stderr next to it, killed with its group when dropped.
/// [`Running::ckpt_dir`] returns `dir`.
pub fn rewind_background<I>(args: I, dir: &Path, stdout: Redirect) -> Running
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    let mut cmd = Command::new(rewind_bin());
    cmd.args(args).current_dir(dir);
    spawn(cmd, dir, stdout)
}

/// [`restart`] with flags (such as `--plugin tun`) instead of environment changes.
pub fn restart_with(image: &Path, ckpt_dir: &Path, flags: &[&str], stdout: Redirect) -> Running {
    let mut cmd = restart_command(ckpt_dir, flags);
    cmd.arg(image);
    spawn(cmd, ckpt_dir, stdout)
}

/// `rewind restart --ckpt-dir CKPT_DIR FLAGS...` run from CKPT_DIR, the image still to be added.
pub fn restart_command(ckpt_dir: &Path, flags: &[&str]) -> Command {
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("restart")
        .arg("--ckpt-dir")
        .arg(ckpt_dir)
        .args(flags)
        .current_dir(ckpt_dir);
    cmd
}

/// Any command (rewind or not) in the background the way [`launch`] runs rewind: in its own
/// process group, stdin empty, stdout to `stdout`, stderr next to it; killed when dropped
/// unfinished. `dir` is created (and is what [`Running::command`] talks to).
pub fn background(cmd: Command, dir: &Path, stdout: Redirect) -> Running {
    spawn(cmd, dir, stdout)
}

/// Runs any command to its end (at most [`COMMAND_TIMEOUT`]) with stdin empty and its output
/// captured.
pub fn run_command(cmd: Command) -> Finished {
    run_to_end(cmd, COMMAND_TIMEOUT)
}

fn spawn(mut cmd: Command, ckpt_dir: &Path, stdout: Redirect) -> Running {
    let what = describe(&cmd);
    fs::create_dir_all(ckpt_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", ckpt_dir.display()));
    let out = if stdout.append {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdout.path)
    } else {
        File::create(&stdout.path)
    }
    .unwrap_or_else(|e| panic!("cannot open {}: {e}", stdout.path.display()));
    let stdout_start = out.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let stderr_path = stdout.stderr_path();
    let err = File::create(&stderr_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    Running {
        what,
        child: Some(child),
        ckpt_dir: ckpt_dir.to_owned(),
        stdout_path: stdout.path,
        stderr_path,
        stdout_start,
    }
}

impl Running {
    /// What the process printed on stdout so far (not counting what the file held before).
    pub fn output(&self) -> String {
        let all = read_lossy(&self.stdout_path);
        all.get(self.stdout_start..).unwrap_or_default().to_owned()
    }

    /// What the process (rewind and the program) printed on stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The checkpoint directory this process serves.
    pub fn ckpt_dir(&self) -> &Path {
        &self.ckpt_dir
    }

    /// Waits until the output shows `wait`; fails if the process exits first or on timeout.
    #[track_caller]
    pub fn wait_for(&mut self, wait: Wait) {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            if wait.satisfied_by(&self.output()) {
                return;
            }
            if let Some(status) = self.try_wait() {
                // It may have printed the awaited line just before exiting: too late to checkpoint.
                panic!(
                    "{} exited ({}) before printing {wait}\n{}",
                    self.what,
                    show_status(status),
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} did not print {wait} within {OUTPUT_TIMEOUT:?}\n{}",
                    self.what,
                    self.diagnostics()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// `rewind command --checkpoint`: writes an image and lets the program go on; returns the image.
    #[track_caller]
    pub fn checkpoint(&self) -> PathBuf {
        self.checkpoint_with(&["--checkpoint"])
    }

    /// `rewind command --checkpoint --kill`: writes an image and kills the program before it runs any
    /// further; returns the image.
    #[track_caller]
    pub fn checkpoint_and_kill(&self) -> PathBuf {
        self.checkpoint_with(&["--checkpoint", "--kill"])
    }

    #[track_caller]
    fn checkpoint_with(&self, flags: &[&str]) -> PathBuf {
        self.checkpoint_tree_with(flags).remove(0)
    }

    /// `rewind command --checkpoint --kill` of a program that may have forked: every image it
    /// wrote, one per process, the root's first.
    #[track_caller]
    pub fn checkpoint_tree_and_kill(&self) -> Vec<PathBuf> {
        self.checkpoint_tree_with(&["--checkpoint", "--kill"])
    }

    /// `rewind command FLAGS...` (a checkpoint) of a program that may have forked: every image it
    /// wrote, one per process, the root's first.
    #[track_caller]
    pub fn checkpoint_tree_with(&self, flags: &[&str]) -> Vec<PathBuf> {
        let done = self.command(flags);
        if !done.status.success() || done.stdout.trim().is_empty() {
            panic!(
                "{}\nwhile this was running:\n{}\n{}",
                done.describe(),
                self.what,
                self.diagnostics()
            );
        }
        let mut images = Vec::new();
        for printed in done.stdout.trim().lines() {
            let image = self.ckpt_dir.join(printed.trim()); // an absolute path replaces the directory
            check_image_name(&image, &self.ckpt_dir, &done);
            images.push(image);
        }
        images
    }

    /// `rewind command --status --json`; returns what it printed (it must succeed).
    #[track_caller]
    pub fn status_json(&self) -> String {
        let done = self.command(&["--status", "--json"]);
        if !done.status.success() {
            panic!(
                "{}\nwhile this was running:\n{}\n{}",
                done.describe(),
                self.what,
                self.diagnostics()
            );
        }
        done.stdout
    }

    /// `rewind command --ckpt-dir <this one's> FLAGS...`, whatever its outcome.
    pub fn command(&self, flags: &[&str]) -> Finished {
        let mut args: Vec<&OsStr> = vec![
            "command".as_ref(),
            "--ckpt-dir".as_ref(),
            self.ckpt_dir.as_os_str(),
        ];
        args.extend(flags.iter().map(OsStr::new));
        rewind_in(&self.ckpt_dir, args)
    }

    /// Waits for the process to exit (at most [`RUN_TIMEOUT`]).
    #[track_caller]
    pub fn wait(self) -> Finished {
        self.wait_timeout(RUN_TIMEOUT)
    }

    /// Waits for the process to exit; kills it and fails after `timeout`.
    #[track_caller]
    pub fn wait_timeout(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?}; killed it\n{}",
                    self.what,
                    self.diagnostics()
                );
            }
            thread::sleep(POLL);
        };
        Finished {
            what: self.what.clone(),
            status,
            stdout: self.output(),
            stderr: self.stderr(),
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("waiting for {}: {e}", self.what),
        }
    }

    /// Kills the whole process group (the tracer and anything it started in it) and reaps the child.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child is not reaped yet, so its pid (= its group id) cannot have been reused.
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- its stdout ({}):\n{}\n--- its stderr ({}):\n{}",
            self.stdout_path.display(),
            quote(&self.output()),
            self.stderr_path.display(),
            quote(&self.stderr())
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process that ran to its end.
/// A finished command, its status and its output, for a failure message.
fn describe_run(what: &str, status: ExitStatus, stdout: &str, stderr: &str) -> String {
    format!(
        "{what} exited with {}\n--- stdout:\n{}\n--- stderr:\n{}",
        show_status(status),
        quote(stdout),
        quote(stderr)
    )
}

#[derive(Debug)]
pub struct Finished {
    /// The command line, for messages.
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Everything about the run, for a failure message.
    pub fn describe(&self) -> String {
        describe_run(&self.what, self.status, &self.stdout, &self.stderr)
    }

    /// Fails unless the process exited with status 0 and did not panic.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success() && !self.stderr.contains("panicked"),
            "expected success:\n{}",
            self.describe()
        );
    }
}

/// Runs `rewind ARGS...` to completion (at most [`COMMAND_TIMEOUT`]) from `dir`, with stdin empty.
/// Give a directory of the test's own: a command without `--ckpt-dir` uses it as the default.
pub fn rewind_in<I>(dir: &Path, args: I) -> Finished
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    let mut cmd = Command::new(rewind_bin());
    cmd.args(args).current_dir(dir);
    run_to_end(cmd, COMMAND_TIMEOUT)
}

/// Runs a command with stdin empty and stdout/stderr captured; kills its process group and fails
/// after `timeout`.
fn run_to_end(mut cmd: Command, timeout: Duration) -> Finished {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() > deadline => {
                // SAFETY: kill(2) on the unreaped child's own process group; no memory is involved.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Finished {
            what,
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {timeout:?}; killed it\n--- stdout:\n{}\n--- stderr:\n{}",
            quote(&stdout),
            quote(&stderr)
        ),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

/// Runs `program` natively (no rewind) to its end, with [`RUN_TIMEOUT`]; it must exit 0.
#[track_caller]
pub fn run_uninterrupted(program: &Command) -> Output {
    let mut cmd = Command::new(program.get_program());
    cmd.args(program.get_args());
    copy_environment(program, &mut cmd);
    let done = run_to_end(cmd, RUN_TIMEOUT);
    assert!(
        done.status.success(),
        "the uninterrupted run failed:\n{}",
        done.describe()
    );
    Output {
        status: done.status,
        stdout: done.stdout.into_bytes(),
        stderr: done.stderr.into_bytes(),
    }
}

/// One checkpoint, kill and restart: what the program printed before and after, and the image.
#[derive(Debug)]
pub struct Interrupted {
    /// Printed under `rewind launch`, up to the checkpoint.
    pub before: String,
    /// Printed under `rewind restart`, from the checkpoint on.
    pub after: String,
    pub image: PathBuf,
    /// The restart, which ran to its end.
    pub restarted: Finished,
}

impl Interrupted {
    /// The oracle: `before + after` is the uninterrupted output, both parts are non-empty, and the
    /// restarted program ends with the same status, without a panic.
    #[track_caller]
    pub fn assert_matches(&self, uninterrupted: &Output) {
        assert_pieces_match(uninterrupted, &[&self.before, &self.after], &self.restarted);
    }
}

/// `rewind launch` with stdout to a file, wait for `wait`, `rewind command --checkpoint --kill`,
/// wait for the launch to go away, then `rewind restart IMAGE` with stdout to a second file, to its
/// end. Uses `scratch/ckpt-0` and `scratch/ckpt-1` as checkpoint directories.
#[track_caller]
pub fn checkpoint_kill_restart(scratch: &Scratch, program: &Command, wait: Wait) -> Interrupted {
    let mut chain = checkpoint_chain(scratch, program, &[wait]);
    let after = chain.outputs.pop().expect("two outputs");
    let before = chain.outputs.pop().expect("two outputs");
    Interrupted {
        before,
        after,
        image: chain.images.remove(0),
        restarted: chain.last,
    }
}

/// A chain of checkpoint → kill → restart, once per entry of `waits`: the launch waits for
/// `waits[0]` and is checkpointed and killed, its image restarted; that restart waits for
/// `waits[1]` and is checkpointed and killed, and so on; the last restart runs to its end.
/// Stage `i` uses checkpoint directory `scratch/ckpt-<i>` and stdout file `scratch/stage-<i>.out`.
#[derive(Debug)]
pub struct Chain {
    /// What each stage printed: the launch, then every restart.
    pub outputs: Vec<String>,
    /// The image each checkpoint wrote, in order.
    pub images: Vec<PathBuf>,
    /// The last restart, which ran to its end.
    pub last: Finished,
}

impl Chain {
    /// The oracle over every stage: the outputs, concatenated, are the uninterrupted output, each is
    /// non-empty, and the last restart ends with the same status, without a panic.
    #[track_caller]
    pub fn assert_matches(&self, uninterrupted: &Output) {
        let pieces: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
        assert_pieces_match(uninterrupted, &pieces, &self.last);
    }
}

/// See [`Chain`].
#[track_caller]
pub fn checkpoint_chain(scratch: &Scratch, program: &Command, waits: &[Wait]) -> Chain {
    checkpoint_chain_with(&[], scratch, program, waits)
}

/// [`checkpoint_chain`] with extra flags for `rewind launch`.
#[track_caller]
pub fn checkpoint_chain_with(
    flags: &[&str],
    scratch: &Scratch,
    program: &Command,
    waits: &[Wait],
) -> Chain {
    let stage_out = |i: usize| Redirect::to(scratch.join(format!("stage-{i}.out")));
    let mut running = launch_with(flags, program, &scratch.dir("ckpt-0"), stage_out(0));
    let mut outputs = Vec::new();
    let mut images = Vec::new();
    for (i, &wait) in waits.iter().enumerate() {
        running.wait_for(wait);
        // One image per process when the program forked: all are restarted together.
        let tree = running.checkpoint_tree_and_kill();
        let killed = running.wait_timeout(KILL_TIMEOUT);
        assert!(!killed.stderr.contains("panicked"), "{}", killed.describe());
        outputs.push(killed.stdout);
        running = restart_tree(
            &tree,
            &scratch.dir(&format!("ckpt-{}", i + 1)),
            stage_out(i + 1),
        );
        images.extend(tree);
    }
    let last = running.wait();
    outputs.push(last.stdout.clone());
    Chain {
        outputs,
        images,
        last,
    }
}

/// A checkpoint the program survives: it ran on to its end under `rewind launch`, and the images
/// written at the checkpoint were restarted after that end.
#[derive(Debug)]
pub struct RunOn {
    /// The launch, which ran to its end past the checkpoint.
    pub live: Finished,
    /// The images of the checkpoint (one per process, the root's first).
    pub images: Vec<PathBuf>,
    /// The restart of those images, which ran to its end.
    pub restarted: Finished,
}

impl RunOn {
    /// The oracle: the live run printed exactly the uninterrupted output and ended alike; the
    /// restart printed a non-empty tail of it and ended alike too.
    #[track_caller]
    pub fn assert_matches(&self, uninterrupted: &Output) {
        let expected = String::from_utf8_lossy(&uninterrupted.stdout);
        assert!(
            self.live.status.code() == uninterrupted.status.code()
                && !self.live.stderr.contains("panicked")
                && self.live.stdout == expected,
            "the program did not run on unharmed past the checkpoint: {}\n--- expected:\n{}\n--- live: {}",
            first_difference(&expected, &self.live.stdout),
            quote(&expected),
            self.live.describe()
        );
        assert!(
            self.restarted.status.code() == uninterrupted.status.code()
                && !self.restarted.stderr.contains("panicked")
                && !self.restarted.stdout.is_empty()
                && expected.ends_with(&self.restarted.stdout),
            "the restart of the checkpoint did not print a tail of the uninterrupted run\n--- expected:\n{}\n--- restart: {}",
            quote(&expected),
            self.restarted.describe()
        );
    }
}

/// `rewind launch`, wait for `wait`, `rewind command --checkpoint` (the program runs on), wait for
/// its end, then `rewind restart` of the images to their end. Uses `scratch/ckpt-0` and
/// `scratch/ckpt-1`.
#[track_caller]
pub fn checkpoint_run_on(scratch: &Scratch, program: &Command, wait: Wait) -> RunOn {
    let mut running = launch(
        program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(wait);
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    let live = running.wait();
    let restarted = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("restarted.out")),
    )
    .wait();
    RunOn {
        live,
        images,
        restarted,
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// The oracle of DESIGN §9 (a) for any number of pieces.
#[track_caller]
pub fn assert_pieces_match(uninterrupted: &Output, pieces: &[&str], last: &Finished) {
    let expected = String::from_utf8_lossy(&uninterrupted.stdout);
    let joined: String = pieces.concat();
    let sizes: Vec<String> = pieces
        .iter()
        .map(|p| format!("{} lines", p.lines().count()))
        .collect();
    let texts = || {
        format!(
            "--- expected (uninterrupted):\n{}\n--- got, concatenated:\n{}\n--- last stage: {}",
            quote(&expected),
            quote(&joined),
            last.describe()
        )
    };
    // A failed restart explains everything else, so it is reported first.
    let ended_alike =
        last.status.code() == uninterrupted.status.code() && !last.stderr.contains("panicked");
    assert!(
        ended_alike,
        "the restarted program ended differently from the uninterrupted run ({}; pieces: {})\n{}",
        show_status(uninterrupted.status),
        sizes.join(", "),
        texts()
    );
    if let Some(empty) = pieces.iter().position(|p| p.is_empty()) {
        let why = if empty == 0 {
            "the checkpoint landed before the program printed anything"
        } else if empty + 1 == pieces.len() {
            "the restarted program printed nothing: the checkpoint did not land mid-run"
        } else {
            "that stage printed nothing before its checkpoint"
        };
        panic!(
            "piece {empty} of the output is empty (pieces: {}): {why}\n{}",
            sizes.join(", "),
            texts()
        );
    }
    assert!(
        joined == expected,
        "output around the checkpoint(s) differs from the uninterrupted run (pieces: {}): {}\n{}",
        sizes.join(", "),
        first_difference(&expected, &joined),
        texts()
    );
}

/// A failure the way DESIGN §7 wants it: exit code 1, a short message on stderr (at most three
/// lines) containing at least one of `words` (case-insensitive), and no panic.
#[track_caller]
pub fn assert_fails_clearly(done: &Finished, words: &[&str]) {
    let message = done.stderr.trim();
    let lines = message.lines().filter(|l| !l.trim().is_empty()).count();
    let lower = message.to_lowercase();
    let problems: Vec<&str> = [
        (done.status.code() != Some(1), "exit code is not 1"),
        (message.is_empty(), "stderr is empty"),
        (lines > 3, "stderr is more than a short message"),
        (done.stderr.contains("panicked"), "it panicked"),
        (
            !words.iter().any(|w| lower.contains(&w.to_lowercase())),
            "stderr names none of the expected words",
        ),
    ]
    .into_iter()
    .filter_map(|(bad, what)| bad.then_some(what))
    .collect();
    assert!(
        problems.is_empty(),
        "expected a clear failure (exit code 1, one short line on stderr containing one of {words:?}), \
         but {}:\n{}",
        problems.join(", "),
        done.describe()
    );
}

/// Checks DESIGN §7's image name, `ckpt_<prog>_<vpid>.rwd`, inside the checkpoint directory.
#[track_caller]
fn check_image_name(image: &Path, ckpt_dir: &Path, done: &Finished) {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_dir = image.parent().and_then(|p| p.canonicalize().ok()) == ckpt_dir.canonicalize().ok();
    assert!(
        image.is_file() && in_dir && name.starts_with("ckpt_") && name.ends_with(".rwd"),
        "expected the path of an image ckpt_<prog>_<vpid>.rwd in {} (exists: {}), got {}\n{}",
        ckpt_dir.display(),
        image.is_file(),
        image.display(),
        done.describe()
    );
}

/// Where two texts first differ, by line, for failure messages.
pub fn first_difference(expected: &str, got: &str) -> String {
    let (mut e, mut g) = (expected.lines(), got.lines());
    for number in 1.. {
        match (e.next(), g.next()) {
            (None, None) => return "they differ only in line endings".to_owned(),
            (Some(a), Some(b)) if a == b => continue,
            (a, b) => {
                return format!("first difference at line {number}: expected {a:?}, got {b:?}");
            }
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------------

/// Reads a file as text (lossy), or an empty string if it is not there.
pub fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            format!("{a:?}")
        } else {
            a.into_owned()
        }
    }));
    words.join(" ")
}

fn show_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// Text for a failure message: as is, or its start and end if long.
fn quote(text: &str) -> String {
    if text.is_empty() {
        return "(nothing)".to_owned();
    }
    if text.len() <= QUOTE_LIMIT {
        return text.to_owned();
    }
    let cut = |i: usize| {
        (i..=text.len())
            .find(|&j| text.is_char_boundary(j))
            .unwrap_or(text.len())
    };
    let head_end = cut(QUOTE_LIMIT / 2);
    let tail_start = cut(text.len() - QUOTE_LIMIT / 2);
    format!(
        "{}\n[... {} bytes left out ...]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

// ---------------------------------------------------------------------------------------------
// Record and replay (DESIGN §4, oracle (b) of §9)
// ---------------------------------------------------------------------------------------------

/// How long `rewind record` of one program may take.
pub const RECORD_TIMEOUT: Duration = RUN_TIMEOUT;
/// How long one `rewind replay` may take.
pub const REPLAY_TIMEOUT: Duration = RUN_TIMEOUT;

/// A finished `rewind record -o DIR -- PROGRAM`: the trace and what the program did live.
#[derive(Debug)]
pub struct Recorded {
    /// The trace directory.
    pub dir: PathBuf,
    /// What the program printed on stdout while it was recorded (a file, as in a shell redirect).
    pub stdout: String,
    /// `rewind record`'s stderr: the program's stderr, then rewind's `rewind: recorded ...` line.
    pub stderr: String,
    /// How `rewind record` ended: the program's exit code, 128 + signal if it was killed.
    pub status: ExitStatus,
    /// The command line, for messages.
    pub what: String,
}

/// `rewind record -o <scratch>/trace-<i> -- PROGRAM ARGS...` with the program's arguments,
/// environment and working directory taken from `program`, its stdin read from `stdin` (or
/// /dev/null) and its stdout and stderr going to files. Fails unless it ended without a panic,
/// with the summary line `rewind: recorded N events (S MiB) in DIR` and a non-empty trace
/// directory. Each call in a test uses the next free `trace-<i>`.
#[track_caller]
pub fn record(scratch: &Scratch, program: &Command, stdin: Option<&Path>) -> Recorded {
    record_with(scratch, program, &[], stdin)
}

/// [`record`] with flags before `--` (such as `--verify=memory`).
#[track_caller]
pub fn record_with(
    scratch: &Scratch,
    program: &Command,
    flags: &[&str],
    stdin: Option<&Path>,
) -> Recorded {
    let i = (0..)
        .find(|i| !scratch.join(format!("trace-{i}")).exists())
        .expect("some trace-<i> is free");
    let dir = scratch.join(format!("trace-{i}"));
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("record").arg("-o").arg(&dir).args(flags).arg("--");
    copy_program(program, &mut cmd);
    let done = spawn_with_stdin(
        cmd,
        stdin,
        scratch.path(),
        Redirect::to(scratch.join(format!("record-{i}.out"))),
    )
    .wait_timeout(RECORD_TIMEOUT);
    let summary = done.stderr.lines().any(|line| {
        line.starts_with("rewind: recorded ")
            && line.contains(" events (")
            && line.contains(" MiB) in ")
    });
    let trace_files = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert!(
        summary && trace_files > 0 && !done.stderr.contains("panicked"),
        "rewind record did not record (summary line `rewind: recorded N events (S MiB) in DIR`: {}, \
         files in {}: {trace_files}):\n{}",
        if summary { "printed" } else { "missing" },
        dir.display(),
        done.describe()
    );
    Recorded {
        dir,
        stdout: done.stdout,
        stderr: done.stderr,
        status: done.status,
        what: done.what,
    }
}

/// `rewind replay DIR EXTRA_ARGS...` to its end (at most [`REPLAY_TIMEOUT`]), from DIR's parent,
/// with stdin from /dev/null and stdout and stderr captured.
pub fn replay(dir: &Path, extra_args: &[&str]) -> Finished {
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("replay").arg(dir).args(extra_args);
    if let Some(parent) = dir.parent() {
        cmd.current_dir(parent);
    }
    run_to_end(cmd, REPLAY_TIMEOUT)
}

impl Recorded {
    /// `rewind replay` of this trace with `extra_args`; see [`replay`].
    pub fn replay(&self, extra_args: &[&str]) -> Finished {
        replay(&self.dir, extra_args)
    }

    /// What the program itself printed on stderr: `stderr` without rewind's `rewind:` lines.
    pub fn program_stderr(&self) -> String {
        without_rewind_lines(&self.stderr)
    }

    /// Replays the trace with `extra_args` and checks the oracle (see [`Recorded::assert_replay_matches`]);
    /// returns the replay.
    #[track_caller]
    pub fn assert_replays_as_recorded(&self, extra_args: &[&str]) -> Finished {
        let replayed = self.replay(extra_args);
        self.assert_replay_matches(&replayed);
        replayed
    }

    /// The oracle of DESIGN §9 (b) on output: the replay printed on stdout exactly what the program
    /// printed live, on stderr the same as the program did (rewind's `rewind:` lines aside), and
    /// ended with the recorded exit code, without a panic. The recorded output must not be empty, or
    /// the comparison would prove nothing.
    #[track_caller]
    pub fn assert_replay_matches(&self, replayed: &Finished) {
        let texts = || {
            format!(
                "--- recorded: {} exited with {}\n--- its stdout:\n{}\n--- its stderr:\n{}\n--- replay: {}",
                self.what,
                show_status(self.status),
                quote(&self.stdout),
                quote(&self.stderr),
                replayed.describe()
            )
        };
        assert!(
            !self.stdout.is_empty(),
            "the recorded program printed nothing, so its replay cannot be checked\n{}",
            texts()
        );
        // A failed replay (a divergence, say) explains everything else, so it is reported first.
        assert!(
            replayed.status.code() == self.status.code()
                && replayed.status.signal().is_none()
                && !replayed.stderr.contains("panicked"),
            "the replay ended differently from the recording ({} recorded)\n{}",
            show_status(self.status),
            texts()
        );
        assert!(
            replayed.stdout == self.stdout,
            "the replay's stdout differs from what the program printed while recorded: {}\n{}",
            first_difference(&self.stdout, &replayed.stdout),
            texts()
        );
        let (recorded_err, replayed_err) = (
            self.program_stderr(),
            without_rewind_lines(&replayed.stderr),
        );
        assert!(
            replayed_err == recorded_err,
            "the replay's stderr differs from what the program printed on stderr while recorded \
             (rewind: lines left out): {}\n{}",
            first_difference(&recorded_err, &replayed_err),
            texts()
        );
    }

    /// Everything about the recording, for a failure message.
    pub fn describe(&self) -> String {
        describe_run(&self.what, self.status, &self.stdout, &self.stderr)
    }
}

/// Runs `program` natively (no rewind) to its end, at most [`RUN_TIMEOUT`], with stdin read from
/// `stdin` (or /dev/null) and stdout and stderr going to files `<scratch>/native-<i>.out[.stderr]`
/// (a file, as for [`record`], so stdio buffers the same way). Whatever its exit status.
#[track_caller]
pub fn run_natively(scratch: &Scratch, program: &Command, stdin: Option<&Path>) -> Finished {
    let i = (0..)
        .find(|i| !scratch.join(format!("native-{i}.out")).exists())
        .expect("some native-<i>.out is free");
    let mut cmd = Command::new(program.get_program());
    cmd.args(program.get_args());
    copy_environment(program, &mut cmd);
    spawn_with_stdin(
        cmd,
        stdin,
        scratch.path(),
        Redirect::to(scratch.join(format!("native-{i}.out"))),
    )
    .wait_timeout(RUN_TIMEOUT)
}

/// A command running the program `name` found on PATH (by its absolute path); `name` is a package
/// that scripts/setup.sh installs.
pub fn system_program(name: &str) -> Command {
    let path = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH (scripts/setup.sh installs it)"));
    let mut cmd = Command::new(path);
    if name == "gdb" {
        // In a UTF-8 locale gdb prints bytes that happen to form UTF-8 (the
        // garbage after a string in a buffer, say) as characters; in the C
        // locale always as octal escapes, as rewind's inspector does.
        cmd.env("LC_ALL", "C");
    }
    cmd
}

/// A command running the python3 interpreter itself: `sys.executable` of the python3 on PATH, so
/// that a wrapper script (a pyenv shim, say) is not what runs.
pub fn python3_interpreter() -> Command {
    let mut ask = python3();
    ask.args(["-c", "import sys; print(sys.executable)"]);
    let done = run_to_end(ask, COMMAND_TIMEOUT);
    let path = PathBuf::from(done.stdout.trim());
    assert!(
        done.status.success() && path.is_absolute() && path.is_file(),
        "cannot find python3's interpreter (sys.executable):\n{}",
        done.describe()
    );
    Command::new(path)
}

/// `text` without its lines that start with `rewind:` (rewind's own messages).
pub fn without_rewind_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|line| !line.starts_with("rewind:"))
        .collect()
}

/// Appends `program`'s path and arguments to `cmd` and gives it `program`'s environment changes and
/// working directory.
fn copy_program(program: &Command, cmd: &mut Command) {
    cmd.arg(program.get_program()).args(program.get_args());
    copy_environment(program, cmd);
}

/// Gives `cmd` the environment changes and working directory of `program`.
fn copy_environment(program: &Command, cmd: &mut Command) {
    for (key, value) in program.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = program.get_current_dir() {
        cmd.current_dir(dir);
    }
}

/// Like `spawn`, with stdin read from a file (or /dev/null); `dir` stands for the checkpoint
/// directory, which nothing here uses.
fn spawn_with_stdin(
    mut cmd: Command,
    stdin: Option<&Path>,
    dir: &Path,
    stdout: Redirect,
) -> Running {
    let what = match stdin {
        Some(path) => format!("{} < {}", describe(&cmd), path.display()),
        None => describe(&cmd),
    };
    let input = match stdin {
        Some(path) => Stdio::from(
            File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display())),
        ),
        None => Stdio::null(),
    };
    let out = File::create(&stdout.path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", stdout.path.display()));
    let stderr_path = stdout.stderr_path();
    let err = File::create(&stderr_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
    cmd.stdin(input).stdout(out).stderr(err).process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    Running {
        what,
        child: Some(child),
        ckpt_dir: dir.to_owned(),
        stdout_path: stdout.path,
        stderr_path,
        stdout_start: 0,
    }
}

/// A writer keeping what is written, shared with its clones: a replay
/// console whose output a test reads back.
#[derive(Clone, Default)]
pub struct Sink(pub std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// rewind debug in batch mode
// ---------------------------------------------------------------------------------------------

/// `rewind debug --trace DIR --batch --ex C...`, run from the trace's parent directory.
pub fn debug(dir: &Path, cmds: &[&str]) -> Finished {
    let mut args: Vec<String> = vec![
        "debug".into(),
        "--trace".into(),
        dir.display().to_string(),
        "--batch".into(),
    ];
    for c in cmds {
        args.push("--ex".into());
        args.push(c.to_string());
    }
    let parent = dir.parent().unwrap_or(dir);
    rewind_in(parent, &args)
}

/// `rewind debug --batch` over `program` run live (`-- PROG`), its
/// recording kept in `trace` (`-o`), with `cmds`, in the scratch directory.
pub fn debug_live(scratch: &Scratch, program: &Command, trace: &Path, cmds: &[&str]) -> Finished {
    let mut cmd = Command::new(rewind_bin());
    cmd.arg("debug").arg("--batch").arg("-o").arg(trace);
    for c in cmds {
        cmd.arg("--ex").arg(c);
    }
    cmd.arg("--").current_dir(scratch.path());
    copy_program(program, &mut cmd);
    run_to_end(cmd, COMMAND_TIMEOUT)
}

/// What each `print` showed, after `$N = `.
pub fn printed_values(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with('$'))
        .map(|l| {
            l.split_once(" = ")
                .map(|x| x.1.to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// Every process whose command line is exactly `argv` (none must be left after a test). Each test
/// should run its fixture with arguments of its own, so parallel tests do not see each other's.
pub fn processes_running(argv: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args == argv {
            found.push(name);
        }
    }
    found
}

pub fn argv_of(program: &Command) -> Vec<String> {
    std::iter::once(program.get_program())
        .chain(program.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[track_caller]
pub fn assert_nothing_left(program: &Command) {
    let argv = argv_of(program);
    // Orphans are reaped by init: give it a moment.
    for _ in 0..100 {
        if processes_running(&argv).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "processes left behind: {:?} running {argv:?}",
        processes_running(&argv)
    );
}
