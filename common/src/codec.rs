//! How pitr stores a file: zstd compression and digests computed in the same single pass.
//!
//! A stored object is a zstd *skippable frame* holding a small JSON header (original name,
//! raw size, BLAKE3 digest of the raw bytes and, for WAL segments, a [`SegmentSummary`])
//! space-padded to [`HEADER_LEN`] bytes (or the next multiple of it when the JSON is longer),
//! followed by one zstd frame with its content checksum. The header starts the object, so
//! reading `0..HEADER_LEN` of an object tells its identity without downloading it (the frame's
//! size field, in its first 8 bytes, says when the header is longer: [`header_len`]), and
//! the whole object stays readable by the stock `zstd -d` tool (which skips skippable frames).
//!
//! Duplicates are judged by the digest of the *uncompressed* content, never by compressed
//! bytes, which vary with level and library version.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::wal::record::SegmentSummary;

/// Usual and minimum length of the header frame at the start of an object, and what a reader
/// fetches first. A longer header takes a multiple of it; [`header_len`] tells from the first
/// [`FRAME_PREFIX_LEN`] bytes.
pub const HEADER_LEN: usize = 256;
/// Longest header frame that is written or accepted.
pub const MAX_HEADER_LEN: usize = 64 << 10;
/// The header frame's magic and size field, before the JSON.
pub const FRAME_PREFIX_LEN: usize = 8;
/// zstd skippable frame magic used for the header (0x184D2A50..=0x184D2A5F are skippable).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Read/hash/compress chunk.
const CHUNK: usize = 1 << 20;

/// What an object says about its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeader {
    /// Format version of this header.
    pub pitr: u32,
    /// The original file name (e.g. the WAL segment name).
    pub name: String,
    /// Size of the uncompressed content.
    pub raw_size: u64,
    /// BLAKE3 of the uncompressed content, hex.
    pub blake3: String,
    /// For a WAL segment or `.partial` file: what its records hold, for restore planning
    /// (absent in objects written before summaries existed, and for other files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<SegmentSummary>,
}

/// Reading or writing an object failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The object does not start with a pitr header.
    #[error("not a pitr object: {0}")]
    BadHeader(String),
    /// Decompression failed: the object is damaged.
    #[error("object is corrupt: {0}")]
    Corrupt(String),
    /// Content decompressed, but it is not what was stored.
    #[error("content does not match its recorded {what}: expected {expected}, got {actual}")]
    Mismatch {
        /// `size` or `digest`.
        what: &'static str,
        /// Recorded value.
        expected: String,
        /// Value computed from the content.
        actual: String,
    },
    /// Reading the source or writing the destination failed.
    #[error("{0}")]
    Io(io::Error),
}

// By hand, not `#[from]`: that would also make the I/O error the `source()`, and a printed
// error chain would say it twice.
impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

/// Full length of the header frame whose first bytes are `first` (at least
/// [`FRAME_PREFIX_LEN`] of them): read from the skippable frame's size field.
pub fn header_len(first: &[u8]) -> Result<usize, CodecError> {
    if first.len() < FRAME_PREFIX_LEN {
        return Err(CodecError::BadHeader(format!("only {} bytes", first.len())));
    }
    let magic = u32::from_le_bytes(first[0..4].try_into().unwrap_or_default());
    if magic != SKIPPABLE_MAGIC {
        return Err(CodecError::BadHeader("missing header frame".into()));
    }
    let len = u32::from_le_bytes(first[4..8].try_into().unwrap_or_default()) as usize + FRAME_PREFIX_LEN;
    if len > MAX_HEADER_LEN {
        return Err(CodecError::BadHeader(format!("header frame of {len} bytes is longer than {MAX_HEADER_LEN}")));
    }
    Ok(len)
}

impl ObjectHeader {
    /// Length of this header's frame: [`HEADER_LEN`], or the next multiple of it that holds
    /// the JSON.
    pub fn encoded_len(&self) -> usize {
        (FRAME_PREFIX_LEN + self.json().len()).next_multiple_of(HEADER_LEN)
    }

