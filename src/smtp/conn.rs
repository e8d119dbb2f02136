//! Connection I/O for a session: a bounded read buffer, command lines with a length
//! limit, and replies batched so a pipelining client gets them in few writes.
//!
//! Replies are queued and written only when the session needs more input (or explicitly
//! flushed, e.g. after `354` or before STARTTLS): that is RFC 2920 pipelining. A line
//! longer than the limit is discarded up to its line feed and reported, so a 100 kB
//! command line costs no memory and the session survives. Every read has a deadline.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const READ_CHUNK: usize = 64 * 1024;

/// Why a read ended without a line.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    /// The deadline passed.
    Timeout,
    /// An I/O error.
    Io(io::Error),
}

/// One command line, or a line that was too long (discarded).
#[derive(Debug)]
pub enum Line {
    /// A complete line, without its line ending.
    Complete(Vec<u8>),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

/// A stream with a read buffer and a queue of replies.
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wrap a stream.
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            out: Vec::with_capacity(4096),
        }
    }

    /// Give the stream back, dropping any buffered input (for STARTTLS: plaintext sent
    /// after the command must never be read as if it came over TLS).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// True when unprocessed input is buffered (a pipelining client).
    pub fn has_buffered_input(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Queue a reply line block (already formatted with CRLF).
    pub fn queue(&mut self, reply: &str) {
        self.out.extend_from_slice(reply.as_bytes());
    }

    /// Write queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await
    }

    /// Read more input, flushing queued replies first (the client may be waiting for them).
    async fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        self.flush().await.map_err(ReadError::Io)?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Read into spare capacity: nothing is zero-filled on this hot path.
        self.buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
        match read {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(0)) => return Err(ReadError::Closed),
            Ok(Ok(_)) => {}
        }
        Ok(())
    }

    /// The next line of at most `max` bytes (line ending included in the count).
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Line, ReadError> {
        let deadline = Instant::now() + timeout;
        let mut too_long = false;
        loop {
            let pending = &self.buf[self.start..];
            if let Some(n) = pending.iter().position(|&b| b == b'\n') {
                let line_end = self.start + n + 1;
                if too_long || n + 1 > max {
                    self.start = line_end;
                    return Ok(Line::TooLong);
                }
                let mut line = self.buf[self.start..line_end - 1].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start = line_end;
                return Ok(Line::Complete(line));
            }
            if pending.len() > max {
                // Drop what we have; keep discarding until the line feed.
                too_long = true;
                self.start = self.buf.len();
            }
            self.fill(deadline).await?;
        }
    }

    /// Feed buffered and new input to `sink` until it reports the end; `sink` returns
    /// (bytes used, done). Used for DATA.
    pub async fn read_until<F>(&mut self, timeout: Duration, mut sink: F) -> Result<(), ReadError>
    where
        F: FnMut(&[u8]) -> (usize, bool),
    {
        let deadline = Instant::now() + timeout;
        loop {
            if self.start < self.buf.len() {
                let (used, done) = sink(&self.buf[self.start..]);
                self.start += used;
                if done {
                    return Ok(());
                }
            }
            self.fill(deadline).await?;
        }
    }
}
