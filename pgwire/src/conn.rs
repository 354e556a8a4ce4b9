//! A connection to one PostgreSQL server speaking the simple-query protocol: connecting
//! (host list, TLS per `sslmode`, startup, authentication), reading messages, result sets,
//! COPY OUT (BASE_BACKUP) and COPY BOTH (START_REPLICATION).
//!
//! Three levels, so that callers with unusual response sequences (BASE_BACKUP on 13/14 sends
//! several COPY OUTs between result sets) are not stuck with a fixed shape:
//! [`Connection::next_message`] yields every message; [`Connection::next_response`] groups
//! them into result sets, COPY starts and ReadyForQuery; [`Connection::simple_query`],
//! [`Connection::copy_out`] and [`Connection::start_copy_both`] cover the common shapes.
//!
//! For streaming, [`Connection::split`] gives a [`ConnectionReader`] and a
//! [`ConnectionWriter`] that can live in different tasks: the writer answers keepalives while
//! the reader's consumer is slow (uploads), and [`ConnectionReader::unsplit`] puts them back
//! together to read the results that follow the COPY.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::auth::authenticate;
use crate::conninfo::{ConnParams, Host, Replication, SslMode, Target};
use crate::error::{PgWireError, Result, ServerError};
use crate::message::{decode, BackendMessage, Column, CopyFormat};
use crate::stream::{negotiate_tls, SslResponse, Stream};
use crate::tls::TlsSetup;

/// One result set: the columns, the rows in text format, and the command tag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    /// Column names and types; empty for commands that return no rows.
    pub columns: Vec<Column>,
    /// The rows as text, `None` for NULL. Invalid UTF-8 is replaced (see `raw_rows`).
    pub rows: Vec<Vec<Option<String>>>,
    /// The same rows as the server sent them (e.g. TIMELINE_HISTORY content, which is not
    /// converted to any encoding).
    pub raw_rows: Vec<Vec<Option<Bytes>>>,
    /// CommandComplete's tag (`SELECT`, `IDENTIFY_SYSTEM`, `SHOW`, ...).
    pub command_tag: String,
}

impl ResultSet {
    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The value of column `name` in row `row`; `None` for NULL or when absent.
    pub fn get(&self, row: usize, name: &str) -> Option<&str> {
        let i = self.column_index(name)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }

    /// The only row, or a protocol error naming `what`.
    pub fn single_row(&self, what: &str) -> Result<&[Option<String>]> {
        match self.rows.as_slice() {
            [row] => Ok(row),
            rows => Err(PgWireError::Protocol(format!("{what} returned {} rows, expected one", rows.len()))),
        }
    }
}

/// A step of the server's answer to a query, as read by [`Connection::next_response`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A complete result set (or a command without rows: no columns, only the tag).
    ResultSet(ResultSet),
    /// COPY OUT started: read the data with [`Connection::next_copy_data`].
    CopyOut(CopyFormat),
    /// COPY IN started (this client does not send COPY data; answer with CopyFail).
    CopyIn(CopyFormat),
    /// COPY BOTH started (START_REPLICATION).
    CopyBoth(CopyFormat),
    /// ReadyForQuery: the query is done.
    Ready,
}

/// What START_REPLICATION (or another COPY BOTH command) answered.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyBothStart {
    /// The server is streaming: read with `next_copy_data`, answer with `send_copy_data`, end
    /// with `send_copy_done` and then `read_results`.
    Streaming,
    /// No COPY happened (e.g. START_REPLICATION exactly at the end of an old timeline): the
    /// result sets up to ReadyForQuery.
    Completed(Vec<ResultSet>),
}