    fn json(&self) -> Vec<u8> {
        // Cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Encodes the header frame ([`encoded_len`](Self::encoded_len) bytes).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.encode_padded(self.encoded_len())
    }

    /// Encodes the header frame padded to exactly `len` bytes (room reserved earlier).
    fn encode_padded(&self, len: usize) -> Result<Vec<u8>, CodecError> {
        let json = self.json();
        if FRAME_PREFIX_LEN + json.len() > len || len > MAX_HEADER_LEN {
            return Err(CodecError::Io(io::Error::other(format!(
                "header of {} needs {} bytes, {len} were reserved",
                self.name,
                FRAME_PREFIX_LEN + json.len()
            ))));
        }
        let mut out = vec![b' '; len];
        out[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&((len - FRAME_PREFIX_LEN) as u32).to_le_bytes());
        out[FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + json.len()].copy_from_slice(&json);
        Ok(out)
    }

    /// Decodes a header frame from the first bytes of an object: the whole frame, whatever
    /// length its size field announces (see [`header_len`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let len = header_len(bytes)?;
        if bytes.len() < len {
            return Err(CodecError::BadHeader(format!("only {} bytes of a {len}-byte header", bytes.len())));
        }
        let h: ObjectHeader = serde_json::from_slice(bytes[FRAME_PREFIX_LEN..len].trim_ascii_end())
            .map_err(|e| CodecError::BadHeader(format!("unreadable header: {e}")))?;
        if h.pitr != 1 {
            return Err(CodecError::BadHeader(format!("header version {} is newer than this pitr", h.pitr)));
        }
        Ok(h)
    }
}

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    /// zstd level (1–19; negative levels are faster still).
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub workers: u32,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions { level: 3, workers: 0 }
    }
}

/// Compresses everything `src` yields into `dst` as one object (header included), hashing the
/// raw bytes in the same pass. `prefix` holds bytes already read from `src` (e.g. a header
/// that was validated first). Returns the header written.
pub fn compress<R: Read, W: Write + Seek>(
    prefix: &[u8],
    src: &mut R,
    dst: &mut W,
    name: &str,
    size_hint: Option<u64>,
    opts: CompressOptions,
) -> Result<ObjectHeader, CodecError> {
    compress_with_summary(prefix, src, dst, name, size_hint, None, opts)
}

/// zstd parameters that differ from the level's own. Level 3 (the default) is retuned for
/// WAL; other levels are zstd's own. Measured on pgbench WAL corpora
/// (benches/benches/zstd_params.rs, benches/RESULTS.md): zstd's level-3 tables (2^17 long /
/// 2^16 short hash) store up to 0.4% more than pgBackRest's zst:3. Small tables (2^13 long,
/// 2^13 short) remember recent positions only, so matches stay near and their offsets cheap,
/// and they stay in the CPU cache: about 1.5% smaller than zstd's level 3 and 25-35% less
/// CPU. The window stays 2 MiB (4 MiB gains nothing on WAL and costs 4 MiB of memory). The
/// margin assumes no workers (compress-threads 0, the default for WAL): workers compress a
/// file in separate jobs, which costs WAL 0.2-1.2%.
fn tuned_parameters(level: i32) -> Vec<zstd::zstd_safe::CParameter> {
    use zstd::zstd_safe::CParameter::{ChainLog, HashLog, WindowLog};
    if level == 3 {
        vec![WindowLog(21), HashLog(13), ChainLog(13)]
    } else {
        Vec::new()
    }
}

