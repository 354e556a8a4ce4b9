//! Backend message framing: turns the bytes read from the socket into [`BackendMessage`]s.
//!
//! Most messages are parsed by `postgres_protocol::message::backend::Message::parse`, but it
//! does not know CopyBothResponse (`'W'`, the answer to START_REPLICATION) nor
//! NegotiateProtocolVersion (`'v'`), so those are parsed here; CopyData (`'d'`) is split off
//! the read buffer without copying, since it carries all WAL and backup bytes. The decoder is
//! a pure function over a `BytesMut` so that framing (including messages split across reads)
//! is unit-tested without a server.

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, Message};

use crate::error::{PgWireError, Result, ServerError};

/// The largest message accepted from the server (PostgreSQL's own limit for most messages is
/// 1 GB; CopyData in replication is at most 128 kB + header).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Most room reserved ahead for an incomplete message: enough for any CopyData of the
/// replication stream in one go, while a larger message's buffer grows as its bytes arrive
/// (five bytes of a garbled reply must not allocate a gigabyte, which aborts the process
/// where memory is not overcommitted).
const MAX_RESERVE_AHEAD: usize = 1 << 20;

/// Overall format of a COPY, from CopyOut/CopyIn/CopyBothResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Textual rows (what replication COPY streams announce).
    Text,
    /// Binary.
    Binary,
}

