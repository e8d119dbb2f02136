//! The control socket: how `splitmx queue retry|hold|release|delete` reaches the queue of
//! a running gateway. A unix socket in the spool directory (`control.sock`, mode 0600, so
//! only the spool's owner can use it), one request line and one answer line per
//! connection:
//!
//! ```text
//! -> retry all            <- ok 12
//! -> hold 0MFkq3bW2Xv7y9Ab <- ok 1
//! -> delete 0000000000000000 <- error no message 0000000000000000 in the queue
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::queue::{Agent, ControlError, Queue};
use crate::spool::QueueId;

/// The socket's file name inside the spool directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Longest request line accepted.
const MAX_REQUEST: u64 = 256;

/// A request to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Try now: one message, or every message (`None`).
    Retry(Option<QueueId>),
    /// Keep a message back.
    Hold(QueueId),
    /// Let a held message go.
    Release(QueueId),
    /// Remove a message without delivering or bouncing it.
    Delete(QueueId),
}

impl Request {
    /// The request line, without the line end.
    pub fn to_line(&self) -> String {
        match self {
            Request::Retry(None) => "retry all".into(),
            Request::Retry(Some(id)) => format!("retry {id}"),
            Request::Hold(id) => format!("hold {id}"),
            Request::Release(id) => format!("release {id}"),
            Request::Delete(id) => format!("delete {id}"),
        }
    }

    /// Parses a request line.
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        if words.next().is_some() {
            return Err("too many words".into());
        }
        let id = |a: Option<&str>| -> Result<QueueId, String> {
            a.ok_or_else(|| format!("{verb} needs a queue id"))?
                .parse::<QueueId>()
                .map_err(|e| e.to_string())
        };
        match verb {
            "retry" if arg == Some("all") => Ok(Request::Retry(None)),
            "retry" => Ok(Request::Retry(Some(id(arg)?))),
            "hold" => Ok(Request::Hold(id(arg)?)),
            "release" => Ok(Request::Release(id(arg)?)),
            "delete" => Ok(Request::Delete(id(arg)?)),
            other => Err(format!("unknown request {other:?}")),
        }
    }
}

/// Where the control socket of the spool in `spool_dir` lives.
pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(SOCKET_NAME)
}

/// Binds the control socket (replacing a stale one) and answers requests until the task
/// is dropped.
pub fn serve<A: Agent>(spool_dir: &Path, queue: Queue<A>) -> std::io::Result<()> {
    let path = socket_path(spool_dir);
    // The spool lock is ours, so a socket file left here is from a dead gateway.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), answer(stream, queue)).await;
            });
        }
    });
    Ok(())
}

async fn answer<A: Agent>(stream: UnixStream, queue: Queue<A>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let reply = match Request::parse(line.trim_end()) {
        Err(e) => format!("error {e}"),
        Ok(request) => {
            tracing::info!(request = %request.to_line(), "queue control request");
            match execute(&queue, request).await {
                Ok(n) => format!("ok {n}"),
                Err(e) => format!("error {e}"),
            }
        }
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

async fn execute<A: Agent>(queue: &Queue<A>, request: Request) -> Result<usize, ControlError> {
    match request {
        Request::Retry(id) => queue.retry(id),
        Request::Hold(id) => queue.hold(id).await.map(|()| 1),
        Request::Release(id) => queue.release(id).await.map(|()| 1),
        Request::Delete(id) => queue.delete(id).await.map(|()| 1),
    }
}

/// Sends `request` to the gateway running on `spool_dir`. `Ok` carries the gateway's
/// answer (`ok N` or `error ...`); `Err` means no gateway answered.
pub async fn send(spool_dir: &Path, request: Request) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket_path(spool_dir)).await?;
    stream.write_all(request.to_line().as_bytes()).await?;
    stream.write_all(b"\n").await?;
    let mut answer = String::new();
    BufReader::new(stream.take(4096))
        .read_line(&mut answer)
        .await?;
    Ok(answer.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let id = QueueId::new();
        for r in [
            Request::Retry(None),
            Request::Retry(Some(id)),
            Request::Hold(id),
            Request::Release(id),
            Request::Delete(id),
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r));
        }
        for bad in [
            "",
            "hold",
            "hold x",
            "retry",
            "flush all",
            "hold a b",
            "delete \0",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }
}
