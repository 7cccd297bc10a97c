//! `tradebaas mode …` and `tradebaas alerts ack …`: send one request to the daemon's admin socket
//! and print its answer.

use std::path::Path;
use std::time::Duration;

use crate::admin::{ClientError, Refusal, Request, request};

/// Exit codes of the operator commands.
pub mod exit {
    /// The daemon did it (or answered the question).
    pub const OK: i32 = 0;
    /// The daemon answered no (a failed pre-flight check, SHUTDOWN → AGGRESSIVE, an unknown
    /// alert, an actor not answering, …).
    pub const REFUSED: i32 = 1;
    /// The daemon could not be reached (not running, wrong data directory) or bad usage.
    pub const UNREACHABLE: i32 = 2;
    /// This user may not use the admin socket.
    pub const PERMISSION_DENIED: i32 = 3;
}

/// How long to wait for the daemon's answer (a mode change includes a store commit and, for
/// AGGRESSIVE, a full store verification).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `req` to the socket at `socket`, prints the answer; returns the exit code.
pub fn run(socket: &Path, req: &Request) -> i32 {
    match request(socket, req, ANSWER_TIMEOUT) {
        Ok(r) if r.ok => {
            println!("{}", r.message);
            if let Some(data) = &r.data
                && let Ok(text) = serde_json::to_string_pretty(data)
            {
                println!("{text}");
            }
            exit::OK
        }
        Ok(r) => {
            eprintln!("tradebaas: refused by the daemon: {}", r.message);
            for p in &r.problems {
                eprintln!("  - {p}");
            }
            if r.error == Some(Refusal::Forbidden) {
                exit::PERMISSION_DENIED
            } else {
                exit::REFUSED
            }
        }
        Err(e @ ClientError::PermissionDenied(_)) => {
            eprintln!("tradebaas: {e}");
            exit::PERMISSION_DENIED
        }
        Err(e) => {
            eprintln!("tradebaas: {e}");
            exit::UNREACHABLE
        }
    }
}