/// [`compress`], with a WAL summary in the header. The header's room is reserved before
/// compressing, sized with the digest's fixed width and `size_hint` (zstd fails when the
/// content differs from a pledged size; without a hint, room for the largest size). A summary
/// that would make the header longer than [`MAX_HEADER_LEN`] is left out (logged): the
/// object then reads like one without a summary.
pub fn compress_with_summary<R: Read, W: Write + Seek>(
    prefix: &[u8],
    src: &mut R,
    dst: &mut W,
    name: &str,
    size_hint: Option<u64>,
    wal: Option<SegmentSummary>,
    opts: CompressOptions,
) -> Result<ObjectHeader, CodecError> {
    let mut header = ObjectHeader {
        pitr: 1,
        name: name.to_string(),
        raw_size: size_hint.unwrap_or(u64::MAX),
        blake3: "0".repeat(64),
        // As a reader will see it: only the stored fields.
        wal: wal.map(|s| SegmentSummary::from(crate::wal::record::stored::Summary::from(s))),
    };
    if header.encoded_len() > MAX_HEADER_LEN {
        tracing::warn!(file = name, "WAL summary too large for the object header; stored without it");
        header.wal = None;
    }
    let reserved = header.encoded_len();
    let start = dst.stream_position()?;
    dst.write_all(&vec![0u8; reserved])?;
    let mut hasher = blake3::Hasher::new();
    let mut raw = 0u64;
    // A whole file in `prefix` (push reads a segment once): compressed in one call from the
    // caller's buffer. The streaming encoder would copy it into a window-sized buffer of its
    // own first (measured: 5% of push's CPU, 2 MiB more memory per file).
    let mut buf = vec![0u8; CHUNK];
    let mut pending = read_full(src, &mut buf)?;
    if pending == 0 && opts.workers == 0 && !prefix.is_empty() {
        let mut cctx = zstd::bulk::Compressor::new(opts.level)?;
        cctx.include_checksum(true)?;
        for p in tuned_parameters(opts.level) {
            cctx.set_parameter(p)?;
        }
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(prefix.len()));
        cctx.compress_to_buffer(prefix, &mut out)?;
        hasher.update(prefix);
        raw = prefix.len() as u64;
        if let Some(h) = size_hint.filter(|&h| h != raw) {
            return Err(CodecError::Io(io::Error::other(format!("{raw} bytes read, {h} announced"))));
        }
        dst.write_all(&out)?;
    } else {
        let mut enc = zstd::stream::write::Encoder::new(&mut *dst, opts.level)?;
        enc.include_checksum(true)?;
        if opts.workers > 0 {
            enc.multithread(opts.workers)?;
        }
        for p in tuned_parameters(opts.level) {
            enc.set_parameter(p)?;
        }
        enc.set_pledged_src_size(size_hint)?;
        for chunk in prefix.chunks(CHUNK) {
            hasher.update(chunk);
            enc.write_all(chunk)?;
        }
        raw += prefix.len() as u64;
        while pending > 0 {
            hasher.update(&buf[..pending]);
            enc.write_all(&buf[..pending])?;
            raw += pending as u64;
            pending = read_full(src, &mut buf)?;
        }
        enc.finish()?;
    }
    header.raw_size = raw;
    header.blake3 = hasher.finalize().to_hex().to_string();
    let end = dst.stream_position()?;
    dst.seek(SeekFrom::Start(start))?;
    dst.write_all(&header.encode_padded(reserved)?)?;
    dst.seek(SeekFrom::Start(end))?;
    Ok(header)
}