fn log_notice(n: &ServerError) {
    match n.severity.as_str() {
        "WARNING" => tracing::warn!(code = %n.code, "server: {}", n.message),
        "DEBUG" | "LOG" => tracing::debug!(code = %n.code, "server: {}", n.message),
        _ => tracing::info!(code = %n.code, "server: {}", n.message),
    }
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct ConnectionReader {
    rd: ReadHalf<Stream>,
    buf: BytesMut,
    parameters: HashMap<String, String>,
    peer: Arc<str>,
    backend_key: Option<(i32, i32)>,
    tls: bool,
    target: Option<Target>,
}

impl ConnectionReader {
    /// The next message from the server. `ParameterStatus` is recorded (see
    /// [`ConnectionReader::parameter`]) and not returned; everything else is, including
    /// notices and errors.
    ///
    /// Cancel-safe: dropping the future loses no data, so it can be used in `tokio::select!`.
    pub async fn next_message(&mut self) -> Result<BackendMessage> {
        loop {
            match decode(&mut self.buf)? {
                Some(BackendMessage::ParameterStatus { name, value }) => {
                    self.parameters.insert(name, value);
                }
                Some(m) => return Ok(m),
                None => {
                    if self.buf.capacity() - self.buf.len() < 8192 {
                        self.buf.reserve(64 * 1024);
                    }
                    let n = self.rd.read_buf(&mut self.buf).await.map_err(|e| self.read_error(e))?;
                    if n == 0 {
                        return Err(PgWireError::Closed(format!("connection to {}", self.peer)));
                    }
                }
            }
        }
    }

    fn read_error(&self, e: io::Error) -> PgWireError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PgWireError::Closed(format!("connection to {}", self.peer))
        } else {
            PgWireError::io(format!("reading from {}", self.peer), e)
        }
    }

    /// The next CopyData payload, or `None` at the server's CopyDone. Notices are logged and
    /// skipped. An ErrorResponse ends the COPY: the rest up to ReadyForQuery is read and the
    /// error returned.
    ///
    /// Cancel-safe like [`ConnectionReader::next_message`], except while it reads the rest of
    /// the answer after an error.
    pub async fn next_copy_data(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.next_message().await? {
                BackendMessage::CopyData(b) => return Ok(Some(b)),
                BackendMessage::CopyDone => return Ok(None),
                BackendMessage::Notice(n) => log_notice(&n),
                BackendMessage::Error(e) => {
                    self.drain_until_ready().await;
                    return Err(PgWireError::from(e));
                }
                other => return Err(unexpected(&other, "during COPY")),
            }
        }
    }

    /// Reads and drops messages up to ReadyForQuery (after an error), or until the server
    /// closes the connection.
    async fn drain_until_ready(&mut self) {
        loop {
            match self.next_message().await {
                Ok(BackendMessage::ReadyForQuery(_)) | Err(_) => return,
                Ok(BackendMessage::Notice(n)) => log_notice(&n),
                Ok(_) => {}
            }
        }
    }

    /// A run-time parameter the server reported (`server_version`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Joins the halves again.
    pub fn unsplit(self, writer: ConnectionWriter) -> Result<Connection> {
        if !self.rd.is_pair_of(&writer.wr) {
            return Err(PgWireError::Protocol("unsplit: the halves belong to different connections".into()));
        }
        Ok(Connection { reader: self, writer })
    }
}

fn unexpected(m: &BackendMessage, when: &str) -> PgWireError {
    let name = match m {
        BackendMessage::CopyData(_) => "CopyData".to_string(),
        BackendMessage::DataRow(_) => "DataRow".to_string(),
        other => format!("{other:?}"),
    };
    PgWireError::Protocol(format!("unexpected {name} {when}"))
}

/// The sending half of a connection. Each method writes one message and flushes it; a method
/// interrupted by cancellation may leave a partial message, so do not cancel them.
#[derive(Debug)]
pub struct ConnectionWriter {
    wr: WriteHalf<Stream>,
    buf: BytesMut,
    peer: Arc<str>,
}

