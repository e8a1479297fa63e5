//! `rewind coordinator`, `rewind command --coordinator` and `rewind restart
//! --coordinator IMG...`: the command-line side of `rewind_ckpt::coordinator`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rewind_ckpt::coordinator::server::{Coordinator, CoordinatorOptions};
use rewind_ckpt::coordinator::{self, client, ClientRequest, Report};

use crate::cli::{err, CliError, CliResult, RestartRequest};

pub struct CoordinatorRequest {
    pub listen: String,
    /// Seconds a session has to answer one barrier.
    pub timeout: f64,
}

/// Runs the coordinator until it is killed. Prints where it listens and its
/// token, then one line per event, on stdout.
pub fn coordinator(req: CoordinatorRequest) -> CliResult {
    if !(req.timeout.is_finite() && req.timeout > 0.0) {
        return Err(CliError::usage(format!(
            "--timeout must be a positive number of seconds, not {}",
            req.timeout
        )));
    }
    let coord = Coordinator::bind(&CoordinatorOptions {
        listen: req.listen,
        timeout: Duration::from_secs_f64(req.timeout),
        token: None,
    })?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "rewind coordinator listening on {}", coord.addr);
    let _ = writeln!(out, "token: {}", coord.token);
    if !coordinator::is_loopback(coord.addr.ip()) {
        let _ = writeln!(
            out,
            "peers from other hosts must pass --token {} (or set {})",
            coord.token,
            coordinator::ENV_TOKEN
        );
    }
    let _ = out.flush();
    coord.run(|line| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })?;
    Ok(0)
}

pub struct CoordinatedCommand {
    pub coordinator: String,
    pub token: Option<String>,
    pub checkpoint: bool,
    pub kill: bool,
    pub status: bool,
    pub quit: bool,
    pub ping: Option<u32>,
    pub json: bool,
}

/// `rewind command --coordinator ADDR ...`.
pub fn command(req: CoordinatedCommand) -> CliResult {
    if req.quit {
        return Err(CliError::usage(
            "--quit talks to one session (--ckpt-dir); through a coordinator there is --checkpoint, --status, --kill and --ping",
        ));
    }
    let request = if req.checkpoint {
        ClientRequest::Checkpoint { kill: req.kill }
    } else if let Some(rounds) = req.ping {
        if rounds == 0 {
            return Err(CliError::usage("--ping wants a number of rounds above 0"));
        }
        ClientRequest::Ping { rounds }
    } else if req.status {
        ClientRequest::Status
    } else if req.kill {
        ClientRequest::Kill
    } else {
        return Err(CliError::usage(
            "say what to do: --checkpoint, --status, --kill or --ping N",
        ));
    };
    let token = coordinator::token_from(req.token);
    let bar = match request {
        ClientRequest::Checkpoint { .. } => {
            crate::cli::spinner("{spinner} checkpointing every session... {elapsed}")
        }
        _ => None,
    };
    let report = client::request(&req.coordinator, token.as_deref(), &request);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if req.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(if report.ok { 0 } else { 1 });
    }
    for lost in &report.lost {
        eprintln!("rewind: warning: {lost} was lost: it disconnected before its program ended");
    }
    for s in &report.sessions {
        for w in &s.warnings {
            eprintln!("rewind: warning: session {}: {w}", s.id);
        }
    }
    if !report.ok {
        return Err(err(report
            .error
            .unwrap_or_else(|| "the coordinator refused".into())));
    }
    match request {
        ClientRequest::Checkpoint { .. } => print_checkpoint(&req.coordinator, &report),
        ClientRequest::Status => print_status(&req.coordinator, &report),
        ClientRequest::Kill => println!("killed {} session(s)", report.sessions.len()),
        ClientRequest::Ping { .. } => {
            if let Some(p) = &report.ping {
                println!(
                    "{} no-op barrier(s) across {} session(s): median {:.3} ms, p99 {:.3} ms, min {:.3} ms, max {:.3} ms",
                    p.rounds,
                    p.sessions,
                    p.median_us / 1e3,
                    p.p99_us / 1e3,
                    p.min_us / 1e3,
                    p.max_us / 1e3
                );
            }
        }
    }
    Ok(0)
}

