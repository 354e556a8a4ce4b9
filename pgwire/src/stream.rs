//! The byte stream under a connection: TCP, a Unix socket, or TLS over TCP, behind one type so
//! that framing and authentication do not care which. Also the SSLRequest exchange that
//! precedes TLS on a PostgreSQL connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use crate::conninfo::{Host, Target};
use crate::error::{PgWireError, Result};
use crate::tls::{describe_handshake_error, server_name, tls_server_end_point, TlsSetup};

/// One of the transports.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Opens the socket for `target` (no TLS yet).
    pub(crate) async fn open(target: &Target) -> Result<Stream> {
        let ctx = || format!("connection to {target} failed");
        match &target.host {
            Host::Unix(_) => {
                let path = target.socket_path().unwrap_or_default();
                let s = UnixStream::connect(&path).await.map_err(|e| PgWireError::io(ctx(), e))?;
                Ok(Stream::Unix(s))
            }
            Host::Tcp(name) => {
                let s = match target.hostaddr {
                    Some(addr) => TcpStream::connect((addr, target.port)).await,
                    None => TcpStream::connect((name.as_str(), target.port)).await,
                }
                .map_err(|e| PgWireError::io(ctx(), e))?;
                s.set_nodelay(true).map_err(|e| PgWireError::io(ctx(), e))?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// Whether the stream is encrypted.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The `tls-server-end-point` channel binding data of a TLS stream.
    pub(crate) fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        match self {
            Stream::Tls(t) => {
                let cert = t.get_ref().1.peer_certificates()?.first()?;
                tls_server_end_point(cert)
            }
            _ => None,
        }
    }
}

/// Result of asking a TCP server for TLS.
#[derive(Debug)]
pub(crate) enum SslResponse {
    /// The handshake succeeded.
    Tls(Stream),
    /// The server said `N`; the plain stream can go on.
    Refused(Stream),
}

/// Sends SSLRequest on a fresh TCP stream and, on `S`, runs the TLS handshake with the name of
/// `target`.
pub(crate) async fn negotiate_tls(stream: Stream, target: &Target, tls: &TlsSetup) -> Result<SslResponse> {
    let Stream::Tcp(mut tcp) = stream else {
        return Ok(SslResponse::Refused(stream));
    };
    let ctx = || format!("connection to {target} failed");
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await.map_err(|e| PgWireError::io(ctx(), e))?;
    // Exactly one byte: anything the server sent after it must not be read as plaintext
    // (CVE-2021-23222).
    let answer = tcp.read_u8().await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PgWireError::Closed(ctx())
        } else {
            PgWireError::io(ctx(), e)
        }
    })?;
    match answer {
        b'S' => {
            let host = match &target.host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(_) => return Err(PgWireError::Protocol("TLS over a Unix socket".into())),
            };
            let name = server_name(&host)?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            match connector.connect(name, tcp).await {
                Ok(s) => Ok(SslResponse::Tls(Stream::Tls(Box::new(s)))),
                Err(e) => {
                    // rustls reports handshake and verification failures as InvalidData
                    // wrapping its own error; other kinds are transport failures.
                    if e.kind() == io::ErrorKind::InvalidData {
                        Err(PgWireError::Tls { context: ctx(), message: describe_handshake_error(&e, tls) })
                    } else {
                        Err(PgWireError::io(ctx(), e))
                    }
                }
            }
        }
        b'N' => Ok(SslResponse::Refused(Stream::Tcp(tcp))),
        other => Err(PgWireError::Protocol(format!("{}: unexpected answer {:?} to SSLRequest", ctx(), other as char))),
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