impl ConnectionWriter {
    async fn flush_buf(&mut self) -> Result<()> {
        let r = async {
            self.wr.write_all(&self.buf).await?;
            self.wr.flush().await
        }
        .await;
        self.buf.clear();
        r.map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                PgWireError::Closed(format!("connection to {}", self.peer))
            } else {
                PgWireError::io(format!("writing to {}", self.peer), e)
            }
        })
    }

    fn encode_err(e: io::Error) -> PgWireError {
        PgWireError::Protocol(format!("cannot encode message: {e}"))
    }

    /// Sends a simple Query.
    pub async fn send_query(&mut self, query: &str) -> Result<()> {
        frontend::query(query, &mut self.buf).map_err(Self::encode_err)?;
        self.flush_buf().await
    }

    /// Sends one CopyData message.
    pub async fn send_copy_data(&mut self, data: &[u8]) -> Result<()> {
        frontend::CopyData::new(data).map_err(Self::encode_err)?.write(&mut self.buf);
        self.flush_buf().await
    }

    /// Sends CopyDone: ends our side of a COPY BOTH (or a COPY IN).
    pub async fn send_copy_done(&mut self) -> Result<()> {
        frontend::copy_done(&mut self.buf);
        self.flush_buf().await
    }

    /// Sends CopyFail with a reason (aborts a COPY IN).
    pub async fn send_copy_fail(&mut self, reason: &str) -> Result<()> {
        frontend::copy_fail(reason, &mut self.buf).map_err(Self::encode_err)?;
        self.flush_buf().await
    }

    /// Sends Terminate and shuts the stream down.
    pub async fn terminate(mut self) -> Result<()> {
        frontend::terminate(&mut self.buf);
        self.flush_buf().await?;
        let _ = self.wr.shutdown().await;
        Ok(())
    }

    pub(crate) async fn send_raw(&mut self, f: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> Result<()> {
        f(&mut self.buf).map_err(Self::encode_err)?;
        self.flush_buf().await
    }
}

impl crate::auth::Channel for Connection {
    fn is_tls(&self) -> bool {
        self.reader.tls
    }
    async fn next_message(&mut self) -> Result<BackendMessage> {
        self.reader.next_message().await
    }
    async fn send_raw(&mut self, f: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> Result<()> {
        self.writer.send_raw(f).await
    }
}

/// An open, authenticated connection, ready for a query.
#[derive(Debug)]
pub struct Connection {
    reader: ConnectionReader,
    writer: ConnectionWriter,
}

/// How one connection attempt handles TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsAttempt {
    Plain,
    /// Ask; continue in plaintext if the server says no.
    IfOffered,
    /// Ask; fail if the server says no.
    Required,
}

