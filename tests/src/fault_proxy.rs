//! A fault-injecting HTTP proxy in front of a real S3 server: what a flaky network or an
//! overloaded object store does to requests, on demand. Each request (HTTP/1.1, keep-alive,
//! `Content-Length` or chunked bodies) is passed on to the real server, or answered or cut by
//! a [`Fault`] that a rule chooses from its method, path and sequence number. Counts what it
//! injected, so tests and the fault campaign can report figures.
//!
//! Faults: an S3 error status (500 InternalError, 503 SlowDown) without reaching the server;
//! a connection reset before any answer (the server may or may not have seen the request:
//! both are offered); a reset or a clean close in the middle of the response body (the
//! server did the work, the client saw a truncated answer); a delay before the answer (the
//! client's timeout); a response trickled slowly.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passed through unchanged.
    Pass,
    /// Answered with this status and S3 error code, without reaching the server.
    Status(u16, &'static str),
    /// The connection is reset before the request reaches the server.
    ResetBefore,
    /// The request reaches the server (which acts on it), then the connection is reset
    /// before any answer: the client cannot know whether it succeeded.
    ResetAfter,
    /// The answer's headers and part of its body, then a reset.
    ResetMidBody,
    /// The answer's headers (with the full length) and half of its body, then a clean close.
    Truncate,
    /// The answer is held back this long before it is sent.
    Delay(Duration),
    /// The answer's body is sent in small pieces, this long apart.
    Trickle(Duration),
}

impl Fault {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Status(500, _) => "500",
            Fault::Status(503, _) => "503 SlowDown",
            Fault::Status(..) => "status",
            Fault::ResetBefore => "reset before",
            Fault::ResetAfter => "reset after",
            Fault::ResetMidBody => "reset mid-body",
            Fault::Truncate => "truncated",
            Fault::Delay(_) => "delay",
            Fault::Trickle(_) => "slow",
        }
    }
}

/// One request as the rule sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, `HEAD`, `DELETE`, `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Position among all requests the proxy has seen, from 0.
    pub seq: u64,
}

/// Chooses the fault for each request.
pub type Rule = Box<dyn Fn(&Request) -> Fault + Send + Sync>;

struct Shared {
    upstream: SocketAddr,
    rule: Mutex<Rule>,
    seq: AtomicU64,
    injected: Mutex<Vec<(String, String, &'static str)>>,
    stop: AtomicBool,
}

/// A running proxy (stops accepting when dropped).
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as the S3 endpoint.
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("endpoint", &self.endpoint).finish()
    }
}

impl FaultProxy {
    /// A proxy to the server at `upstream` (`http://host:port`), passing everything through.
    pub fn start(upstream: &str) -> FaultProxy {
        let addr: SocketAddr = upstream.trim_start_matches("http://").trim_end_matches('/').parse().expect("host:port");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: addr,
            rule: Mutex::new(Box::new(|_| Fault::Pass)),
            seq: AtomicU64::new(0),
            injected: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(&s, conn);
                });
            }
        });
        FaultProxy { endpoint, shared }
    }

    /// Replaces the rule.
    pub fn set_rule(&self, rule: impl Fn(&Request) -> Fault + Send + Sync + 'static) {
        *self.shared.rule.lock().unwrap() = Box::new(rule);
    }

    /// Passes everything through from now on.
    pub fn pass(&self) {
        self.set_rule(|_| Fault::Pass);
    }

    /// Every fault injected so far: (method, path, fault name).
    pub fn injected(&self) -> Vec<(String, String, &'static str)> {
        self.shared.injected.lock().unwrap().clone()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.shared.seq.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// The faults a flaky store or network produces that a client must ride out by retrying
/// (error statuses, resets before and after the server acted, answers cut off).
pub fn transient_faults() -> Vec<Fault> {
    vec![
        Fault::Status(500, "InternalError"),
        Fault::Status(503, "SlowDown"),
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::ResetMidBody,
        Fault::Truncate,
    ]
}

/// A rule that injects one of `faults` into each request for which `applies` holds, with
/// probability `rate`, from a deterministic sequence seeded with `seed`.
pub fn random_rule(
    seed: u64,
    rate: f64,
    faults: Vec<Fault>,
    applies: impl Fn(&Request) -> bool + Send + Sync + 'static,
) -> impl Fn(&Request) -> Fault + Send + Sync + 'static {
    move |r: &Request| {
        if !applies(r) || faults.is_empty() {
            return Fault::Pass;
        }
        let mut x = seed ^ r.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        if (x % 1_000_000) as f64 >= rate * 1_000_000.0 {
            return Fault::Pass;
        }
        faults[((x >> 20) % faults.len() as u64) as usize]
    }
}

