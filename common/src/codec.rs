//! How pitr stores a file: zstd compression and digests computed in the same single pass.
//!
//! A stored object is a zstd *skippable frame* holding a small JSON header (original name,
//! raw size, BLAKE3 digest of the raw bytes) padded to [`HEADER_LEN`] bytes, followed by one
//! zstd frame with its content checksum. The header sits at a fixed offset, so reading
//! `0..HEADER_LEN` of an object tells its identity without downloading it, and the whole
//! object stays readable by the stock `zstd -d` tool (which skips skippable frames).
//!
//! Duplicates are judged by the digest of the *uncompressed* content, never by compressed
//! bytes, which vary with level and library version.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

/// Bytes taken by the header frame at the start of every object.
pub const HEADER_LEN: usize = 256;
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
    Io(#[from] io::Error),
}

impl ObjectHeader {
    /// Encodes the header frame.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [b' '; HEADER_LEN];
        out[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&((HEADER_LEN - 8) as u32).to_le_bytes());
        let json = serde_json::to_vec(self).unwrap_or_default();
        let n = json.len().min(HEADER_LEN - 8);
        out[8..8 + n].copy_from_slice(&json[..n]);
        out
    }

    /// Decodes a header frame from the first bytes of an object.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::BadHeader(format!("only {} bytes", bytes.len())));
        }
        let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default()) as usize;
        if magic != SKIPPABLE_MAGIC || len != HEADER_LEN - 8 {
            return Err(CodecError::BadHeader("missing header frame".into()));
        }
        let h: ObjectHeader = serde_json::from_slice(bytes[8..HEADER_LEN].trim_ascii_end())
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
    let start = dst.stream_position()?;
    dst.write_all(&[0u8; HEADER_LEN])?;
    let mut hasher = blake3::Hasher::new();
    let mut raw = 0u64;
    {
        let mut enc = zstd::stream::write::Encoder::new(&mut *dst, opts.level)?;
        enc.include_checksum(true)?;
        if opts.workers > 0 {
            enc.multithread(opts.workers)?;
        }
        enc.set_pledged_src_size(size_hint)?;
        hasher.update(prefix);
        enc.write_all(prefix)?;
        raw += prefix.len() as u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(src, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            enc.write_all(&buf[..n])?;
            raw += n as u64;
        }
        enc.finish()?;
    }
    let header =
        ObjectHeader { pitr: 1, name: name.to_string(), raw_size: raw, blake3: hasher.finalize().to_hex().to_string() };
    let end = dst.stream_position()?;
    dst.seek(SeekFrom::Start(start))?;
    dst.write_all(&header.encode())?;
    dst.seek(SeekFrom::Start(end))?;
    Ok(header)
}

/// Decompresses an object from `src` into `dst`, verifying size and digest against its
/// header. On error `dst` holds garbage and must be discarded.
pub fn decompress<R: Read, W: Write>(src: R, dst: &mut W) -> Result<ObjectHeader, CodecError> {
    let mut src = io::BufReader::with_capacity(256 << 10, src);
    let mut head = [0u8; HEADER_LEN];
    let n = read_full(&mut src, &mut head)?;
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
    fn digest_matches_header() {
        let data = sample(2_500_000);
        let (_, h) = pack(&data, CompressOptions::default());
        assert_eq!(digest(&mut &data[..]).unwrap(), (h.raw_size, h.blake3));
    }
}
