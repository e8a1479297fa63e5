//! The control socket of a running `launch`/`restart` session (a unix
//! socket, mode 0600) and its one-line JSON protocol, as spoken by
//! `rewind command`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Name of the socket inside the checkpoint directory.
pub const SOCKET_NAME: &str = ".rewind-control.sock";
/// Environment variable naming the socket explicitly.
pub const ENV_CONTROL: &str = "REWIND_CONTROL";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Write an image (answered once it is durable); with `kill`, kill the
    /// program right after it, without letting it run on.
    Checkpoint {
        kill: bool,
    },
    Status,
    /// Kill the program.
    Kill,
    /// Stop supervising: detach and let the program run on its own.
    Quit,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The images of the other processes of the program's tree, written
    /// with `image` (restart them all: `rewind restart IMAGE OTHERS...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A checkpoint: how long the program was stopped, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// A checkpoint: from its start until every image was durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub program: String,
    pub argv: Vec<String>,
    /// The pid the program sees (virtual) and the kernel's.
    pub pid: i32,
    pub real_pid: i32,
    pub threads: Vec<i32>,
    /// Every process of the program's tree (virtual pids), the program first.
    #[serde(default)]
    pub processes: Vec<i32>,
    pub ckpt_dir: String,
    pub images: Vec<String>,
    pub restarted: bool,
    /// How long the last checkpoint stopped the program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_ms: Option<f64>,
    /// How long the last checkpoint took until its images were durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_durable_ms: Option<f64>,
    /// The images of a checkpoint are being written (the program runs on).
    #[serde(default)]
    pub writing: bool,
}

/// Where the control socket of the session using `ckpt_dir` lives.
pub fn socket_path(ckpt_dir: &Path) -> PathBuf {
    match std::env::var_os(ENV_CONTROL) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => ckpt_dir.join(SOCKET_NAME),
    }
}

/// The listening side, removed when dropped.
pub struct ControlSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<ControlSocket, Error> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::Usage(format!(
                    "another rewind session already listens on {} (use another --ckpt-dir or set {ENV_CONTROL})",
                    path.display()
                )));
            }
            // A stale socket of a session that died.
            let _ = std::fs::remove_file(path);
        }
        let listener =
            UnixListener::bind(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accept one pending client, if any: its request and a way to answer.
    pub fn accept(&self) -> Option<(Result<Request, String>, UnixStream)> {
        let (stream, _) = self.listener.accept().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let req = match BufReader::new(&stream).read_line(&mut line) {
            Ok(_) => serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}")),
            Err(e) => Err(format!("cannot read request: {e}")),
        };
        Some((req, stream))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn respond(mut stream: UnixStream, resp: &Response) {
    if let Ok(mut text) = serde_json::to_string(resp) {
        text.push('\n');
        let _ = stream.write_all(text.as_bytes());
    }
}

/// Send one request to the session listening at `path` and wait for its answer.
pub fn request(path: &Path, req: &Request) -> Result<Response, Error> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        Error::Usage(format!(
            "no rewind session is running here (cannot connect to {}: {e}); start one with `rewind launch` or name its --ckpt-dir",
            path.display()
        ))
    })?;
    let mut text = serde_json::to_string(req).map_err(|e| Error::Usage(e.to_string()))?;
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    if line.trim().is_empty() {
        return Err(Error::Gone(
            "the session ended without answering (did the program exit?)".into(),
        ));
    }
    serde_json::from_str(line.trim())
        .map_err(|e| Error::Usage(format!("bad answer from the session: {e}")))
}
