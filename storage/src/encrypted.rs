//! Client-side encryption of every object, as a wrapper around any [`Storage`].
//!
//! Whatever the layers above store (WAL, backup chunks, manifests, catalog entries, the
//! cluster record, leases) passes through [`EncryptedStorage`], which encrypts it on the way
//! in and decrypts and authenticates it on the way out, so no code above needs to know. Keys
//! under [`CLEAR_PREFIX`] (the repository's encryption record) pass through as they are.
//!
//! An encrypted object is
//!
//! ```text
//! 0..8     b"PITRENC1"
//! 8..24    id of the repository data key that wraps this object's key (16 hex characters)
//! 24..36   nonce of the wrap
//! 36..84   this object's own random AES-256 key, sealed with the repository data key
//!          (AES-256-GCM; authenticated data: the first 24 bytes and the object's key path)
//! 84..     the content in chunks (4 KiB, then 64 KiB each), each sealed with the object's key
//!          (AES-256-GCM, nonce = [0, 0, 0, last-chunk flag, chunk index as u64 big-endian],
//!          16-byte tag after each chunk)
//! ```
//!
//! A random key per object, wrapped by a repository data key, wrapped in turn by the
//! key-encryption key (a key file or KMS; `common::encryption`): rotating the key-encryption
//! key re-wraps the few repository data keys and never rewrites an object. Binding the key
//! path into the wrap means an object moved or copied under another name does not decrypt.
//! The last-chunk flag makes a truncated object fail, and the small first chunk keeps the
//! reads of object headers (the first 256 bytes) small: one ranged read of about 4 KiB.
//! Sizes reported by `head` and `list` are the plaintext sizes, computed from the stored ones.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use bytes::Bytes;
use zeroize::Zeroizing;

use crate::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

/// Keys under this prefix are stored as they are (the encryption record itself).
pub const CLEAR_PREFIX: &str = "_pitr/";
/// First bytes of every encrypted object.
pub const MAGIC: &[u8; 8] = b"PITRENC1";
/// Length of a repository data key's id (hex characters).
pub const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Length of an encrypted object's header, before the first chunk.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;
const FIRST_CHUNK: u64 = 4 << 10;
const CHUNK: u64 = 64 << 10;
/// Objects this large or larger are encrypted and decrypted on a blocking thread.
const BLOCKING_FROM: usize = 256 << 10;

/// A 256-bit key, wiped from memory when dropped.
pub type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

/// A new random 256-bit key.
pub fn random_key() -> KeyBytes {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut k[..]);
    k
}

/// Fills `buf` from the operating system's secure random source (getrandom(2)). Not
/// aws-lc-rs's generator: it seeds a jitter entropy collector first, which costs about 50 ms of
/// CPU in every process, and `push` is one process per WAL segment (measured: 137 vs 76 ms per
/// push).
pub fn fill_random(buf: &mut [u8]) {
    // The system's random source failing is not something to carry on from.
    getrandom::fill(buf).expect("the system's random source failed");
}

/// A new random key id ([`KEY_ID_LEN`] hex characters).
pub fn random_key_id() -> String {
    let mut b = [0u8; KEY_ID_LEN / 2];
    fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The repository data keys this process holds (unwrapped), and the one new objects use.
pub struct DataKeys {
    current: String,
    keys: BTreeMap<String, KeyBytes>,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys").field("current", &self.current).field("ids", &self.keys.keys()).finish()
    }
}

impl DataKeys {
    /// `keys` by id; `current` must be one of them.
    pub fn new(current: &str, keys: BTreeMap<String, KeyBytes>) -> Result<Self, StorageError> {
        if !keys.contains_key(current) {
            return Err(StorageError::Config(format!("the current data key {current} is not among the keys")));
        }
        if let Some(bad) = keys.keys().find(|id| !valid_key_id(id)) {
            return Err(StorageError::Config(format!("invalid data key id {bad:?}")));
        }
        Ok(DataKeys { current: current.to_string(), keys })
    }

    /// The id of the key new objects are written with.
    pub fn current(&self) -> &str {
        &self.current
    }
}

/// Whether `id` is a well-formed data key id.
pub fn valid_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Seals `plain` (a key) with `kek` under a random nonce: nonce, ciphertext and tag.
pub fn seal_key(kek: &[u8; KEY_LEN], plain: &[u8; KEY_LEN], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_LEN + KEY_LEN + TAG_LEN);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    let tag = aead_key(kek)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .expect("AES-GCM sealing of 32 bytes cannot fail");
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    body.iter_mut().for_each(|b| *b = 0);
    out
}

