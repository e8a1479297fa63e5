//! A session's connection to its coordinator. The session's event loop polls
//! it next to the control socket and the program's stops (see
//! `session/coord.rs` for what it does with the orders).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::{send_line, Order, Role, SessionInfo, SessionMsg, MAX_LINE};
use crate::Error;

/// How long writing one answer to the coordinator may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CoordinatorLink {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Bytes of a line not complete yet.
    partial: Vec<u8>,
    /// The coordinator's address as given (for messages).
    pub addr: String,
    /// This session's number at the coordinator.
    pub id: u64,
    /// How long the coordinator waits for a session at each barrier.
    pub timeout: Duration,
    /// While the coordinator holds the program suspended: when the session
    /// stops waiting for its next order and resumes the program by itself.
    pub(crate) suspended_until: Option<Instant>,
}

impl CoordinatorLink {
    /// Connects and is welcomed; nothing is registered yet, so a refusal or
    /// an unreachable coordinator is reported before any program starts.
    pub fn connect(addr: &str, token: Option<&str>) -> Result<CoordinatorLink, Error> {
        let (writer, reader, welcome) = super::connect(addr, token, Role::Session)?;
        writer
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| Error::io(addr, e))?;
        Ok(CoordinatorLink {
            writer,
            reader,
            partial: Vec::new(),
            addr: addr.to_string(),
            id: welcome.id,
            timeout: Duration::from_millis(welcome.timeout_ms.max(1000)),
            suspended_until: None,
        })
    }

    pub fn register(&mut self, info: &SessionInfo) -> Result<(), Error> {
        self.send(&SessionMsg::Register(info.clone())).map_err(|e| {
            Error::Usage(format!(
                "cannot register with the coordinator at {}: {e}",
                self.addr
            ))
        })
    }

    pub fn send(&mut self, msg: &SessionMsg) -> Result<(), String> {
        send_line(&mut self.writer, msg).map_err(|e| e.to_string())
    }

    /// The orders that arrived. Call when the socket is readable: it reads
    /// once, so it does not block. `Err` when the connection is gone or the
    /// coordinator sent something that is not an order.
    pub fn receive(&mut self) -> Result<Vec<Order>, String> {
        let got = {
            let buf = self.reader.fill_buf().map_err(|e| e.to_string())?;
            if buf.is_empty() {
                return Err("the coordinator closed the connection".into());
            }
            self.partial.extend_from_slice(buf);
            buf.len()
        };
        self.reader.consume(got);
        let mut orders = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let order = serde_json::from_str(text.trim())
                .map_err(|e| format!("the coordinator sent a bad order: {e}"))?;
            orders.push(order);
        }
        if self.partial.len() as u64 > MAX_LINE {
            return Err("the coordinator sent a line too long".into());
        }
        Ok(orders)
    }
}

impl AsFd for CoordinatorLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }
}