/// Decompresses an object from `src` into `dst`, verifying size and digest against its
/// header. On error `dst` holds garbage and must be discarded.
pub fn decompress<R: Read, W: Write>(src: R, dst: &mut W) -> Result<ObjectHeader, CodecError> {
    let mut src = io::BufReader::with_capacity(256 << 10, src);
    let mut head = vec![0u8; FRAME_PREFIX_LEN];
    // A source that checks what it reads (decryption) says InvalidData for damage.
    let damage_or_io = |e: io::Error| match e.kind() {
        io::ErrorKind::InvalidData => CodecError::Corrupt(e.to_string()),
        _ => CodecError::Io(e),
    };
    let n = read_full(&mut src, &mut head).map_err(damage_or_io)?;
    let len = header_len(&head[..n])?;
    head.resize(len, 0);
    let n = FRAME_PREFIX_LEN + read_full(&mut src, &mut head[FRAME_PREFIX_LEN..]).map_err(damage_or_io)?;
    let header = ObjectHeader::decode(&head[..n])?;
    let mut dec = zstd::stream::read::Decoder::with_buffer(src).map_err(|e| CodecError::Corrupt(e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    let mut raw = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match read_full(&mut dec, &mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::Other
                    || e.kind() == io::ErrorKind::InvalidData
                    || e.kind() == io::ErrorKind::UnexpectedEof =>
            {
                return Err(CodecError::Corrupt(e.to_string()))
            }
            Err(e) => return Err(CodecError::Io(e)),
        };
        if n == 0 {
            break;
        }
        raw += n as u64;
        if raw > header.raw_size {
            return Err(CodecError::Mismatch {
                what: "size",
                expected: header.raw_size.to_string(),
                actual: format!("more than {}", header.raw_size),
            });
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
    }
    if raw != header.raw_size {
        return Err(CodecError::Mismatch {
            what: "size",
            expected: header.raw_size.to_string(),
            actual: raw.to_string(),
        });
    }
    let digest = hasher.finalize().to_hex().to_string();
    if digest != header.blake3 {
        return Err(CodecError::Mismatch { what: "digest", expected: header.blake3, actual: digest });
    }
    Ok(header)
}

/// How [`decompress_in_memory`] checks the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCheck {
    /// Size, zstd frame checksum and BLAKE3 digest (what `get` and `verify` do).
    Digest,
    /// Size and the zstd frame's own checksum (XXH64 of the content, checked while
    /// decompressing), without the BLAKE3 pass: for callers that check the content again
    /// themselves (a restore checks every file's CRC-32C against the backup manifest). A
    /// frame written without a checksum still gets the BLAKE3 check.
    FrameChecksum,
}

/// Objects announcing more raw bytes than this decompress through the stream (a damaged
/// header must not reserve a huge buffer; backup chunks hold 16 MiB).
const MAX_IN_MEMORY: u64 = 64 << 20;

/// Alignment of an [`AlignedBuf`]'s content: enough for `O_DIRECT` writes on any common
/// device (logical blocks of 512 bytes or 4 KiB).
pub const BUF_ALIGN: usize = 4096;

/// A reusable buffer for [`decompress_in_memory`] whose content starts at an address aligned
/// to [`BUF_ALIGN`], so that a restore can hand pieces of it to `O_DIRECT` writes. Its
/// allocation grows when needed and is reused otherwise (zeroed once, when allocated).
#[derive(Debug, Default)]
pub struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// Room for `len` bytes of content at an aligned address.
    fn room(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len + BUF_ALIGN {
            self.buf = vec![0; len + BUF_ALIGN];
        }
        let addr = self.buf.as_ptr() as usize;
        self.start = addr.next_multiple_of(BUF_ALIGN) - addr;
        self.len = len;
        &mut self.buf[self.start..self.start + len]
    }

    /// Takes `v` as the content (not aligned).
    fn set(&mut self, v: Vec<u8>) {
        self.len = v.len();
        self.start = 0;
        self.buf = v;
    }
}

