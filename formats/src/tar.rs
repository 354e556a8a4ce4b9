//! A streaming reader of tar archives (ustar, with GNU long names and pax path/size records),
//! fed with arbitrary slices of the byte stream: a member may start in one slice and end in
//! another, so a backup's tar can be checked while it streams past (`basebackup create`),
//! chunk by chunk (`basebackup verify`), or extracted (restore).
//!
//! [`TarReader::feed`] hands each member to a [`TarVisitor`]: its header, then its data in as
//! many pieces as it arrived, then its end. [`FileDigests`] is the visitor that computes the
//! size and CRC-32C of every regular file, the checksum PostgreSQL's backup manifest records.
//!
//! PostgreSQL writes plain ustar headers (`src/port/tar.c`): names of at most 99 bytes,
//! octal numbers, base-256 sizes above 8 GiB, and two 512-byte zero blocks at the end.

use std::collections::BTreeMap;

/// Bytes in a tar block.
pub const BLOCK: usize = 512;
/// Largest GNU long-name or pax record accepted (they are held in memory).
const MAX_META: u64 = 1 << 20;

/// What kind of member a header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (`'0'` or NUL); its data follows.
    File,
    /// A directory (`'5'`).
    Directory,
    /// A symbolic link (`'2'`) to `link_name`.
    Symlink,
    /// A hard link (`'1'`) to `link_name`.
    HardLink,
    /// Anything else (devices, FIFOs, ...), with its type flag.
    Other(u8),
}

/// One member's header, with GNU long names and pax overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarHeader {
    /// The member's path, as raw bytes (tar does not promise UTF-8).
    pub path: Vec<u8>,
    /// What it is.
    pub kind: MemberKind,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
    /// Link target for symlinks and hard links.
    pub link_name: Vec<u8>,
    /// Offset of the header in the archive stream.
    pub offset: u64,
}

