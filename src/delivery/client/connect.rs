//! Opening a session: connect, greeting, EHLO (HELO if the peer refuses EHLO) or LHLO,
//! STARTTLS as the TLS policy says, and EHLO again over TLS.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use super::failure::{Stage, describe, io_text};
use super::reply::Reply;
use super::stream::{Plain, Stream, Wire};
use super::{Capabilities, ClientSettings, ConnectError, Connection, Protocol, State, tls};
use crate::TlsPolicy;
use crate::delivery::{Endpoint, Peer};

impl Connection {
    /// Connect (TCP within `connect_timeout`, or a unix socket), read the greeting, say
    /// EHLO (HELO when SMTP EHLO gets a 5xx) or LHLO, do STARTTLS as `tls` demands, and
    /// EHLO again over TLS.
    pub async fn open(
        peer: &Peer,
        protocol: Protocol,
        tls: TlsPolicy,
        settings: &ClientSettings,
    ) -> Result<Connection, ConnectError> {
        let remote = peer.to_string();
        let plain = match connect(&peer.endpoint, settings.connect_timeout).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %remote, error = %io_text(&e), "connect failed");
                return Err(ConnectError {
                    temporary: true,
                    status: "4.4.1".to_string(),
                    detail: format!("connect to {remote}: {}", io_text(&e)),
                    remote_reply: false,
                    remote: None,
                });
            }
        };
        let mut conn = Connection {
            wire: Wire::new(plain),
            peer: peer.clone(),
            remote,
            protocol,
            caps: Capabilities::default(),
            tls_used: false,
            command_timeout: settings.command_timeout,
            data_timeout: settings.data_timeout,
            state: State::Ready,
        };
        let greeting = conn.handshake_reply(Stage::Greeting).await?;
        if !greeting.is_positive() {
            return Err(conn.refused(&greeting));
        }
        conn.hello(&settings.helo_name).await?;
        if conn.caps.starttls {
            conn.starttls(tls, settings).await?;
        } else if tls != TlsPolicy::Opportunistic {
            return Err(conn.error(
                "4.7.4",
                format!(
                    "TLS is required, but was not offered by host {}",
                    conn.remote
                ),
            ));
        }
        Ok(conn)
    }

    /// EHLO or LHLO, and HELO when an SMTP peer refuses EHLO permanently.
    async fn hello(&mut self, name: &str) -> Result<(), ConnectError> {
        let (verb, stage) = match self.protocol {
            Protocol::Smtp => ("EHLO", Stage::Ehlo),
            Protocol::Lmtp => ("LHLO", Stage::Lhlo),
        };
        let reply = self.handshake_command(verb, name, stage).await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if self.protocol == Protocol::Lmtp || reply.class() != 5 {
            return Err(self.refused(&reply));
        }
        let reply = self.handshake_command("HELO", name, Stage::Helo).await?;
        if !reply.is_positive() {
            return Err(self.refused(&reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// STARTTLS when offered. Only a refusal with opportunistic TLS continues in plain
    /// text; any failure of the handshake itself ends the session.
    async fn starttls(
        &mut self,
        policy: TlsPolicy,
        settings: &ClientSettings,
    ) -> Result<(), ConnectError> {
        let reply = self
            .handshake_command("STARTTLS", "", Stage::StartTls)
            .await?;
        if !reply.is_positive() {
            if policy == TlsPolicy::Opportunistic {
                tracing::debug!(peer = %self.remote, reply = %reply, "STARTTLS refused, continuing in plain text");
                return Ok(());
            }
            return Err(self.error(
                "4.7.4",
                format!(
                    "TLS is required, but host {} refused to start TLS: {reply}",
                    self.remote
                ),
            ));
        }
        // Bytes already here were sent before the handshake: whoever sent them could
        // fake the EHLO reply we are about to read over TLS.
        if self.wire.has_unread() {
            return Err(self.error(
                "4.7.5",
                format!(
                    "host {} sent unexpected data after its STARTTLS reply",
                    self.remote
                ),
            ));
        }
        let (config, name) = if policy == TlsPolicy::Verify {
            let Some(name) = tls::server_name(&self.peer.host) else {
                return Err(self.error(
                    "4.7.5",
                    format!(
                        "cannot verify the certificate of {}: {:?} is not a host name",
                        self.remote, self.peer.host
                    ),
                ));
            };
            (settings.verifying_tls.clone(), name)
        } else {
            let name = tls::server_name(&self.peer.host).unwrap_or_else(|| {
                let ip = match &self.peer.endpoint {
                    Endpoint::Tcp(a) => a.ip(),
                    Endpoint::Unix(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                };
                ServerName::IpAddress(ip.into())
            });
            (settings.any_certificate_tls.clone(), name)
        };
        let Stream::Plain(plain) = std::mem::replace(&mut self.wire.stream, Stream::Gone) else {
            return Err(self.error("4.7.5", format!("TLS already active with {}", self.remote)));
        };
        let handshake = TlsConnector::from(config).connect(name, plain);
        let stream = match tokio::time::timeout(self.command_timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(self.error(
                    "4.7.5",
                    format!("TLS handshake with {} failed: {}", self.remote, io_text(&e)),
                ));
            }
            Err(_) => {
                return Err(self.error(
                    "4.7.5",
                    format!("TLS handshake with {} timed out", self.remote),
                ));
            }
        };
        self.wire.stream = Stream::Tls(Box::new(stream));
        self.tls_used = true;
        self.hello(&settings.helo_name).await
    }

    /// Send `VERB arg` and read the reply.
    async fn handshake_command(
        &mut self,
        verb: &str,
        arg: &str,
        stage: Stage,
    ) -> Result<Reply, ConnectError> {
        let out = self.wire.out();
        out.extend_from_slice(verb.as_bytes());
        if !arg.is_empty() {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Err(e) = self.wire.flush_within(self.command_timeout).await {
            let (status, detail) = describe(&self.remote, &e, stage);
            return Err(self.error(status, detail));
        }
        self.handshake_reply(stage).await
    }

    async fn handshake_reply(&mut self, stage: Stage) -> Result<Reply, ConnectError> {
        match self.wire.reply(self.command_timeout).await {
            Ok(reply) => {
                tracing::debug!(peer = %self.remote, after = stage.name(), code = reply.code(), reply = %reply, "reply");
                Ok(reply)
            }
            Err(e) => {
                let (status, detail) = describe(&self.remote, &e, stage);
                Err(self.error(status, detail))
            }
        }
    }

    /// The peer refused the session with this reply.
    fn refused(&self, reply: &Reply) -> ConnectError {
        ConnectError {
            temporary: reply.class() != 5,
            status: reply.status(),
            detail: reply.detail(),
            remote_reply: true,
            remote: Some(self.remote.clone()),
        }
    }

    /// A temporary local failure after the connection was made.
    fn error(&self, status: &str, detail: String) -> ConnectError {
        tracing::debug!(peer = %self.remote, status, detail = %detail, "session failed");
        ConnectError {
            temporary: true,
            status: status.to_string(),
            detail,
            remote_reply: false,
            remote: Some(self.remote.clone()),
        }
    }
}

async fn connect(endpoint: &Endpoint, limit: Duration) -> io::Result<Plain> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "Connection timed out");
    match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
                .await
                .map_err(|_| timed_out())??;
            // Commands are written whole; waiting for more to fill a segment only adds
            // a round trip's worth of delay to each pipelined batch.
            stream.set_nodelay(true)?;
            Ok(Plain::Tcp(stream))
        }
        Endpoint::Unix(path) => {
            let stream = tokio::time::timeout(limit, UnixStream::connect(path as &Path))
                .await
                .map_err(|_| timed_out())??;
            Ok(Plain::Unix(stream))
        }
    }
}