/// Decompresses a whole object held in memory into `raw` (its allocation is reused) in one
/// zstd call, verifying size and content as `check` says. No intermediate buffer: zstd writes
/// straight into `raw`, where the streaming [`decompress`] copies every byte twice more
/// (measured: 7% of a restore's CPU). On error `raw` holds garbage.
pub fn decompress_in_memory(obj: &[u8], raw: &mut AlignedBuf, check: ContentCheck) -> Result<ObjectHeader, CodecError> {
    raw.len = 0;
    let len = header_len(obj)?;
    let header = ObjectHeader::decode(obj.get(..len).unwrap_or(obj))?;
    if header.raw_size > MAX_IN_MEMORY {
        let mut v = Vec::new();
        let h = decompress(obj, &mut v)?;
        raw.set(v);
        return Ok(h);
    }
    let frame = &obj[len..];
    let mut dctx = zstd::bulk::Decompressor::new()?;
    // Content larger than announced does not fit: zstd stops with an error, as on damage.
    let n = dctx
        .decompress_to_buffer(frame, raw.room(header.raw_size as usize))
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if n as u64 != header.raw_size {
        return Err(CodecError::Mismatch {
            what: "size",
            expected: header.raw_size.to_string(),
            actual: n.to_string(),
        });
    }
    raw.len = n;
    // Frame header descriptor, after the 4-byte magic: bit 2 = content checksum present.
    let frame_checked = frame.len() > 4 && frame[4] & 0x04 != 0;
    if check == ContentCheck::Digest || !frame_checked {
        let digest = blake3::hash(raw.as_slice()).to_hex().to_string();
        if digest != header.blake3 {
            return Err(CodecError::Mismatch { what: "digest", expected: header.blake3, actual: digest });
        }
    }
    Ok(header)
}

/// Size and BLAKE3 digest of everything `src` yields.
pub fn digest<R: Read>(src: &mut R) -> io::Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// A source that remembers whether reading from it failed. [`decompress`] reports a source's
/// read error and damage in the object alike (zstd surfaces both as I/O errors); wrapped in
/// this, a caller tells a download cut off in the middle (retry it) from a damaged object.
#[derive(Debug)]
pub struct SourceErrors<R> {
    inner: R,
    failed: bool,
}