/// Opens what [`seal_key`] sealed; `None` when `kek` or `aad` is not the one it was sealed with,
/// or the bytes were changed.
pub fn open_key(kek: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Option<KeyBytes> {
    if sealed.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
    let mut body = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
    let plain = aead_key(kek).open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    k.copy_from_slice(plain);
    Some(k)
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key is a valid AES-256 key"))
}

/// Plaintext offset where chunk `i` starts.
fn chunk_start(i: u64) -> u64 {
    if i == 0 {
        0
    } else {
        FIRST_CHUNK + (i - 1) * CHUNK
    }
}

/// Largest plaintext length of chunk `i`.
fn chunk_len(i: u64) -> u64 {
    if i == 0 {
        FIRST_CHUNK
    } else {
        CHUNK
    }
}

/// The chunk holding plaintext offset `off`.
fn chunk_of(off: u64) -> u64 {
    if off < FIRST_CHUNK {
        0
    } else {
        1 + (off - FIRST_CHUNK) / CHUNK
    }
}

/// Offset in the stored object where chunk `i` starts.
fn stored_start(i: u64) -> u64 {
    HEADER_LEN as u64 + chunk_start(i) + i * TAG_LEN as u64
}

/// Plaintext size of an encrypted object of `stored` bytes; `None` when no encryption of any
/// content has that size.
pub fn plain_size(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER_LEN as u64)?;
    let first = FIRST_CHUNK + TAG_LEN as u64;
    if body <= first {
        return body.checked_sub(TAG_LEN as u64);
    }
    let rest = body - first;
    let full = rest / (CHUNK + TAG_LEN as u64);
    let rem = rest % (CHUNK + TAG_LEN as u64);
    match rem {
        0 => Some(FIRST_CHUNK + full * CHUNK),
        r if r <= TAG_LEN as u64 => None,
        r => Some(FIRST_CHUNK + full * CHUNK + r - TAG_LEN as u64),
    }
}

/// Stored size of `plain` bytes of content.
pub fn stored_size(plain: u64) -> u64 {
    let chunks = if plain == 0 { 1 } else { chunk_of(plain - 1) + 1 };
    HEADER_LEN as u64 + plain + chunks * TAG_LEN as u64
}

