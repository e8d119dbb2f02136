//! The byte stream to a peer (TCP or unix socket, optionally inside TLS) with its
//! buffers: replies are decoded from a small read buffer, commands and the message go
//! out through a 64 KiB write buffer, so a pipelined batch or a message body costs a few
//! large writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::reply::{Reply, ReplyDecoder, ReplyError};

/// Size of the write buffer; body slices at least this large bypass it.
const OUT_CAPACITY: usize = 64 * 1024;

/// A connected socket before TLS.
#[derive(Debug)]
pub(crate) enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// What the conversation runs over.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(Plain),
    Tls(Box<TlsStream<Plain>>),
    /// Taken for the TLS handshake, or lost with it.
    Gone,
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Plain::Tcp($s) => $e,
            Plain::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why no reply could be read or a write failed.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The peer closed the connection.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// No reply (or write progress) within the time allowed.
    Timeout,
    /// The bytes received are not a reply.
    Reply(ReplyError),
}

/// A stream with its read and write buffers.
#[derive(Debug)]
pub(crate) struct Wire {
    pub(crate) stream: Stream,
    decoder: ReplyDecoder,
    out: Vec<u8>,
}

impl Wire {
    pub(crate) fn new(plain: Plain) -> Wire {
        Wire {
            stream: Stream::Plain(plain),
            decoder: ReplyDecoder::new(),
            out: Vec::with_capacity(OUT_CAPACITY),
        }
    }

    /// Add a command (or any small bytes) to the write buffer, to go with the next flush.
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The write buffer, to format a command into.
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Add bytes of the message: written out each time the buffer fills, and directly
    /// (no copy) when a slice is at least a buffer long.
    pub(crate) async fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        loop {
            let room = OUT_CAPACITY.saturating_sub(self.out.len());
            if data.len() < room {
                self.out.extend_from_slice(data);
                return Ok(());
            }
            if self.out.is_empty() {
                return self.stream.write_all(data).await;
            }
            let (head, tail) = data.split_at(room);
            self.out.extend_from_slice(head);
            data = tail;
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
    }

    /// Send everything buffered.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let result = self.stream.write_all(&self.out).await;
            self.out.clear();
            result?;
        }
        self.stream.flush().await
    }

    /// Send everything buffered within `limit`.
    pub(crate) async fn flush_within(&mut self, limit: Duration) -> Result<(), WireError> {
        match tokio::time::timeout(limit, self.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WireError::Io(e)),
            Err(_) => Err(WireError::Timeout),
        }
    }

    /// The next reply, within `limit`.
    pub(crate) async fn reply(&mut self, limit: Duration) -> Result<Reply, WireError> {
        match tokio::time::timeout(limit, self.read_reply()).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, WireError> {
        loop {
            if let Some(reply) = self.decoder.next_reply().map_err(WireError::Reply)? {
                return Ok(reply);
            }
            let buf = self.decoder.buffer();
            match self.stream.read_buf(buf).await {
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => {}
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }

    /// Whether bytes arrived that no reply read yet (before STARTTLS: injected plaintext).
    pub(crate) fn has_unread(&self) -> bool {
        self.decoder.has_pending()
    }

    /// Close the connection (TLS close_notify first), ignoring errors.
    pub(crate) async fn shutdown(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
    }
}