impl<R> SourceErrors<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        SourceErrors { inner, failed: false }
    }

    /// Whether a read from the source failed.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl<R: Read> Read for SourceErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= r.is_err();
        r
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i / 7) % 13) as u8 ^ (i % 3) as u8).collect()
    }

    fn pack(data: &[u8], opts: CompressOptions) -> (Vec<u8>, ObjectHeader) {
        let mut out = Cursor::new(Vec::new());
        let h = compress(&data[..10], &mut &data[10..], &mut out, "seg", Some(data.len() as u64), opts).unwrap();
        (out.into_inner(), h)
    }

    #[test]
    fn round_trip_with_prefix_and_workers() {
        let data = sample(3 << 20);
        for workers in [0, 2] {
            let (obj, h) = pack(&data, CompressOptions { level: 3, workers });
            assert_eq!(h.raw_size, data.len() as u64);
            assert_eq!(h.blake3, blake3::hash(&data).to_hex().to_string());
            assert!(obj.len() < data.len() / 4, "compresses");
            let mut back = Vec::new();
            assert_eq!(decompress(&obj[..], &mut back).unwrap(), h);
            assert_eq!(back, data);
            assert_eq!(ObjectHeader::decode(&obj[..HEADER_LEN]).unwrap(), h, "header readable alone");
        }
    }

    #[test]
    fn a_whole_file_in_memory_compresses_in_one_call_like_a_stream() {
        let data = sample(3 << 20);
        let (streamed, hs) = pack(&data, CompressOptions::default());
        let mut out = Cursor::new(Vec::new());
        let h = compress(&data, &mut io::empty(), &mut out, "seg", Some(data.len() as u64), CompressOptions::default())
            .unwrap();
        let whole = out.into_inner();
        assert_eq!(h, hs, "same header");
        assert!(whole.len() <= streamed.len() + 64, "{} vs {}", whole.len(), streamed.len());
        let mut back = Vec::new();
        assert_eq!(decompress(&whole[..], &mut back).unwrap(), h);
        assert_eq!(back, data);
        assert_eq!(zstd::decode_all(&whole[..]).unwrap(), data, "a standard zstd frame");
        // A size that differs from the announced one is refused, as the stream refuses it.
        let mut out = Cursor::new(Vec::new());
        let e =
            compress(&data, &mut io::empty(), &mut out, "seg", Some(1 + data.len() as u64), CompressOptions::default());
        assert!(e.is_err());
    }

    #[test]
    fn stock_zstd_reads_the_object() {
        let data = sample(100_000);
        let (obj, _) = pack(&data, CompressOptions::default());
        assert_eq!(zstd::decode_all(&obj[..]).unwrap(), data, "skippable header frame is skipped");
    }

    #[test]
    fn damage_is_detected() {
        let data = sample(1 << 20);
        let (obj, _) = pack(&data, CompressOptions::default());
        // flipped byte in the compressed body
        let mut bad = obj.clone();
        let mid = HEADER_LEN + (bad.len() - HEADER_LEN) / 2;
        bad[mid] ^= 0x55;
        assert!(matches!(
            decompress(&bad[..], &mut Vec::new()),
            Err(CodecError::Corrupt(_) | CodecError::Mismatch { .. })
        ));
        // truncated
        assert!(decompress(&obj[..obj.len() - 10], &mut Vec::new()).is_err());
        // header of another content
        let (other, _) = pack(&sample(1 << 19), CompressOptions::default());
        let mut swapped = obj.clone();
        swapped[..HEADER_LEN].copy_from_slice(&other[..HEADER_LEN]);
        assert!(matches!(decompress(&swapped[..], &mut Vec::new()), Err(CodecError::Mismatch { .. })));
        // not an object at all
        assert!(matches!(decompress(&data[..], &mut Vec::new()), Err(CodecError::BadHeader(_))));
        assert!(matches!(decompress(&b""[..], &mut Vec::new()), Err(CodecError::BadHeader(_))));
    }

    #[test]
    fn in_memory_decompression_checks_like_the_stream() {
        let data = sample(3 << 20);
        let (obj, h) = pack(&data, CompressOptions::default());
        for check in [ContentCheck::Digest, ContentCheck::FrameChecksum] {
            let mut raw = AlignedBuf::default();
            assert_eq!(decompress_in_memory(&obj, &mut raw, check).unwrap(), h);
            assert_eq!(raw.as_slice(), data);
            assert_eq!(raw.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
            // the allocation is reused, and smaller content stays aligned
            let (small, hs) = pack(&data[..1000], CompressOptions::default());
            assert_eq!(decompress_in_memory(&small, &mut raw, check).unwrap(), hs);
            assert_eq!(raw.as_slice(), &data[..1000]);
            assert_eq!(raw.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
            // a flipped byte in the body fails the frame (its checksum or its structure)
            let mut bad = obj.clone();
            let mid = HEADER_LEN + (bad.len() - HEADER_LEN) / 2;
            bad[mid] ^= 0x55;
            assert!(decompress_in_memory(&bad, &mut raw, check).is_err(), "{check:?}");
            // truncated, or content larger than the header says
            assert!(decompress_in_memory(&obj[..obj.len() - 10], &mut raw, check).is_err());
            let (other, _) = pack(&sample(1 << 19), CompressOptions::default());
            let mut swapped = obj.clone();
            swapped[..HEADER_LEN].copy_from_slice(&other[..HEADER_LEN]);
            assert!(decompress_in_memory(&swapped, &mut raw, check).is_err());
            assert!(matches!(decompress_in_memory(&data, &mut raw, check), Err(CodecError::BadHeader(_))));
        }
        // A frame without a checksum of other content of the same size: only the digest can
        // tell, so it is checked whatever the caller asked.
        let mut other = data.clone();
        other[12345] ^= 1;
        let mut forged = obj[..HEADER_LEN].to_vec();
        forged.extend_from_slice(&zstd::bulk::compress(&other, 3).unwrap());
        for check in [ContentCheck::Digest, ContentCheck::FrameChecksum] {
            assert!(matches!(
                decompress_in_memory(&forged, &mut AlignedBuf::default(), check),
                Err(CodecError::Mismatch { what: "digest", .. })
            ));
        }
    }

    use crate::lsn::Lsn;
    use crate::wal::record::{summarize, PgTimestamp, RestorePoint};
    use crate::wal::TimelineId;

    fn pack_wal(data: &[u8], name: &str, wal: Option<SegmentSummary>) -> (Vec<u8>, ObjectHeader) {
        let mut out = Cursor::new(Vec::new());
        let opts = CompressOptions::default();
        let h =
            compress_with_summary(data, &mut io::empty(), &mut out, name, Some(data.len() as u64), wal, opts).unwrap();
        (out.into_inner(), h)
    }

    /// A summary with production-sized numbers: LSNs past 1 TiB, xids near 2^31, a minute of
    /// commits.
    fn busy_summary() -> SegmentSummary {
        SegmentSummary {
            valid_end: Some(Lsn(0x1A3_5FFF_FFD8)),
            xact_ends: 31_456,
            first_xact_time: Some(PgTimestamp(830_000_000_123_456)),
            last_xact_time: Some(PgTimestamp(830_000_061_654_321)),
            xid_min: Some(2_123_456_789),
            xid_max: Some(2_123_488_244),
            ..SegmentSummary::default()
        }
    }

    #[test]
    fn typical_wal_headers_fit_in_the_usual_length() {
        let seg = crate::wal::synthetic::pgbench_like_segment(3, 5000);
        let summary = summarize(&seg).unwrap();
        let (obj, h) = pack_wal(&seg, "000000010000000000000003", Some(summary.clone()));
        let len = header_len(&obj).unwrap();
        let json = String::from_utf8_lossy(&obj[FRAME_PREFIX_LEN..len]).trim_end().to_string();
        eprintln!("header of a synthetic 16 MiB segment ({len} bytes, {} of JSON): {json}", json.len());
        assert_eq!(len, HEADER_LEN);
        assert_eq!(ObjectHeader::decode(&obj[..HEADER_LEN]).unwrap(), h);
        assert_eq!(h.wal.as_ref().map(|s| s.xid_min), Some(summary.xid_min));

        // Busier numbers: a segment that ends with a switch, and a .partial file (which
        // does not): still one usual-length frame.
        let mut switched = busy_summary();
        switched.switch_at = Some(Lsn(0x1A3_5FFF_FFC0));
        for (name, wal) in
            [("00000001000001A30000005F", switched), ("00000001000001A30000005F.partial", busy_summary())]
        {
            let h =
                ObjectHeader { pitr: 1, name: name.into(), raw_size: 16 << 20, blake3: "f".repeat(64), wal: Some(wal) };
            let frame = h.encode().unwrap();
            let json = String::from_utf8_lossy(&frame[FRAME_PREFIX_LEN..]).trim_end().to_string();
            eprintln!("header with production-sized numbers ({} bytes, {} of JSON): {json}", frame.len(), json.len());
            assert_eq!(frame.len(), HEADER_LEN);
            assert_eq!(ObjectHeader::decode(&frame).unwrap(), h);
        }
    }

    #[test]
    fn long_headers_round_trip() {
        let data = sample(200_000);
        let mut wal = busy_summary();
        for i in 0..12 {
            wal.restore_points.push(RestorePoint {
                name: format!("{i:02} before the migration of the orders table, \"quoted\" ünïcode"),
                lsn: Lsn(0x1A3_5F00_0000 + i * 4096),
                time: PgTimestamp(830_000_000_000_000 + i as i64),
            });
        }
        wal.timeline_switch = Some((TimelineId(4), TimelineId(3)));
        let (obj, h) = pack_wal(&data, "000000040000000000000003", Some(wal.clone()));
        let len = header_len(&obj[..FRAME_PREFIX_LEN]).unwrap();
        assert!(len > HEADER_LEN && len.is_multiple_of(HEADER_LEN), "{len}");
        assert_eq!(h.encoded_len(), len);
        assert_eq!(h.wal, Some(wal));
        assert!(
            matches!(ObjectHeader::decode(&obj[..HEADER_LEN]), Err(CodecError::BadHeader(m)) if m.contains("of a")),
            "the usual first read is not enough"
        );
        assert_eq!(ObjectHeader::decode(&obj[..len]).unwrap(), h);
        let mut back = Vec::new();
        assert_eq!(decompress(&obj[..], &mut back).unwrap(), h);
        assert_eq!(back, data);
        assert_eq!(zstd::decode_all(&obj[..]).unwrap(), data, "stock zstd skips a long header too");
    }

    #[test]
    fn oversized_summaries_are_left_out() {
        let data = sample(10_000);
        let mut wal = SegmentSummary::default();
        for i in 0..2000u64 {
            wal.restore_points.push(RestorePoint { name: "x".repeat(63), lsn: Lsn(i), time: PgTimestamp(0) });
        }
        let (obj, h) = pack_wal(&data, "000000010000000000000003", Some(wal));
        assert_eq!(h.wal, None);
        assert_eq!(header_len(&obj).unwrap(), HEADER_LEN);
        assert_eq!(decompress(&obj[..], &mut Vec::new()).unwrap(), h);
    }

    #[test]
    fn objects_without_summary_stay_readable() {
        // An object exactly as the first format wrote it: 256-byte frame, no `wal` key.
        let data = sample(50_000);
        let digest = blake3::hash(&data).to_hex().to_string();
        let json = format!(r#"{{"pitr":1,"name":"000000010000000000000007","raw_size":50000,"blake3":"{digest}"}}"#);
        let mut obj = vec![b' '; 256];
        obj[..4].copy_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        obj[4..8].copy_from_slice(&248u32.to_le_bytes());
        obj[8..8 + json.len()].copy_from_slice(json.as_bytes());
        obj.extend_from_slice(&zstd::encode_all(&data[..], 3).unwrap());
        let h = ObjectHeader::decode(&obj[..HEADER_LEN]).unwrap();
        assert_eq!((h.raw_size, h.wal.as_ref()), (50_000, None));
        let mut back = Vec::new();
        assert_eq!(decompress(&obj[..], &mut back).unwrap(), h);
        assert_eq!(back, data);
        // What `compress` writes without a summary is byte-for-byte that layout.
        let (ours, h2) = pack_wal(&data, "000000010000000000000007", None);
        assert_eq!(&ours[..HEADER_LEN], &obj[..HEADER_LEN]);
        assert_eq!(h2, h);

        // A shorter frame than usual is accepted too (the size field decides).
        let short_json = format!(r#"{{"pitr":1,"name":"a","raw_size":50000,"blake3":"{digest}"}}"#);
        let mut short = Vec::new();
        short.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        short.extend_from_slice(&(short_json.len() as u32).to_le_bytes());
        short.extend_from_slice(short_json.as_bytes());
        short.extend_from_slice(&zstd::encode_all(&data[..], 3).unwrap());
        assert_eq!(decompress(&short[..], &mut Vec::new()).unwrap().name, "a");
    }

    #[test]
    fn header_frames_are_bounded() {
        let mut huge = vec![0u8; 8];
        huge[..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        huge[4..8].copy_from_slice(&(MAX_HEADER_LEN as u32).to_le_bytes());
        assert!(matches!(header_len(&huge), Err(CodecError::BadHeader(_))));
        assert!(matches!(decompress(&huge[..], &mut Vec::new()), Err(CodecError::BadHeader(_))));
        huge[4..8].copy_from_slice(&((MAX_HEADER_LEN - 8) as u32).to_le_bytes());
        assert_eq!(header_len(&huge).unwrap(), MAX_HEADER_LEN);
        assert!(matches!(header_len(&huge[..7]), Err(CodecError::BadHeader(_))));
        // announced but cut short
        assert!(matches!(decompress(&huge[..], &mut Vec::new()), Err(CodecError::BadHeader(_))));
    }

    #[test]
    fn digest_matches_header() {
        let data = sample(2_500_000);
        let (_, h) = pack(&data, CompressOptions::default());
        assert_eq!(digest(&mut &data[..]).unwrap(), (h.raw_size, h.blake3));
    }
}