impl TarHeader {
    /// The path as text (lossy for non-UTF-8 names).
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// The stream is not a well-formed tar archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header block failed its checksum or holds an unreadable number.
    #[error("bad tar header at byte {offset}: {reason}")]
    BadHeader {
        /// Offset of the header in the stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside a member or before the two zero blocks that end an archive.
    #[error("tar archive is truncated: {0}")]
    Truncated(String),
    /// Non-zero bytes after the end-of-archive marker.
    #[error("unexpected data after the end of the tar archive at byte {0}")]
    TrailingData(u64),
    /// The visitor refused a member.
    #[error("{0}")]
    Visitor(String),
}

/// Receives the members of an archive from [`TarReader::feed`].
pub trait TarVisitor {
    /// A member starts.
    fn start(&mut self, header: &TarHeader) -> Result<(), TarError>;
    /// Some of the current member's data (in order; the pieces add up to `header.size`).
    fn data(&mut self, data: &[u8]) -> Result<(), TarError>;
    /// The current member's data is complete.
    fn end(&mut self) -> Result<(), TarError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    GnuLongName,
    GnuLongLink,
    Pax,
    Ignore,
}

#[derive(Debug)]
enum State {
    /// Collecting a header block.
    Header,
    /// Passing a member's data to the visitor.
    Data { remaining: u64, padding: u64 },
    /// Collecting a long-name or pax record.
    Meta { kind: Meta, remaining: u64, padding: u64, buf: Vec<u8> },
    /// Skipping block padding after a member.
    Padding { remaining: u64 },
    /// Saw one zero block.
    OneZero,
    /// Saw the end-of-archive marker; only zeros may follow.
    End,
}

/// Incremental tar parser; see the module documentation.
#[derive(Debug)]
pub struct TarReader {
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    offset: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_link: Option<Vec<u8>>,
    members: u64,
}

impl Default for TarReader {
    fn default() -> Self {
        Self::new()
    }
}

fn padding_for(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses a numeric header field: octal text (NUL/space terminated) or GNU base-256.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(field[0] & 0x3F);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = field.iter().skip_while(|&&b| b == b' ').take_while(|&&b| b != 0 && b != b' ');
    // An empty field is zero (some writers leave uid/gid blank).
    let mut v: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

impl TarReader {
    /// A reader at the start of an archive.
    pub fn new() -> Self {
        TarReader {
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            offset: 0,
            long_name: None,
            long_link: None,
            pax_path: None,
            pax_size: None,
            pax_link: None,
            members: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Members seen so far (not counting long-name and pax records).
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Whether the end-of-archive marker (two zero blocks) has been read.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Checks that the archive ended properly (call after the last `feed`).
    pub fn finish(&self) -> Result<(), TarError> {
        match &self.state {
            State::End if self.filled == 0 => Ok(()),
            State::End => Err(TarError::Truncated(format!("{} stray bytes after the end marker", self.filled))),
            State::Header if self.filled == 0 => {
                Err(TarError::Truncated(format!("no end-of-archive marker after {} bytes", self.offset)))
            }
            State::Header | State::OneZero => {
                Err(TarError::Truncated(format!("ends inside the end-of-archive marker at byte {}", self.offset)))
            }
            State::Data { remaining, .. } | State::Meta { remaining, .. } => {
                Err(TarError::Truncated(format!("ends {remaining} bytes before the end of a member")))
            }
            State::Padding { .. } => Err(TarError::Truncated(format!("ends inside block padding at {}", self.offset))),
        }
    }

    /// Consumes `data`, calling `visitor` for every member it completes or continues.
    pub fn feed<V: TarVisitor + ?Sized>(&mut self, mut data: &[u8], visitor: &mut V) -> Result<(), TarError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header | State::OneZero | State::End => {
                    let take = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
                    self.filled += take;
                    data = &data[take..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.offset += BLOCK as u64;
                        self.on_block(visitor)?;
                    }
                }
                State::Data { remaining, padding } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    visitor.data(&data[..take])?;
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        let padding = *padding;
                        visitor.end()?;
                        self.state = if padding > 0 { State::Padding { remaining: padding } } else { State::Header };
                    }
                }
                State::Meta { kind, remaining, padding, buf } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    if *kind != Meta::Ignore {
                        buf.extend_from_slice(&data[..take]);
                    }
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        let (kind, padding, buf) = (*kind, *padding, std::mem::take(buf));
                        self.on_meta(kind, buf)?;
                        self.state = if padding > 0 { State::Padding { remaining: padding } } else { State::Header };
                    }
                }
                State::Padding { remaining } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_block<V: TarVisitor + ?Sized>(&mut self, visitor: &mut V) -> Result<(), TarError> {
        let at = self.offset - BLOCK as u64;
        let zero = self.block.iter().all(|&b| b == 0);
        match self.state {
            State::End if zero => return Ok(()),
            State::End => return Err(TarError::TrailingData(at)),
            State::OneZero if zero => {
                self.state = State::End;
                return Ok(());
            }
            State::OneZero => {
                return Err(TarError::BadHeader { offset: at, reason: "a zero block inside the archive".into() })
            }
            _ if zero => {
                self.state = State::OneZero;
                return Ok(());
            }
            _ => {}
        }
        let b = &self.block;
        let bad = |reason: String| TarError::BadHeader { offset: at, reason };
        let stored = number(&b[148..156]).ok_or_else(|| bad("unreadable checksum field".into()))?;
        let unsigned: u64 =
            b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { u64::from(x) }).sum();
        let signed: i64 =
            b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { i64::from(x as i8) }).sum();
        if stored != unsigned && stored as i64 != signed {
            return Err(bad(format!("checksum {stored} does not match the header (computed {unsigned})")));
        }
        let size = number(&b[124..136]).ok_or_else(|| bad("unreadable size".into()))?;
        let typeflag = b[156];
        let data_padding = padding_for(size);
        let meta = match typeflag {
            b'L' => Some(Meta::GnuLongName),
            b'K' => Some(Meta::GnuLongLink),
            b'x' => Some(Meta::Pax),
            b'g' => Some(Meta::Ignore),
            _ => None,
        };
        if let Some(kind) = meta {
            if size > MAX_META && kind != Meta::Ignore {
                return Err(bad(format!("{size}-byte extended header is too large")));
            }
            self.state = if size == 0 {
                State::Header
            } else {
                State::Meta { kind, remaining: size, padding: data_padding, buf: Vec::new() }
            };
            return Ok(());
        }
        let ustar = &b[257..263] == b"ustar\0";
        let mut path = cstr(&b[0..100]).to_vec();
        let prefix = cstr(&b[345..500]);
        if ustar && !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(&path);
            path = p;
        }
        if let Some(p) = self.pax_path.take().or(self.long_name.take()) {
            path = p;
        }
        self.long_name = None;
        let mut link_name = cstr(&b[157..257]).to_vec();
        if let Some(l) = self.pax_link.take().or(self.long_link.take()) {
            link_name = l;
        }
        self.long_link = None;
        let size = self.pax_size.take().unwrap_or(size);
        let kind = match typeflag {
            b'0' | 0 | b'7' => MemberKind::File,
            b'5' => MemberKind::Directory,
            b'2' => MemberKind::Symlink,
            b'1' => MemberKind::HardLink,
            t => MemberKind::Other(t),
        };
        // Links and directories carry no data whatever the size field says (POSIX).
        let size =
            if matches!(kind, MemberKind::Directory | MemberKind::Symlink | MemberKind::HardLink) { 0 } else { size };
        if path.is_empty() {
            return Err(bad("empty member name".into()));
        }
        let header = TarHeader {
            path,
            kind,
            size,
            mode: number(&b[100..108]).unwrap_or(0) as u32,
            uid: number(&b[108..116]).unwrap_or(0),
            gid: number(&b[116..124]).unwrap_or(0),
            mtime: number(&b[136..148]).unwrap_or(0),
            link_name,
            offset: at,
        };
        self.members += 1;
        visitor.start(&header)?;
        if size == 0 {
            visitor.end()?;
            self.state = State::Header;
        } else {
            self.state = State::Data { remaining: size, padding: padding_for(size) };
        }
        Ok(())
    }

    fn on_meta(&mut self, kind: Meta, buf: Vec<u8>) -> Result<(), TarError> {
        match kind {
            Meta::GnuLongName => self.long_name = Some(cstr(&buf).to_vec()),
            Meta::GnuLongLink => self.long_link = Some(cstr(&buf).to_vec()),
            Meta::Ignore => {}
            Meta::Pax => {
                // Records: "<len> <key>=<value>\n".
                let mut rest = &buf[..];
                while !rest.is_empty() {
                    let sp = rest.iter().position(|&b| b == b' ').ok_or_else(|| self.pax_error())?;
                    let len: usize = std::str::from_utf8(&rest[..sp])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .filter(|&l| l > sp + 1 && l <= rest.len())
                        .ok_or_else(|| self.pax_error())?;
                    let record = &rest[sp + 1..len];
                    let record = record.strip_suffix(b"\n").unwrap_or(record);
                    if let Some(eq) = record.iter().position(|&b| b == b'=') {
                        let (key, value) = (&record[..eq], &record[eq + 1..]);
                        match key {
                            b"path" => self.pax_path = Some(value.to_vec()),
                            b"linkpath" => self.pax_link = Some(value.to_vec()),
                            b"size" => {
                                self.pax_size = Some(
                                    std::str::from_utf8(value)
                                        .ok()
                                        .and_then(|s| s.parse().ok())
                                        .ok_or_else(|| self.pax_error())?,
                                )
                            }
                            _ => {}
                        }
                    }
                    rest = &rest[len..];
                }
            }
        }
        Ok(())
    }

    fn pax_error(&self) -> TarError {
        TarError::BadHeader { offset: self.offset, reason: "malformed pax extended header".into() }
    }
}