fn chunk_nonce(i: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[3] = last as u8;
    n[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn wrap_aad(id: &[u8], path: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(MAGIC.len() + KEY_ID_LEN + path.len());
    aad.extend_from_slice(MAGIC);
    aad.extend_from_slice(id);
    aad.extend_from_slice(path.as_bytes());
    aad
}

/// Encrypts `plain` as the object at `path` with the current data key.
pub fn encrypt(keys: &DataKeys, path: &str, plain: &[u8]) -> Vec<u8> {
    let id = keys.current.as_bytes();
    let data_key = &keys.keys[&keys.current];
    let object_key = random_key();
    let mut out = Vec::with_capacity(stored_size(plain.len() as u64) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(id);
    out.extend_from_slice(&seal_key(data_key, &object_key, &wrap_aad(id, path)));
    let aead = aead_key(&object_key);
    let mut i = 0u64;
    let mut pos = 0usize;
    loop {
        let end = (pos + chunk_len(i) as usize).min(plain.len());
        let last = end == plain.len();
        let at = out.len();
        out.extend_from_slice(&plain[pos..end]);
        let tag = aead
            .seal_in_place_separate_tag(chunk_nonce(i, last), Aad::empty(), &mut out[at..])
            .expect("AES-GCM sealing of a chunk cannot fail");
        out.extend_from_slice(tag.as_ref());
        if last {
            break;
        }
        pos = end;
        i += 1;
    }
    out
}

/// Why an object does not decrypt.
fn damaged(path: &str, what: &str) -> StorageError {
    StorageError::Damaged { key: path.to_string(), message: format!("does not decrypt: {what}") }
}

/// The object's own key, unwrapped from the header at the start of `stored`.
fn object_key(keys: &DataKeys, path: &str, stored: &[u8]) -> Result<LessSafeKey, StorageError> {
    if stored.len() < HEADER_LEN || &stored[..MAGIC.len()] != MAGIC {
        return Err(damaged(path, "it is not an encrypted object (plaintext in an encrypted repository)"));
    }
    let id_bytes = &stored[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
    let id = std::str::from_utf8(id_bytes).map_err(|_| damaged(path, "unreadable data key id"))?;
    let Some(data_key) = keys.keys.get(id) else {
        return Err(StorageError::KeyUnavailable {
            key: path.to_string(),
            message: format!(
                "it was written with data key {id:?}, which the repository's encryption record does not hold for \
                 the configured key-encryption key"
            ),
        });
    };
    let sealed = &stored[MAGIC.len() + KEY_ID_LEN..HEADER_LEN];
    let k = open_key(data_key, sealed, &wrap_aad(id_bytes, path))
        .ok_or_else(|| damaged(path, "its key does not authenticate (damaged, or stored under another name)"))?;
    Ok(aead_key(&k))
}

/// Decrypts a whole stored object in place and returns the content.
pub fn decrypt(keys: &DataKeys, path: &str, mut stored: Vec<u8>) -> Result<Vec<u8>, StorageError> {
    let aead = object_key(keys, path, &stored)?;
    let mut read = HEADER_LEN;
    let mut write = 0usize;
    let mut i = 0u64;
    loop {
        let want = chunk_len(i) as usize + TAG_LEN;
        let end = (read + want).min(stored.len());
        let last = end == stored.len();
        if end - read < TAG_LEN {
            return Err(damaged(path, "truncated"));
        }
        let plain = aead
            .open_in_place(chunk_nonce(i, last), Aad::empty(), &mut stored[read..end])
            .map_err(|_| damaged(path, &format!("chunk {i} does not authenticate (damaged or truncated)")))?;
        let n = plain.len();
        stored.copy_within(read..read + n, write);
        write += n;
        if last {
            break;
        }
        read = end;
        i += 1;
    }
    stored.truncate(write);
    Ok(stored)
}

/// Decrypts the chunks `first..` held in `got` (stored bytes from [`stored_start`]`(first)`),
/// and returns plaintext `range` of it. `complete` says whether `got` reaches the object's end.
fn decrypt_chunks(
    aead: &LessSafeKey,
    path: &str,
    first: u64,
    mut got: Vec<u8>,
    complete: bool,
    range: Range<u64>,
) -> Result<Bytes, StorageError> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut read = 0usize;
    let mut i = first;
    while read < got.len() {
        let end = (read + chunk_len(i) as usize + TAG_LEN).min(got.len());
        if end - read < TAG_LEN {
            return Err(damaged(path, "truncated"));
        }
        let at_end = end == got.len();
        // The last chunk read is the object's last one when the read reached the end; when it
        // did not, it may still be (it ended exactly where the range did): try both.
        let flags: &[bool] = match (at_end, complete) {
            (false, _) => &[false],
            (true, true) => &[true],
            (true, false) => &[false, true],
        };
        let backup = (flags.len() > 1).then(|| got[read..end].to_vec());
        let mut opened = None;
        for (n, &last) in flags.iter().enumerate() {
            if n > 0 {
                if let Some(b) = &backup {
                    got[read..end].copy_from_slice(b);
                }
            }
            if let Ok(p) = aead.open_in_place(chunk_nonce(i, last), Aad::empty(), &mut got[read..end]) {
                opened = Some(p.len());
                break;
            }
        }
        let n = opened.ok_or_else(|| damaged(path, &format!("chunk {i} does not authenticate")))?;
        let start = chunk_start(i);
        let lo = range.start.max(start);
        let hi = range.end.min(start + n as u64);
        if lo < hi {
            out.extend_from_slice(&got[read + (lo - start) as usize..read + (hi - start) as usize]);
        }
        if (n as u64) < chunk_len(i) && !at_end {
            return Err(damaged(path, &format!("chunk {i} is short")));
        }
        read = end;
        i += 1;
    }
    Ok(out.into())
}

/// Decrypts an encrypted local file as it is read, one chunk at a time into a buffer of one
/// chunk: an object is never held whole in memory, and a reader pays what a plain file costs
/// plus AES-GCM. Damage fails a read with `InvalidData`.
struct DecryptingReader {
    file: std::fs::File,
    aead: LessSafeKey,
    path: String,
    stored_len: u64,
    next: u64,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    done: bool,
}

impl DecryptingReader {
    /// Reads and opens the header of `file` (the object at `path`).
    fn open(keys: &DataKeys, path: &str, mut file: std::fs::File) -> Result<Self, StorageError> {
        use std::io::Read;
        let io = |e: std::io::Error| StorageError::io("read", std::path::Path::new(path), e);
        let stored_len = file.metadata().map_err(io)?.len();
        let mut header = vec![0u8; HEADER_LEN.min(stored_len as usize)];
        file.read_exact(&mut header).map_err(io)?;
        let aead = object_key(keys, path, &header)?;
        Ok(DecryptingReader {
            file,
            aead,
            path: path.to_string(),
            stored_len,
            next: 0,
            buf: Vec::with_capacity((CHUNK as usize) + TAG_LEN),
            pos: 0,
            len: 0,
            done: false,
        })
    }

    fn damaged(&self, what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} does not decrypt: {what}", self.path))
    }

    /// Reads and decrypts the next chunk into the buffer.
    fn fill(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let start = stored_start(self.next);
        let want = (chunk_len(self.next) + TAG_LEN as u64).min(self.stored_len.saturating_sub(start));
        if want < TAG_LEN as u64 {
            return Err(self.damaged("truncated"));
        }
        let last = start + want == self.stored_len;
        self.buf.resize(want as usize, 0);
        self.file.read_exact(&mut self.buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.damaged("truncated while read"),
            _ => e,
        })?;
        let n = match self.aead.open_in_place(chunk_nonce(self.next, last), Aad::empty(), &mut self.buf) {
            Ok(p) => p.len(),
            Err(_) => {
                return Err(self.damaged(&format!("chunk {} does not authenticate (damaged or truncated)", self.next)))
            }
        };
        (self.pos, self.len, self.done) = (0, n, last);
        self.next += 1;
        Ok(())
    }
}

impl std::io::Read for DecryptingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.len {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A [`Storage`] whose objects are encrypted with [`DataKeys`] (see the module's comment).
#[derive(Debug, Clone)]
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    keys: Arc<DataKeys>,
}

impl EncryptedStorage {
    /// Encrypts what is stored in `inner` with `keys`.
    pub fn new(inner: Arc<dyn Storage>, keys: DataKeys) -> Self {
        EncryptedStorage { inner, keys: Arc::new(keys) }
    }

    /// The storage underneath, which sees the encrypted bytes.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }
}

fn clear(key: &str) -> bool {
    key.starts_with(CLEAR_PREFIX)
}

/// Runs `f` on a blocking thread when `len` is large, inline otherwise.
async fn cpu<T: Send + 'static>(len: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    if len >= BLOCKING_FROM {
        tokio::task::spawn_blocking(f).await.expect("encryption task panicked")
    } else {
        f()
    }
}