fn phases(report: &Report) -> String {
    report
        .phases
        .iter()
        .map(|p| format!("{} {:.1} ms", p.name, p.ms))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_checkpoint(addr: &str, report: &Report) {
    let times = match (report.paused_ms, report.durable_ms) {
        (Some(p), Some(d)) => format!(
            "programs stopped up to {}, images durable after {} ({})",
            crate::cli::millis(p),
            crate::cli::millis(d),
            phases(report)
        ),
        _ => phases(report),
    };
    println!(
        "checkpoint of {} session(s): {times}",
        report.sessions.len()
    );
    // One restart command per host, images in session order.
    let mut hosts: Vec<(String, Vec<String>)> = Vec::new();
    for s in &report.sessions {
        let image = s.image.clone().unwrap_or_default();
        let capture = match (s.paused_ms, s.durable_ms) {
            (Some(p), Some(d)) => format!(
                ", stopped {}, durable after {}",
                crate::cli::millis(p),
                crate::cli::millis(d)
            ),
            _ => s
                .phases
                .iter()
                .find(|p| p.name == "capture")
                .map(|p| format!(", captured in {:.1} ms", p.ms))
                .unwrap_or_default(),
        };
        let size = s
            .image_bytes
            .map(|b| indicatif::HumanBytes(b).to_string())
            .unwrap_or_default();
        println!(
            "[{}] {}: {image} ({size}{capture})",
            s.id,
            s.info.describe()
        );
        // The other processes of its tree, if it forked.
        for other in &s.also {
            println!("    {other}");
        }
        let all = std::iter::once(image).chain(s.also.iter().cloned());
        match hosts.iter_mut().find(|(h, _)| *h == s.info.hostname) {
            Some((_, images)) => images.extend(all),
            None => hosts.push((s.info.hostname.clone(), all.collect())),
        }
    }
    for (host, images) in &hosts {
        let on = if hosts.len() > 1 {
            format!(" (on {host})")
        } else {
            String::new()
        };
        println!(
            "restart{on}: rewind restart --coordinator {addr} {}",
            images.join(" ")
        );
    }
}

fn print_status(addr: &str, report: &Report) {
    println!(
        "coordinator {addr}: {} session(s){}",
        report.sessions.len(),
        if report.phases.is_empty() {
            String::new()
        } else {
            format!(" (answered in {})", phases(report))
        }
    );
    for s in &report.sessions {
        let i = &s.info;
        let real = if i.real_pid != i.vpid {
            format!(", real pid {}", i.real_pid)
        } else {
            String::new()
        };
        println!(
            "[{}] {} (pid {}{real}) on {} from {}{}",
            s.id,
            i.program,
            i.vpid,
            i.hostname,
            s.peer,
            if i.restarted { ", restarted" } else { "" }
        );
        println!("    argv:     {}", i.argv.join(" "));
        println!("    ckpt dir: {}", i.ckpt_dir);
        if let Some(st) = &s.status {
            println!("    threads:  {}", st.threads.len());
            match st.last_checkpoint_ms {
                Some(ms) => println!("    last checkpoint stopped the program {ms:.1} ms"),
                None => println!("    no checkpoint yet"),
            }
        }
    }
}

/// `rewind restart --coordinator ADDR IMG1 IMG2...`: the images are split
/// into process trees by their parent links (a session whose program
/// forked wrote one image per process), and each tree is restarted by a
/// `rewind restart --coordinator ADDR ROOT CHILD...` child (a session of
/// its own, sharing this terminal); all are waited for together. Exits
/// with the first nonzero status in tree order, else 0.
pub fn restart_all(
    req: &RestartRequest,
    trees: Vec<Vec<PathBuf>>,
    addr: &str,
    token: Option<&str>,
) -> CliResult {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::from(rewind_ckpt::Error::io("/proc/self/exe", e)))?;
    // Like the sessions it starts, it leaves Ctrl-C to the programs and ends
    // when they do.
    rewind_ckpt::sys::process::ignore_terminal_signals();
    let mut children = Vec::new();
    for tree in trees {
        let mut cmd = Command::new(&exe);
        cmd.arg("restart")
            .arg("--coordinator")
            .arg(addr)
            .arg("--ckpt-dir")
            .arg(&req.ckpt_dir);
        for kv in &req.env {
            cmd.arg("--env").arg(kv);
        }
        if let Some(s) = req.interval {
            cmd.arg("--interval").arg(s.to_string());
        }
        if !req.plugins.is_empty() {
            cmd.arg("--plugin").arg(req.plugins.join(","));
        }
        if req.write_stopped {
            cmd.arg("--no-forked-checkpoints");
        }
        // The token goes through the environment, not the command line (ps).
        if let Some(t) = token {
            cmd.env(coordinator::ENV_TOKEN, t);
        }
        cmd.args(&tree);
        match cmd.spawn() {
            Ok(child) => children.push((tree[0].clone(), child)),
            Err(e) => {
                for (_, mut c) in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(CliError::from(rewind_ckpt::Error::io(
                    exe.display().to_string(),
                    e,
                )));
            }
        }
    }
    let mut first: Option<(PathBuf, u8)> = None;
    for (image, mut child) in children {
        let code = match child.wait() {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1)
            }
            Err(_) => 1,
        };
        if code != 0 && first.is_none() {
            first = Some((image, code.clamp(0, 255) as u8));
        }
    }
    match first {
        None => Ok(0),
        Some((image, code)) => {
            tracing::info!(
                "the restart of {} ended with status {code}",
                image.display()
            );
            Ok(code)
        }
    }
}