/// An authentication request (`'R'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    Cleartext,
    /// Send the MD5 hash of password, user and this salt.
    Md5([u8; 4]),
    /// Start SASL with one of these mechanisms.
    Sasl(Vec<String>),
    /// SASL server challenge.
    SaslContinue(Bytes),
    /// SASL server's final message.
    SaslFinal(Bytes),
    /// A method this client does not implement (GSS, SSPI, Kerberos, SCM).
    Unsupported(&'static str),
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BackendMessage {
    /// `'R'`.
    Authentication(AuthRequest),
    /// `'K'`: the key for cancel requests.
    BackendKeyData {
        /// Backend process id.
        process_id: i32,
        /// Secret key.
        secret_key: i32,
    },
    /// `'S'`: a run-time parameter's value (server_version, ...).
    ParameterStatus {
        /// Parameter name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `'v'`: the server speaks an older minor protocol version or ignored some options.
    NegotiateProtocolVersion {
        /// Newest minor version the server supports.
        newest_minor: i32,
        /// Protocol options it did not recognize.
        unrecognized: Vec<String>,
    },
    /// `'Z'` with the transaction status byte (`I`, `T`, `E`).
    ReadyForQuery(u8),
    /// `'T'`.
    RowDescription(Vec<Column>),
    /// `'D'`: one row, `None` for NULL, values in text format.
    DataRow(Vec<Option<Bytes>>),
    /// `'C'` with the command tag.
    CommandComplete(String),
    /// `'I'`: the query string was empty.
    EmptyQueryResponse,
    /// `'G'`.
    CopyInResponse(CopyFormat),
    /// `'H'`.
    CopyOutResponse(CopyFormat),
    /// `'W'` (START_REPLICATION).
    CopyBothResponse(CopyFormat),
    /// `'d'`: the payload, split off the read buffer without a copy.
    CopyData(Bytes),
    /// `'c'`.
    CopyDone,
    /// `'N'`.
    Notice(ServerError),
    /// `'E'`.
    Error(ServerError),
    /// `'A'`: LISTEN/NOTIFY.
    Notification {
        /// Sending backend.
        process_id: i32,
        /// Channel.
        channel: String,
        /// Payload.
        payload: String,
    },
}

fn protocol(msg: impl Into<String>) -> PgWireError {
    PgWireError::Protocol(msg.into())
}

fn io_protocol(e: std::io::Error) -> PgWireError {
    protocol(format!("malformed message: {e}"))
}

fn copy_format(body: &[u8], what: &str) -> Result<CopyFormat> {
    match body.first() {
        Some(0) => Ok(CopyFormat::Text),
        Some(1) => Ok(CopyFormat::Binary),
        _ => Err(protocol(format!("malformed {what}"))),
    }
}

fn cstr(buf: &mut Bytes, what: &str) -> Result<String> {
    let end = buf.iter().position(|b| *b == 0).ok_or_else(|| protocol(format!("unterminated string in {what}")))?;
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Ok(s)
}

/// Takes one complete message off the front of `buf`; `Ok(None)` when more bytes are needed
/// (then `buf` is untouched).
pub fn decode(buf: &mut BytesMut) -> Result<Option<BackendMessage>> {
    let Some(header) = backend::Header::parse(buf).map_err(io_protocol)? else {
        return Ok(None);
    };
    let len = header.len() as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(protocol(format!("message of {len} bytes (tag {:?}) is too large", header.tag() as char)));
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve((total - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    match header.tag() {
        b'd' => {
            let mut frame = buf.split_to(total);
            frame.advance(5);
            return Ok(Some(BackendMessage::CopyData(frame.freeze())));
        }
        b'W' => {
            let frame = buf.split_to(total);
            return Ok(Some(BackendMessage::CopyBothResponse(copy_format(&frame[5..], "CopyBothResponse")?)));
        }
        b'v' => {
            let mut body = buf.split_to(total).freeze();
            body.advance(5);
            if body.len() < 8 {
                return Err(protocol("malformed NegotiateProtocolVersion"));
            }
            let newest_minor = body.get_i32();
            let n = body.get_i32().max(0);
            let mut unrecognized = Vec::new();
            for _ in 0..n {
                unrecognized.push(cstr(&mut body, "NegotiateProtocolVersion")?);
            }
            return Ok(Some(BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized }));
        }
        _ => {}
    }
    let tag = header.tag();
    let msg = match Message::parse(buf).map_err(io_protocol)? {
        Some(m) => m,
        None => return Ok(None),
    };
    Ok(Some(match msg {
        Message::AuthenticationOk => BackendMessage::Authentication(AuthRequest::Ok),
        Message::AuthenticationCleartextPassword => BackendMessage::Authentication(AuthRequest::Cleartext),
        Message::AuthenticationMd5Password(b) => BackendMessage::Authentication(AuthRequest::Md5(b.salt())),
        Message::AuthenticationSasl(b) => {
            let mechs: Vec<String> = b.mechanisms().map(|m| Ok(m.to_string())).collect().map_err(io_protocol)?;
            BackendMessage::Authentication(AuthRequest::Sasl(mechs))
        }
        Message::AuthenticationSaslContinue(b) => {
            BackendMessage::Authentication(AuthRequest::SaslContinue(Bytes::copy_from_slice(b.data())))
        }
        Message::AuthenticationSaslFinal(b) => {
            BackendMessage::Authentication(AuthRequest::SaslFinal(Bytes::copy_from_slice(b.data())))
        }
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
            BackendMessage::Authentication(AuthRequest::Unsupported("GSSAPI"))
        }
        Message::AuthenticationSspi => BackendMessage::Authentication(AuthRequest::Unsupported("SSPI")),
        Message::AuthenticationKerberosV5 => BackendMessage::Authentication(AuthRequest::Unsupported("Kerberos V5")),
        Message::AuthenticationScmCredential => {
            BackendMessage::Authentication(AuthRequest::Unsupported("SCM credentials"))
        }
        Message::BackendKeyData(b) => {
            BackendMessage::BackendKeyData { process_id: b.process_id(), secret_key: b.secret_key() }
        }
        Message::ParameterStatus(b) => BackendMessage::ParameterStatus {
            name: b.name().map_err(io_protocol)?.to_string(),
            value: b.value().map_err(io_protocol)?.to_string(),
        },
        Message::ReadyForQuery(b) => BackendMessage::ReadyForQuery(b.status()),
        Message::RowDescription(b) => {
            let cols: Vec<Column> = b
                .fields()
                .map(|f| Ok(Column { name: f.name().to_string(), type_oid: f.type_oid() }))
                .collect()
                .map_err(io_protocol)?;
            BackendMessage::RowDescription(cols)
        }
        Message::DataRow(b) => {
            let storage = b.buffer_bytes().clone();
            let values: Vec<Option<Bytes>> =
                b.ranges().map(|r| Ok(r.map(|r| storage.slice(r)))).collect().map_err(io_protocol)?;
            BackendMessage::DataRow(values)
        }
        Message::CommandComplete(b) => BackendMessage::CommandComplete(b.tag().map_err(io_protocol)?.to_string()),
        Message::EmptyQueryResponse => BackendMessage::EmptyQueryResponse,
        Message::CopyInResponse(b) => {
            BackendMessage::CopyInResponse(if b.format() == 0 { CopyFormat::Text } else { CopyFormat::Binary })
        }
        Message::CopyOutResponse(b) => {
            BackendMessage::CopyOutResponse(if b.format() == 0 { CopyFormat::Text } else { CopyFormat::Binary })
        }
        Message::CopyDone => BackendMessage::CopyDone,
        Message::CopyData(b) => BackendMessage::CopyData(b.into_bytes()),
        Message::ErrorResponse(b) => BackendMessage::Error(server_error(b.fields())?),
        Message::NoticeResponse(b) => BackendMessage::Notice(server_error(b.fields())?),
        Message::NotificationResponse(b) => BackendMessage::Notification {
            process_id: b.process_id(),
            channel: b.channel().map_err(io_protocol)?.to_string(),
            payload: b.message().map_err(io_protocol)?.to_string(),
        },
        _ => return Err(protocol(format!("unexpected message with tag {:?}", tag as char))),
    }))
}

fn server_error(mut fields: backend::ErrorFields<'_>) -> Result<ServerError> {
    let mut list: Vec<(u8, Vec<u8>)> = Vec::new();
    while let Some(f) = fields.next().map_err(io_protocol)? {
        list.push((f.type_(), f.value_bytes().to_vec()));
    }
    Ok(ServerError::from_fields(list.iter().map(|(t, v)| (*t, v.as_slice()))))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BufMut;

    /// Frames a backend message: tag, length, body.
    pub(crate) fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
        frame(b'D', &b)
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(names.len() as i16);
        for n in names {
            b.put_slice(n.as_bytes());
            b.put_u8(0);
            b.put_u32(0); // table oid
            b.put_i16(0); // column
            b.put_u32(25); // text
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        frame(b'T', &b)
    }

    /// A stream as the server sends it for IDENTIFY_SYSTEM followed by START_REPLICATION.
    fn sample_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(frame(b'S', b"server_version\x0015.20\x00"));
        s.extend(row_description(&["systemid", "timeline", "xlogpos", "dbname"]));
        s.extend(data_row(&[Some(b"7710839420457201475"), Some(b"1"), Some(b"0/1753758"), None]));
        s.extend(frame(b'C', b"IDENTIFY_SYSTEM\x00"));
        s.extend(frame(b'Z', b"I"));
        s.extend(frame(b'W', &[0, 0, 0]));
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x100_0000u64.to_be_bytes());
        w.extend_from_slice(&0x175_3758u64.to_be_bytes());
        w.extend_from_slice(&0u64.to_be_bytes());
        w.extend_from_slice(&[0xAB; 300]);
        s.extend(frame(b'd', &w));
        s.extend(frame(b'N', b"SNOTICE\x00VNOTICE\x00C00000\x00Mhello\x00\x00"));
        s.extend(frame(b'c', b""));
        s.extend(frame(b'E', b"SERROR\x00VERROR\x00C58P01\x00Mcould not open file\x00\x00"));
        s.extend(frame(b'v', b"\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\x00"));
        s
    }

    fn expected() -> Vec<BackendMessage> {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x100_0000u64.to_be_bytes());
        w.extend_from_slice(&0x175_3758u64.to_be_bytes());
        w.extend_from_slice(&0u64.to_be_bytes());
        w.extend_from_slice(&[0xAB; 300]);
        vec![
            BackendMessage::ParameterStatus { name: "server_version".into(), value: "15.20".into() },
            BackendMessage::RowDescription(
                ["systemid", "timeline", "xlogpos", "dbname"]
                    .iter()
                    .map(|n| Column { name: n.to_string(), type_oid: 25 })
                    .collect(),
            ),
            BackendMessage::DataRow(vec![
                Some(Bytes::from_static(b"7710839420457201475")),
                Some(Bytes::from_static(b"1")),
                Some(Bytes::from_static(b"0/1753758")),
                None,
            ]),
            BackendMessage::CommandComplete("IDENTIFY_SYSTEM".into()),
            BackendMessage::ReadyForQuery(b'I'),
            BackendMessage::CopyBothResponse(CopyFormat::Text),
            BackendMessage::CopyData(Bytes::from(w)),
            BackendMessage::Notice(ServerError {
                severity: "NOTICE".into(),
                code: "00000".into(),
                message: "hello".into(),
                ..Default::default()
            }),
            BackendMessage::CopyDone,
            BackendMessage::Error(ServerError {
                severity: "ERROR".into(),
                code: "58P01".into(),
                message: "could not open file".into(),
                ..Default::default()
            }),
            BackendMessage::NegotiateProtocolVersion { newest_minor: 0, unrecognized: vec!["_pq_.x".into()] },
        ]
    }

    fn decode_all(buf: &mut BytesMut) -> Vec<BackendMessage> {
        let mut out = Vec::new();
        while let Some(m) = decode(buf).unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn decodes_a_whole_stream() {
        let mut buf = BytesMut::from(&sample_stream()[..]);
        assert_eq!(decode_all(&mut buf), expected());
        assert!(buf.is_empty());
    }

    #[test]
    fn decodes_byte_by_byte_and_in_odd_chunks() {
        let stream = sample_stream();
        for chunk in [1, 2, 3, 4, 5, 6, 7, 13, 64, 301, 1000] {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                got.extend(decode_all(&mut buf));
            }
            assert_eq!(got, expected(), "chunk size {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn incomplete_message_leaves_buffer_untouched() {
        let full = frame(b'C', b"SELECT 1\x00");
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), full.len() - 1);
        buf.extend_from_slice(&full[full.len() - 1..]);
        assert_eq!(decode(&mut buf).unwrap(), Some(BackendMessage::CommandComplete("SELECT 1".into())));
    }

    /// Found by fuzzing (fuzz/corpus/pgwire_message): the header of a message of
    /// `MAX_MESSAGE_LEN` bytes reserved the whole gigabyte before any of its body arrived.
    #[test]
    fn a_large_announced_length_does_not_reserve_it_all() {
        let mut buf = BytesMut::from(&[b'd', 0x40, 0, 0, 0, b'w'][..]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() <= 2 * MAX_RESERVE_AHEAD, "reserved {} bytes", buf.capacity());
        // A message that fits is still reserved whole.
        let mut buf = BytesMut::from(&[b'd', 0, 2, 0, 4][..]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() > 2 << 16);
    }

    #[test]
    fn copy_data_is_zero_copy() {
        let mut buf = BytesMut::from(&frame(b'd', b"npayload")[..]);
        let base = buf.as_ptr() as usize;
        let Some(BackendMessage::CopyData(b)) = decode(&mut buf).unwrap() else { panic!() };
        assert_eq!(&b[..], b"npayload");
        assert_eq!(b.as_ptr() as usize, base + 5, "payload points into the read buffer");
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        let mut buf = BytesMut::from(&b"C\x00\x00\x00\x02"[..]);
        assert!(matches!(decode(&mut buf), Err(PgWireError::Protocol(_))));
        let mut buf = BytesMut::from(&b"C\x7f\xff\xff\xff"[..]);
        assert!(matches!(decode(&mut buf), Err(PgWireError::Protocol(_))));
        let mut buf = BytesMut::from(&frame(b'?', b"xx")[..]);
        assert!(matches!(decode(&mut buf), Err(PgWireError::Protocol(_))));
        let mut buf = BytesMut::from(&frame(b'W', b"")[..]);
        assert!(matches!(decode(&mut buf), Err(PgWireError::Protocol(_))));
    }

    #[test]
    fn authentication_requests() {
        let mut s = Vec::new();
        s.extend(frame(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]));
        s.extend(frame(b'R', b"\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"));
        s.extend(frame(b'R', b"\x00\x00\x00\x0br=abc"));
        s.extend(frame(b'R', &[0, 0, 0, 7]));
        s.extend(frame(b'R', &[0, 0, 0, 0]));
        let mut buf = BytesMut::from(&s[..]);
        assert_eq!(
            decode_all(&mut buf),
            vec![
                BackendMessage::Authentication(AuthRequest::Md5([1, 2, 3, 4])),
                BackendMessage::Authentication(AuthRequest::Sasl(vec![
                    "SCRAM-SHA-256-PLUS".into(),
                    "SCRAM-SHA-256".into()
                ])),
                BackendMessage::Authentication(AuthRequest::SaslContinue(Bytes::from_static(b"r=abc"))),
                BackendMessage::Authentication(AuthRequest::Unsupported("GSSAPI")),
                BackendMessage::Authentication(AuthRequest::Ok),
            ]
        );
    }
}