/// A parsed message head (request or response) and its raw bytes.
struct Head {
    raw: Vec<u8>,
    first: String,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first = String::new();
    let (mut content_length, mut chunked, mut close) = (None, false, false);
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if raw.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first.is_empty() {
            first = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        let lower = text.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    Ok(Some(Head { raw, first, content_length, chunked, close }))
}

/// Reads a body as framed by `head` (`none`: there is none, e.g. the answer to HEAD).
fn read_body(r: &mut impl BufRead, head: &Head, none: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if none {
        return Ok(body);
    }
    if head.chunked {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            body.extend_from_slice(&line);
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&line).trim().split(';').next().unwrap_or("0"), 16)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    if let Some(n) = head.content_length {
        body.resize(n as usize, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

fn reset(conn: &TcpStream) {
    let _ = socket_linger_zero(conn);
    let _ = conn.shutdown(Shutdown::Both);
}

/// SO_LINGER 0: closing sends RST instead of FIN.
#[allow(unsafe_code)]
fn socket_linger_zero(conn: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let r = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn s3_error(status: u16, code: &str) -> Vec<u8> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the fault \
         proxy</Message></Error>"
    );
    let reason = if status == 503 { "Slow Down" } else { "Internal Server Error" };
    format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{xml}", xml.len())
        .into_bytes()
}

fn serve(s: &Shared, client: TcpStream) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let upstream = TcpStream::connect(s.upstream)?;
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    let mut to_upstream = upstream;
    loop {
        let Some(req) = read_head(&mut from_client)? else { return Ok(()) };
        let body = read_body(&mut from_client, &req, false)?;
        let mut words = req.first.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let seq = s.seq.fetch_add(1, Ordering::SeqCst);
        let r = Request { method: method.clone(), path: path.clone(), seq };
        let fault = (s.rule.lock().unwrap())(&r);
        if fault != Fault::Pass {
            s.injected.lock().unwrap().push((method.clone(), path.clone(), fault.name()));
        }
        match fault {
            Fault::Status(status, code) => {
                to_client.write_all(&s3_error(status, code))?;
                continue;
            }
            Fault::ResetBefore => {
                reset(&to_client);
                return Ok(());
            }
            _ => {}
        }
        to_upstream.write_all(&req.raw)?;
        to_upstream.write_all(&body)?;
        // Interim answers (100 Continue) go straight through.
        let resp = loop {
            let Some(h) = read_head(&mut from_upstream)? else { return Ok(()) };
            if h.first.split_whitespace().nth(1) == Some("100") {
                to_client.write_all(&h.raw)?;
                continue;
            }
            break h;
        };
        let status = resp.first.split_whitespace().nth(1).unwrap_or("");
        let no_body = method == "HEAD" || status == "204" || status == "304";
        let rbody = read_body(&mut from_upstream, &resp, no_body)?;
        match fault {
            Fault::ResetAfter => {
                reset(&to_client);
                return Ok(());
            }
            Fault::ResetMidBody | Fault::Truncate if !rbody.is_empty() => {
                to_client.write_all(&resp.raw)?;
                to_client.write_all(&rbody[..rbody.len() / 2])?;
                to_client.flush()?;
                if fault == Fault::ResetMidBody {
                    reset(&to_client);
                } else {
                    let _ = to_client.shutdown(Shutdown::Both);
                }
                return Ok(());
            }
            Fault::ResetMidBody | Fault::Truncate => {
                reset(&to_client);
                return Ok(());
            }
            Fault::Delay(d) => {
                std::thread::sleep(d);
                to_client.write_all(&resp.raw)?;
                to_client.write_all(&rbody)?;
            }
            Fault::Trickle(d) => {
                to_client.write_all(&resp.raw)?;
                for piece in rbody.chunks(4096) {
                    to_client.write_all(piece)?;
                    to_client.flush()?;
                    std::thread::sleep(d);
                }
            }
            _ => {
                to_client.write_all(&resp.raw)?;
                to_client.write_all(&rbody)?;
            }
        }
        if resp.close || req.close {
            return Ok(());
        }
    }
}
