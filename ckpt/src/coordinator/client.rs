//! `rewind command --coordinator`: one request, one report.

use std::time::Duration;

use super::{read_line, send_line, ClientRequest, Report, Role};
use crate::Error;

/// Sends `req` to the coordinator at `addr` and waits for its report (at
/// most three barrier timeouts and a minute: the coordinator gives up on
/// sessions before that).
pub fn request(addr: &str, token: Option<&str>, req: &ClientRequest) -> Result<Report, Error> {
    let (mut writer, mut reader, welcome) = super::connect(addr, token, Role::Client)?;
    let io = |e: std::io::Error| Error::io(format!("coordinator {addr}"), e);
    let barrier = Duration::from_millis(welcome.timeout_ms.max(1));
    let rounds = match req {
        ClientRequest::Ping { rounds } => *rounds,
        _ => 0,
    };
    let wait = barrier * 3 + Duration::from_secs(60) + Duration::from_millis(u64::from(rounds));
    writer.set_read_timeout(Some(wait)).map_err(io)?;
    send_line(&mut writer, req).map_err(io)?;
    let line = match read_line(&mut reader) {
        Ok(Some(line)) => line,
        Ok(None) => {
            return Err(Error::Gone(format!(
                "the coordinator at {addr} closed the connection without answering (did it stop?)"
            )))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Error::Gone(format!(
                "the coordinator at {addr} did not answer within {:.0} s",
                wait.as_secs_f64()
            )))
        }
        Err(e) => return Err(io(e)),
    };
    serde_json::from_str(&line)
        .map_err(|e| Error::Usage(format!("bad answer from the coordinator at {addr}: {e}")))
}