#[async_trait]
impl Storage for EncryptedStorage {
    async fn put(&self, key: &ObjectKey, body: Body, mode: PutMode) -> Result<(), StorageError> {
        if clear(key.as_str()) {
            return self.inner.put(key, body, mode).await;
        }
        let plain: Bytes = match body {
            Body::Bytes(b) => b,
            Body::File(path) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read(&p))
                    .await
                    .expect("read task panicked")
                    .map_err(|e| StorageError::io("read", &path, e))?
                    .into()
            }
        };
        let (keys, path) = (self.keys.clone(), key.as_str().to_string());
        let stored = cpu(plain.len(), move || encrypt(&keys, &path, &plain)).await;
        self.inner.put(key, Body::Bytes(stored.into()), mode).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        if clear(key.as_str()) {
            return self.inner.get(key).await;
        }
        let stored = match self.inner.get(key).await? {
            // A local file is decrypted as it is read: no buffer of the whole object.
            ObjectReader::File(f) => {
                let r = DecryptingReader::open(&self.keys, key.as_str(), f)?;
                return Ok(ObjectReader::Reader(Box::new(r)));
            }
            other => Vec::from(crate::into_bytes(key, other).await?),
        };
        let (keys, path) = (self.keys.clone(), key.as_str().to_string());
        let plain = cpu(stored.len(), move || decrypt(&keys, &path, stored)).await?;
        Ok(ObjectReader::Bytes(plain.into()))
    }

    async fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StorageError> {
        if clear(key.as_str()) {
            return self.inner.read_range(key, range).await;
        }
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let (first, last) = (chunk_of(range.start), chunk_of(range.end - 1));
        let end = stored_start(last + 1);
        // One read from the start when the range is near it (object headers); otherwise the
        // header and the chunks separately.
        let from = stored_start(first);
        let (header, body) = if from <= 1 << 20 {
            let all = self.inner.read_range(key, 0..end).await?;
            let body = all.get(from as usize..).unwrap_or_default().to_vec();
            (all.slice(..all.len().min(HEADER_LEN)), body)
        } else {
            let h = self.inner.read_range(key, 0..HEADER_LEN as u64).await?;
            (h, self.inner.read_range(key, from..end).await?.to_vec())
        };
        if header.is_empty() {
            return Ok(Bytes::new());
        }
        let aead = object_key(&self.keys, key.as_str(), &header)?;
        if body.is_empty() {
            // The range starts at or after the object's end.
            return Ok(Bytes::new());
        }
        let complete = from + (body.len() as u64) < end;
        decrypt_chunks(&aead, key.as_str(), first, body, complete, range)
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let info = self.inner.head(key).await?;
        Ok(plain_info(info))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(self.inner.list(prefix).await?.into_iter().map(plain_info).collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }

    async fn retention(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        self.inner.retention(key).await
    }

    /// None: a caller stages plaintext in its scratch directory, which for a local backend
    /// is inside the repository, where a crash would leave it for any reader of the
    /// repository to find. Staged elsewhere (the system's temporary directory), the file is
    /// read and encrypted here anyway.
    fn scratch_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// `info` with the plaintext size of an encrypted object (an object whose size no encryption
/// has keeps its stored size: reading it will say what is wrong).
fn plain_info(info: ObjectInfo) -> ObjectInfo {
    if clear(info.key.as_str()) {
        return info;
    }
    let size = plain_size(info.size).unwrap_or(info.size);
    ObjectInfo { size, ..info }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStorage;

    fn keys() -> DataKeys {
        let mut m = BTreeMap::new();
        m.insert("0123456789abcdef".to_string(), random_key());
        m.insert("fedcba9876543210".to_string(), random_key());
        DataKeys::new("0123456789abcdef", m).unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn sizes_round_trip_at_every_chunk_boundary() {
        let k = keys();
        for n in [0u64, 1, 4095, 4096, 4097, 4096 + 65535, 4096 + 65536, 4096 + 65537, 3 * 65536, 1 << 20] {
            let stored = encrypt(&k, "a/b", &sample(n as usize));
            assert_eq!(stored.len() as u64, stored_size(n), "{n}");
            assert_eq!(plain_size(stored.len() as u64), Some(n), "{n}");
            assert_eq!(decrypt(&k, "a/b", stored).unwrap(), sample(n as usize), "{n}");
        }
        assert_eq!(plain_size(HEADER_LEN as u64 + 15), None);
        assert_eq!(plain_size(stored_size(4096) + 5), None, "a chunk of tag bytes only");
    }

    #[test]
    fn damage_truncation_renaming_and_unknown_keys_fail() {
        let k = keys();
        let data = sample(200_000);
        let stored = encrypt(&k, "c/wal/x.zst", &data);
        assert!(!stored.windows(64).any(|w| data.windows(64).next() == Some(w)), "no plaintext");
        for at in [0, 10, 30, 60, HEADER_LEN + 5, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 1;
            assert!(decrypt(&k, "c/wal/x.zst", bad).is_err(), "flip at {at}");
        }
        // Cut at a chunk boundary: the new last chunk was not sealed as the last one.
        let cut = stored_start(2) as usize;
        assert!(decrypt(&k, "c/wal/x.zst", stored[..cut].to_vec()).is_err());
        assert!(decrypt(&k, "c/wal/x.zst", stored[..stored.len() - 3].to_vec()).is_err());
        assert!(decrypt(&k, "c/wal/y.zst", stored.clone()).is_err(), "another name");
        let other = DataKeys::new("0123456789abcdef", [("0123456789abcdef".to_string(), random_key())].into()).unwrap();
        assert!(matches!(decrypt(&other, "c/wal/x.zst", stored.clone()), Err(StorageError::Damaged { .. })));
        let only_other = DataKeys::new("fedcba9876543210", [("fedcba9876543210".to_string(), random_key())].into());
        assert!(matches!(
            decrypt(&only_other.unwrap(), "c/wal/x.zst", stored),
            Err(StorageError::KeyUnavailable { .. })
        ));
        assert!(matches!(decrypt(&k, "p", data), Err(StorageError::Damaged { .. })), "plaintext");
    }

    #[tokio::test]
    async fn ranges_decrypt_only_what_they_need() {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let s = EncryptedStorage::new(inner.clone(), keys());
        let data = sample(300_000);
        let key = ObjectKey::new("c/obj").unwrap();
        s.put(&key, Body::Bytes(data.clone().into()), PutMode::CreateNew).await.unwrap();
        let n = data.len() as u64;
        for r in [0..256, 0..4096, 4000..5000, 4096..4097, 70_000..200_000, n - 10..n, n - 10..n + 100, 0..n, 5..n + 1]
        {
            let got = s.read_range(&key, r.clone()).await.unwrap();
            let want = &data[r.start as usize..(r.end.min(n)) as usize];
            assert_eq!(&got[..], want, "{r:?}");
        }
        assert!(s.read_range(&key, n..n + 10).await.unwrap().is_empty());
        assert!(s.read_range(&key, n + 100_000..n + 200_000).await.unwrap().is_empty());
        assert_eq!(s.head(&key).await.unwrap().size, n);
        assert_eq!(s.list("c/").await.unwrap()[0].size, n);
        assert_eq!(inner.head(&key).await.unwrap().size, stored_size(n));
        // A range ending exactly at a chunk's end that is also the object's end.
        let exact = ObjectKey::new("c/exact").unwrap();
        let d2 = sample(4096 + 65536);
        s.put(&exact, Body::Bytes(d2.clone().into()), PutMode::CreateNew).await.unwrap();
        assert_eq!(&s.read_range(&exact, 4000..4096 + 65536).await.unwrap()[..], &d2[4000..]);
        assert_eq!(&s.read_range(&exact, 0..4096).await.unwrap()[..], &d2[..4096]);
    }

    #[test]
    fn plaintext_is_never_staged_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(crate::local::LocalStorage::open(dir.path()).unwrap());
        assert!(local.scratch_dir().is_some());
        assert_eq!(EncryptedStorage::new(local, keys()).scratch_dir(), None);
    }

    #[tokio::test]
    async fn the_record_prefix_is_stored_in_the_clear() {
        let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let s = EncryptedStorage::new(inner.clone(), keys());
        let k = ObjectKey::new("_pitr/encryption.json").unwrap();
        s.put(&k, Body::Bytes(Bytes::from_static(b"{}")), PutMode::CreateNew).await.unwrap();
        assert_eq!(&crate::read_all(inner.as_ref(), &k).await.unwrap()[..], b"{}");
    }

    /// From a local file the object is decrypted as it is read; damage and truncation fail
    /// the read with InvalidData, and the conformance suite passes that way too.
    #[tokio::test]
    async fn local_files_decrypt_as_they_are_read() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(crate::local::LocalStorage::open(dir.path()).unwrap());
        let s = EncryptedStorage::new(local, keys());
        let data = sample(300_000);
        let key = ObjectKey::new("c/obj").unwrap();
        s.put(&key, Body::Bytes(data.clone().into()), PutMode::CreateNew).await.unwrap();
        let ObjectReader::Reader(mut r) = s.get(&key).await.unwrap() else { panic!("not a reader") };
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert!(back == data);
        assert!(crate::read_all(&s, &key).await.unwrap() == data);
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("flipped", |b| {
                let mid = b.len() / 2;
                b[mid] ^= 1
            }),
            ("cut-at-a-chunk-end", |b| b.truncate(stored_start(2) as usize)),
            ("cut-inside", |b| {
                let n = b.len() - 5;
                b.truncate(n)
            }),
        ];
        for (what, damage) in damages {
            let k = ObjectKey::new(format!("c/{what}")).unwrap();
            s.put(&k, Body::Bytes(data.clone().into()), PutMode::CreateNew).await.unwrap();
            let file = dir.path().join(k.as_str());
            let mut bytes = std::fs::read(&file).unwrap();
            damage(&mut bytes);
            std::fs::write(&file, &bytes).unwrap();
            let ObjectReader::Reader(mut r) = s.get(&k).await.unwrap() else { panic!("not a reader") };
            let e = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{what}: {e}");
            assert!(matches!(crate::read_all(&s, &k).await, Err(StorageError::Damaged { .. })), "{what}");
        }
        let conf = tempfile::tempdir().unwrap();
        let local: Arc<dyn Storage> = Arc::new(crate::local::LocalStorage::open(conf.path()).unwrap());
        crate::conformance::run_all(&EncryptedStorage::new(local, keys()), "conf").await;
    }

    #[tokio::test]
    async fn passes_the_storage_conformance_suite() {
        let s = EncryptedStorage::new(Arc::new(MemoryStorage::new()), keys());
        crate::conformance::run_all(&s, "conf").await;
    }
}