impl Connection {
    /// Connects to the first server of `params.targets` that accepts us, like libpq: TLS per
    /// `sslmode`, startup with `user`, `database` (except for physical replication),
    /// `replication`, `application_name`, `options`, `client_encoding=UTF8`, then
    /// authentication. `connect_timeout` bounds each server's attempt.
    pub async fn connect(params: &ConnParams) -> Result<Connection> {
        // TLS is only for TCP: a socket-only connection needs no root certificate.
        let any_tcp = params.targets.iter().any(|t| matches!(t.host, Host::Tcp(_)));
        let tls = if any_tcp { TlsSetup::new(params)? } else { None };
        let mut last = None;
        for target in &params.targets {
            let attempt = Self::connect_target(params, target, tls.as_ref());
            let result = match params.connect_timeout {
                Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
                    Err(PgWireError::Timeout { context: format!("connection to {target}"), seconds: t.as_secs() })
                }),
                None => attempt.await,
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e) => {
                    if params.targets.len() > 1 {
                        tracing::debug!("{e}; trying the next host");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PgWireError::Config("no host to connect to".into())))
    }

    /// libpq's sslmode fallbacks for one server: `allow` retries with TLS and `prefer` without
    /// it when the first attempt is refused by pg_hba (SQLSTATE 28000, e.g. `hostssl` or
    /// `hostnossl` lines); `prefer` also falls back to plaintext when the handshake fails.
    async fn connect_target(params: &ConnParams, target: &Target, tls: Option<&TlsSetup>) -> Result<Connection> {
        let unix = matches!(target.host, Host::Unix(_));
        let rejected_by_hba = |e: &PgWireError| e.sqlstate() == Some("28000");
        match (params.sslmode, tls) {
            (_, None) | (SslMode::Disable, _) => Self::attempt(params, target, None, TlsAttempt::Plain).await,
            _ if unix => Self::attempt(params, target, None, TlsAttempt::Plain).await,
            (SslMode::Allow, Some(tls)) => match Self::attempt(params, target, None, TlsAttempt::Plain).await {
                Err(e) if rejected_by_hba(&e) => {
                    tracing::debug!("{e}; retrying with TLS (sslmode=allow)");
                    Self::attempt(params, target, Some(tls), TlsAttempt::Required).await
                }
                r => r,
            },
            (SslMode::Prefer, Some(tls)) => match Self::attempt(params, target, Some(tls), TlsAttempt::IfOffered).await
            {
                Err(e @ PgWireError::Tls { .. }) => {
                    tracing::warn!("{e}; retrying without TLS (sslmode=prefer)");
                    Self::attempt(params, target, None, TlsAttempt::Plain).await
                }
                Err(e) if rejected_by_hba(&e) => {
                    tracing::debug!("{e}; retrying without TLS (sslmode=prefer)");
                    Self::attempt(params, target, None, TlsAttempt::Plain).await
                }
                r => r,
            },
            (_, Some(tls)) => Self::attempt(params, target, Some(tls), TlsAttempt::Required).await,
        }
    }

    async fn attempt(
        params: &ConnParams,
        target: &Target,
        tls: Option<&TlsSetup>,
        mode: TlsAttempt,
    ) -> Result<Connection> {
        let mut stream = Stream::open(target).await?;
        if let (Some(tls), TlsAttempt::IfOffered | TlsAttempt::Required) = (tls, mode) {
            stream = match negotiate_tls(stream, target, tls).await? {
                SslResponse::Tls(s) => s,
                SslResponse::Refused(_) if mode == TlsAttempt::Required => {
                    return Err(PgWireError::SslRefused(format!("connection to {target}")));
                }
                SslResponse::Refused(s) => s,
            };
        }
        let tls_in_use = stream.is_tls();
        let end_point = stream.tls_server_end_point();
        let mut conn = Connection::from_stream(stream, target.to_string());
        conn.reader.tls = tls_in_use;
        conn.reader.target = Some(target.clone());

        let mut startup: Vec<(&str, &str)> = vec![("user", &params.user)];
        match params.replication {
            Replication::Physical => startup.push(("replication", "true")),
            Replication::Database => {
                startup.push(("database", &params.dbname));
                startup.push(("replication", "database"));
            }
            Replication::Off => startup.push(("database", &params.dbname)),
        }
        if let Some(app) = &params.application_name {
            startup.push(("application_name", app));
        }
        if let Some(o) = &params.options {
            startup.push(("options", o));
        }
        startup.push(("client_encoding", "UTF8"));
        conn.writer.send_raw(|buf| frontend::startup_message(startup.iter().copied(), buf)).await?;

        authenticate(&mut conn, params, target, end_point).await?;
        conn.read_until_ready_after_auth().await?;
        Ok(conn)
    }

    /// BackendKeyData, ParameterStatus and notices until ReadyForQuery.
    async fn read_until_ready_after_auth(&mut self) -> Result<()> {
        loop {
            match self.reader.next_message().await? {
                BackendMessage::ReadyForQuery(_) => return Ok(()),
                BackendMessage::BackendKeyData { process_id, secret_key } => {
                    self.reader.backend_key = Some((process_id, secret_key))
                }
                BackendMessage::Notice(n) => log_notice(&n),
                BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized } => {
                    tracing::debug!(newest_minor, ?unrecognized, "server negotiated the protocol version");
                }
                BackendMessage::Error(e) => return Err(PgWireError::from(e)),
                other => return Err(unexpected(&other, "during startup")),
            }
        }
    }

    pub(crate) fn from_stream(stream: Stream, peer: String) -> Connection {
        let peer: Arc<str> = Arc::from(peer);
        let (rd, wr) = tokio::io::split(stream);
        Connection {
            reader: ConnectionReader {
                rd,
                buf: BytesMut::with_capacity(64 * 1024),
                parameters: HashMap::new(),
                peer: peer.clone(),
                backend_key: None,
                tls: false,
                target: None,
            },
            writer: ConnectionWriter { wr, buf: BytesMut::with_capacity(1024), peer },
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.reader.tls
    }

    /// The server this connection reached.
    pub fn target(&self) -> Option<&Target> {
        self.reader.target.as_ref()
    }

    /// The backend's process id (BackendKeyData).
    pub fn backend_pid(&self) -> Option<i32> {
        self.reader.backend_key.map(|k| k.0)
    }

    /// A run-time parameter the server reported (`server_version`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.reader.parameter(name)
    }

    /// Splits the connection for concurrent reading and writing (e.g. during
    /// START_REPLICATION: one task receives WAL, another sends status updates).
    pub fn split(self) -> (ConnectionReader, ConnectionWriter) {
        (self.reader, self.writer)
    }

    /// See [`ConnectionReader::next_message`].
    pub async fn next_message(&mut self) -> Result<BackendMessage> {
        self.reader.next_message().await
    }

    /// See [`ConnectionReader::next_copy_data`].
    pub async fn next_copy_data(&mut self) -> Result<Option<Bytes>> {
        self.reader.next_copy_data().await
    }

    /// Sends a simple Query; read the answer with `next_response`/`next_message`.
    pub async fn send_query(&mut self, query: &str) -> Result<()> {
        self.writer.send_query(query).await
    }

    /// See [`ConnectionWriter::send_copy_data`].
    pub async fn send_copy_data(&mut self, data: &[u8]) -> Result<()> {
        self.writer.send_copy_data(data).await
    }

    /// See [`ConnectionWriter::send_copy_done`].
    pub async fn send_copy_done(&mut self) -> Result<()> {
        self.writer.send_copy_done().await
    }

    /// Sends Terminate and closes the connection.
    pub async fn terminate(self) -> Result<()> {
        self.writer.terminate().await
    }

    /// The next step of the answer: a whole result set, the start of a COPY, or
    /// ReadyForQuery. Notices are logged. On an ErrorResponse, the rest of the answer up to
    /// ReadyForQuery is read (so the connection stays usable) and the error returned.
    ///
    /// Not cancel-safe (a partly read result set would be lost).
    pub async fn next_response(&mut self) -> Result<Response> {
        let mut current: Option<ResultSet> = None;
        loop {
            match self.reader.next_message().await? {
                BackendMessage::RowDescription(columns) => {
                    current = Some(ResultSet { columns, ..Default::default() });
                }
                BackendMessage::DataRow(values) => {
                    let rs = current
                        .as_mut()
                        .ok_or_else(|| PgWireError::Protocol("DataRow without RowDescription".into()))?;
                    rs.rows.push(
                        values.iter().map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())).collect(),
                    );
                    rs.raw_rows.push(values);
                }
                BackendMessage::CommandComplete(tag) => {
                    let mut rs = current.take().unwrap_or_default();
                    rs.command_tag = tag;
                    return Ok(Response::ResultSet(rs));
                }
                BackendMessage::EmptyQueryResponse => {}
                BackendMessage::CopyOutResponse(f) => return Ok(Response::CopyOut(f)),
                BackendMessage::CopyInResponse(f) => return Ok(Response::CopyIn(f)),
                BackendMessage::CopyBothResponse(f) => return Ok(Response::CopyBoth(f)),
                BackendMessage::ReadyForQuery(_) => return Ok(Response::Ready),
                BackendMessage::Notice(n) => log_notice(&n),
                BackendMessage::Notification { channel, .. } => tracing::debug!(channel, "notification ignored"),
                BackendMessage::Error(e) => {
                    self.reader.drain_until_ready().await;
                    return Err(PgWireError::from(e));
                }
                other => return Err(unexpected(&other, "in a query response")),
            }
        }
    }

    /// Deals with a COPY the caller did not ask for, leaving the connection usable: COPY IN
    /// is refused with CopyFail, COPY OUT is read to its end, COPY BOTH is ended with
    /// CopyDone.
    async fn skip_copy(&mut self, r: &Response) -> Result<()> {
        match r {
            Response::CopyIn(_) => self.writer.send_copy_fail("COPY FROM STDIN is not supported by this client").await,
            Response::CopyOut(_) => {
                while self.reader.next_copy_data().await?.is_some() {}
                Ok(())
            }
            Response::CopyBoth(_) => {
                self.writer.send_copy_done().await?;
                while self.reader.next_copy_data().await?.is_some() {}
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads result sets up to ReadyForQuery (e.g. after a COPY ended). A COPY started here
    /// is an error (after it was skipped, so the connection stays usable).
    pub async fn read_results(&mut self) -> Result<Vec<ResultSet>> {
        let mut out = Vec::new();
        let mut stray_copy = None;
        loop {
            match self.next_response().await? {
                Response::ResultSet(rs) => out.push(rs),
                Response::Ready => break,
                r => {
                    self.skip_copy(&r).await?;
                    stray_copy.get_or_insert(r);
                }
            }
        }
        match stray_copy {
            Some(r) => Err(PgWireError::Protocol(format!(
                "the command started a COPY ({r:?}): use copy_out or start_copy_both for it"
            ))),
            None => Ok(out),
        }
    }

    /// Runs one simple query (possibly several `;`-separated statements) and returns its
    /// result sets. Server errors come back as [`PgWireError::Server`] with the connection
    /// still usable.
    pub async fn simple_query(&mut self, query: &str) -> Result<Vec<ResultSet>> {
        self.send_query(query).await?;
        self.read_results().await
    }

    /// Sends a command that answers with COPY OUT (`BASE_BACKUP` on 15+, `COPY ... TO
    /// STDOUT`). Result sets before the COPY are in [`CopyOut::preceding`]; read the data
    /// with [`CopyOut::next`], then [`CopyOut::finish`] for what follows.
    ///
    /// For answers with several COPY OUTs (BASE_BACKUP on 13/14) use `send_query` with
    /// `next_response` and `next_copy_data` instead.
    pub async fn copy_out(&mut self, query: &str) -> Result<CopyOut<'_>> {
        self.send_query(query).await?;
        let mut preceding = Vec::new();
        loop {
            match self.next_response().await? {
                Response::ResultSet(rs) => preceding.push(rs),
                Response::CopyOut(_) => return Ok(CopyOut { conn: self, preceding, done: false, failed: false }),
                Response::Ready => {
                    return Err(PgWireError::Protocol("the command completed without starting COPY OUT".into()))
                }
                r => {
                    self.skip_copy(&r).await?;
                    self.read_results().await.ok();
                    return Err(PgWireError::Protocol(format!("expected COPY OUT, the server started {r:?}")));
                }
            }
        }
    }

    /// Sends a command that answers with COPY BOTH (START_REPLICATION). Result sets before
    /// it are not expected; a command that completes without COPY returns its result sets.
    pub async fn start_copy_both(&mut self, query: &str) -> Result<CopyBothStart> {
        self.send_query(query).await?;
        let mut results = Vec::new();
        loop {
            match self.next_response().await? {
                Response::CopyBoth(_) => return Ok(CopyBothStart::Streaming),
                Response::ResultSet(rs) => results.push(rs),
                Response::Ready => return Ok(CopyBothStart::Completed(results)),
                r => {
                    self.skip_copy(&r).await?;
                    self.read_results().await.ok();
                    return Err(PgWireError::Protocol(format!("expected COPY BOTH, the server started {r:?}")));
                }
            }
        }
    }

    /// Waits at most `timeout` for the next message (convenience for tests and probes).
    pub async fn next_message_timeout(&mut self, timeout: Duration) -> Result<Option<BackendMessage>> {
        match tokio::time::timeout(timeout, self.reader.next_message()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// A COPY OUT in progress; see [`Connection::copy_out`].
#[derive(Debug)]
pub struct CopyOut<'a> {
    conn: &'a mut Connection,
    /// Result sets the server sent before the COPY (BASE_BACKUP: start position, tablespaces).
    pub preceding: Vec<ResultSet>,
    done: bool,
    failed: bool,
}

impl CopyOut<'_> {
    /// The next CopyData payload; `None` at CopyDone. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let r = self.conn.reader.next_copy_data().await;
        match &r {
            Ok(Some(_)) => {}
            Ok(None) => self.done = true,
            Err(_) => {
                self.done = true;
                self.failed = true;
            }
        }
        r
    }

    /// Skips the rest of the data and returns the result sets up to ReadyForQuery
    /// (BASE_BACKUP: the end position).
    pub async fn finish(mut self) -> Result<Vec<ResultSet>> {
        while self.next().await?.is_some() {}
        if self.failed {
            return Err(PgWireError::Protocol("the COPY already failed".into()));
        }
        self.conn.read_results().await
    }
}