/// Size and CRC-32C of one regular file of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// Bytes of content.
    pub size: u64,
    /// CRC-32C of the content (the manifest's `CRC32C` checksum).
    pub crc32c: u32,
}

/// A [`TarVisitor`] that records the size and CRC-32C of every regular file, by path.
#[derive(Debug, Default)]
pub struct FileDigests {
    /// Regular files seen so far.
    pub files: BTreeMap<Vec<u8>, FileDigest>,
    /// Directories, symlinks and other members seen (path, kind).
    pub others: Vec<(Vec<u8>, MemberKind)>,
    current: Option<(Vec<u8>, u64, u32)>,
}

impl FileDigests {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TarVisitor for FileDigests {
    fn start(&mut self, h: &TarHeader) -> Result<(), TarError> {
        if h.kind == MemberKind::File {
            self.current = Some((h.path.clone(), 0, 0));
        } else {
            self.others.push((h.path.clone(), h.kind.clone()));
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<(), TarError> {
        if let Some((_, size, crc)) = &mut self.current {
            *crc = crc32c::crc32c_append(*crc, data);
            *size += data.len() as u64;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), TarError> {
        if let Some((path, size, crc32c)) = self.current.take() {
            if self.files.insert(path.clone(), FileDigest { size, crc32c }).is_some() {
                return Err(TarError::Visitor(format!(
                    "{} appears twice in the archive",
                    String::from_utf8_lossy(&path)
                )));
            }
        }
        Ok(())
    }
}

/// Building tar archives as PostgreSQL writes them, for tests (here and in the crates that
/// restore or stream backups).
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use super::{padding_for, BLOCK};

    /// A ustar header block like PostgreSQL's `tarCreateHeader`.
    pub fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000600\0");
        h[108..116].copy_from_slice(b"0000764\0");
        h[116..124].copy_from_slice(b"0000764\0");
        if size < 0o77777777777 {
            h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..148].copy_from_slice(b"14641513012\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    pub fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
        out.extend_from_slice(&header(name, typeflag, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len() + padding_for(data.len() as u64) as usize, 0);
    }

    /// A regular file member.
    pub fn file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        member(out, name.as_bytes(), b'0', data);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use super::testing::{header, member};

    pub(crate) fn sample_archive() -> Vec<u8> {
        let mut t = Vec::new();
        member(&mut t, b"base/", b'5', b"");
        member(&mut t, b"base/1/1259", b'0', &vec![7u8; 20_000]);
        member(&mut t, b"PG_VERSION", b'0', b"15\n");
        member(&mut t, b"empty", b'0', b"");
        member(&mut t, b"pg_wal", b'2', b"");
        member(&mut t, b"global/pg_control", b'0', &[1u8; 8192]);
        t.extend_from_slice(&[0u8; 1024]);
        t
    }

    fn digests(data: &[u8], piece: usize) -> Result<FileDigests, TarError> {
        let mut r = TarReader::new();
        let mut v = FileDigests::new();
        for c in data.chunks(piece) {
            r.feed(c, &mut v)?;
        }
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn digests_do_not_depend_on_how_the_stream_is_cut() {
        let t = sample_archive();
        let whole = digests(&t, t.len()).unwrap();
        assert_eq!(whole.files.len(), 4);
        let f = whole.files[&b"base/1/1259".to_vec()];
        assert_eq!(f.size, 20_000);
        assert_eq!(f.crc32c, crc32c::crc32c(&vec![7u8; 20_000]));
        assert_eq!(whole.files[&b"empty".to_vec()], FileDigest { size: 0, crc32c: 0 });
        assert_eq!(whole.others.len(), 2);
        for piece in [1, 7, 511, 512, 513, 4096] {
            let v = digests(&t, piece).unwrap();
            assert_eq!(v.files, whole.files, "piece {piece}");
        }
    }

    #[test]
    fn long_names_pax_and_base256() {
        let long = vec![b'a'; 150];
        let mut t = Vec::new();
        let mut name = long.clone();
        name.push(0);
        member(&mut t, b"././@LongLink", b'L', &name);
        member(&mut t, b"short", b'0', b"xyz");
        member(&mut t, b"pax", b'x', b"21 path=pax/name.txt\n");
        member(&mut t, b"ignored", b'0', b"hello");
        t.extend_from_slice(&[0u8; 1024]);
        let v = digests(&t, 100).unwrap();
        assert!(v.files.contains_key(&long));
        assert_eq!(v.files[&b"pax/name.txt".to_vec()].size, 5);
        assert_eq!(v.files.len(), 2);

        let h = header(b"big", b'0', 10 << 30);
        assert_eq!(number(&h[124..136]), Some(10 << 30));
    }

    #[test]
    fn damage_is_reported() {
        let t = sample_archive();
        // truncated inside a member, before the end marker, inside the end marker
        assert!(matches!(digests(&t[..1000], 64), Err(TarError::Truncated(_))));
        assert!(matches!(digests(&t[..t.len() - 1024], 64), Err(TarError::Truncated(_))));
        assert!(matches!(digests(&t[..t.len() - 512], 64), Err(TarError::Truncated(_))));
        // a flipped header byte
        let mut bad = t.clone();
        bad[512 + 3] ^= 1;
        assert!(matches!(digests(&bad, 4096), Err(TarError::BadHeader { offset: 512, .. })));
        // garbage after the end
        let mut trailing = t.clone();
        trailing.extend_from_slice(&[1u8; 512]);
        assert!(matches!(digests(&trailing, 4096), Err(TarError::TrailingData(_))));
        // zeros after the end are fine (record padding)
        let mut padded = t.clone();
        padded.extend_from_slice(&[0u8; 2048]);
        digests(&padded, 4096).unwrap();
        // duplicate member
        let mut dup = Vec::new();
        member(&mut dup, b"a", b'0', b"1");
        member(&mut dup, b"a", b'0', b"2");
        dup.extend_from_slice(&[0u8; 1024]);
        assert!(matches!(digests(&dup, 4096), Err(TarError::Visitor(_))));
    }
}
