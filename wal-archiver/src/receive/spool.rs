//! The receiver's local spool: the segment being received is `<segment>.partial`, allocated
//! at full segment size (zero-filled, like pg_receivewal's files, so the file is a valid
//! PostgreSQL `.partial` at any moment) and written at the offsets the stream gives. A
//! completed segment is fsynced, renamed to its final name and the directory fsynced, and
//! then waits in the spool until it is stored in the repository.
//!
//! Positions: [`Spool::written`] is the end of the bytes written (reported as `write`),
//! [`Spool::synced`] the end of the bytes fsynced (reported as `flush` in spool durability).
//! All calls block (file I/O and fsync): the caller runs them off the async reactor.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::lsn::Lsn;
use common::wal::{TimelineId, WalFileKind, WalFileName, WalSegmentSize};

/// The open, growing segment.
#[derive(Debug)]
struct OpenSegment {
    segno: u64,
    file: File,
    dirty: bool,
}

/// The spool directory of one receiver, positioned on one timeline.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    seg_size: WalSegmentSize,
    timeline: TimelineId,
    current: Option<OpenSegment>,
    written: Lsn,
    synced: Lsn,
}

/// Runs `f` on the spool in `slot` on a blocking thread and puts the spool back: writes and
/// fsyncs never run on the runtime's workers, which also answer the server's keepalives and
/// serve the status and uploader tasks. Fails (and leaves `slot` empty) only if `f` panicked.
pub async fn blocking<T, F>(slot: &mut Option<Spool>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Spool) -> T + Send + 'static,
{
    let mut spool = slot.take().expect("the spool is open");
    let (spool, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut spool);
        (spool, out)
    })
    .await
    .map_err(|e| io::Error::other(format!("the spool's writer failed: {e}")))?;
    *slot = Some(spool);
    Ok(out)
}

/// Fsyncs a directory (after creating or renaming a file in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn err(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

impl Spool {
    /// A spool in `dir` (created if missing) for `timeline`, positioned at `start` (a segment
    /// start: streaming always restarts at the beginning of a segment, rewriting any spooled
    /// `.partial` of that segment in place with the same bytes).
    pub fn open(dir: &Path, seg_size: WalSegmentSize, timeline: TimelineId, start: Lsn) -> io::Result<Spool> {
        fs::create_dir_all(dir).map_err(|e| err(dir, "create", e))?;
        if start.segment_offset(seg_size) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("spool start {start} is not a segment start"),
            ));
        }
        Ok(Spool { dir: dir.to_path_buf(), seg_size, timeline, current: None, written: start, synced: start })
    }

    /// Positions the spool at `start` again (a segment start at or before the written end)
    /// for a new connection: the stream resends the segment from its beginning, rewriting
    /// the same bytes in place. What was fsynced stays reported as synced.
    pub fn rewind(&mut self, start: Lsn) -> io::Result<()> {
        if start.segment_offset(self.seg_size) != 0 || start > self.written {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot restart the spool at {start} (written up to {})", self.written),
            ));
        }
        self.sync()?;
        self.written = start;
        Ok(())
    }

    /// The segment size.
    pub fn seg_size(&self) -> WalSegmentSize {
        self.seg_size
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The timeline being received.
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// End of the bytes written.
    pub fn written(&self) -> Lsn {
        self.written
    }

    /// End of the bytes fsynced.
    pub fn synced(&self) -> Lsn {
        self.synced
    }

    /// Path of segment `segno` of this timeline in the spool, complete or `.partial`.
    pub fn path(&self, segno: u64, kind: WalFileKind) -> PathBuf {
        self.dir.join(WalFileName::segment(self.timeline, segno, self.seg_size).with_kind(kind).to_string())
    }

    fn open_segment(&self, segno: u64) -> io::Result<OpenSegment> {
        let path = self.path(segno, WalFileKind::Partial);
        let existed = path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&path, "open", e))?;
        let len = file.metadata().map_err(|e| err(&path, "stat", e))?.len();
        let size = self.seg_size.bytes();
        if len > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {len} bytes, larger than a segment ({size})", path.display()),
            ));
        }
        if len < size {
            // Allocate the whole segment now (zeros), so that later writes cannot fail for
            // lack of space and the file reads as a valid .partial at any moment.
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < size {
                let n = (size - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at).map_err(|e| err(&path, "write", e))?;
                at += n as u64;
            }
            file.sync_all().map_err(|e| err(&path, "fsync", e))?;
        }
        if !existed {
            sync_dir(&self.dir).map_err(|e| err(&self.dir, "fsync", e))?;
        }
        Ok(OpenSegment { segno, file, dirty: false })
    }

    /// Writes `data`, which must start where the previous write ended. Returns the segments
    /// this write completed: each fsynced and renamed to its final name (directory fsynced).
    pub fn write(&mut self, start: Lsn, mut data: &[u8]) -> io::Result<Vec<PathBuf>> {
        if start != self.written {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WAL stream jumped: data at {start}, but the previous data ended at {}", self.written),
            ));
        }
        let mut completed = Vec::new();
        let size = self.seg_size.bytes();
        while !data.is_empty() {
            let segno = self.written.segment_number(self.seg_size);
            let offset = self.written.segment_offset(self.seg_size);
            if self.current.as_ref().map(|c| c.segno) != Some(segno) {
                self.current = Some(self.open_segment(segno)?);
            }
            let n = (size - offset).min(data.len() as u64) as usize;
            let cur = self.current.as_mut().expect("opened above");
            cur.file.write_all_at(&data[..n], offset).map_err(|e| err(&self.dir, "write WAL in", e))?;
            cur.dirty = true;
            self.written = Lsn(self.written.0 + n as u64);
            data = &data[n..];
            if offset + n as u64 == size {
                completed.push(self.complete()?);
            }
        }
        Ok(completed)
    }

    /// The open segment is full: fsync, rename to the final name, fsync the directory.
    fn complete(&mut self) -> io::Result<PathBuf> {
        let cur = self.current.take().expect("a segment is open");
        let from = self.path(cur.segno, WalFileKind::Partial);
        let to = self.path(cur.segno, WalFileKind::Segment);
        cur.file.sync_all().map_err(|e| err(&from, "fsync", e))?;
        drop(cur.file);
        fs::rename(&from, &to).map_err(|e| err(&from, "rename", e))?;
        sync_dir(&self.dir).map_err(|e| err(&self.dir, "fsync", e))?;
        self.synced = self.synced.max(Lsn((cur.segno + 1) * self.seg_size.bytes()));
        Ok(to)
    }

    /// Makes everything written durable; returns the new synced position.
    pub fn sync(&mut self) -> io::Result<Lsn> {
        if let Some(cur) = self.current.as_mut() {
            if cur.dirty {
                cur.file.sync_data().map_err(|e| err(&self.dir, "fsync WAL in", e))?;
                cur.dirty = false;
            }
        }
        self.synced = self.synced.max(self.written);
        Ok(self.synced)
    }
}

/// What a spool directory holds from earlier runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpoolContent {
    /// Complete segments not yet stored in the repository, by name order.
    pub complete: Vec<(WalFileName, PathBuf)>,
    /// `.partial` files.
    pub partial: Vec<(WalFileName, PathBuf)>,
}

/// Lists the WAL files in a spool directory (anything else is ignored).
pub fn scan(dir: &Path) -> io::Result<SpoolContent> {
    let mut out = SpoolContent::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(err(dir, "read", e)),
    };
    for e in entries {
        let e = e.map_err(|e| err(dir, "read", e))?;
        let Some(name) = e.file_name().to_str().and_then(|n| WalFileName::parse(n).ok()) else { continue };
        match name.kind {
            WalFileKind::Segment => out.complete.push((name, e.path())),
            WalFileKind::Partial => out.partial.push((name, e.path())),
            _ => {}
        }
    }
    out.complete.sort();
    out.partial.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn seg() -> WalSegmentSize {
        WalSegmentSize::new(MB).unwrap()
    }

    #[test]
    fn writes_split_at_segment_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let tli = TimelineId(1);
        let start = Lsn(3 * MB);
        let mut s = Spool::open(dir.path(), seg(), tli, start).unwrap();
        assert!(s.write(Lsn(3 * MB + 1), b"x").is_err(), "a gap is refused");

        // Half a segment, then a message that crosses into the next segment.
        let a = vec![1u8; (MB / 2) as usize];
        assert!(s.write(start, &a).unwrap().is_empty());
        assert_eq!(s.written(), Lsn(3 * MB + MB / 2));
        assert_eq!(s.synced(), start, "nothing fsynced yet");
        let partial = dir.path().join("000000010000000000000003.partial");
        assert_eq!(fs::metadata(&partial).unwrap().len(), MB, "allocated at full size");

        let b = vec![2u8; MB as usize];
        let done = s.write(s.written(), &b).unwrap();
        let full = dir.path().join("000000010000000000000003");
        assert_eq!(done, vec![full.clone()]);
        assert!(!partial.exists());
        assert_eq!(s.synced(), Lsn(4 * MB), "a completed segment is fsynced");
        let bytes = fs::read(&full).unwrap();
        assert!(bytes[..(MB / 2) as usize].iter().all(|&x| x == 1));
        assert!(bytes[(MB / 2) as usize..].iter().all(|&x| x == 2));

        let next = dir.path().join("000000010000000000000004.partial");
        let bytes = fs::read(&next).unwrap();
        assert_eq!(bytes.len() as u64, MB);
        assert!(bytes[..(MB / 2) as usize].iter().all(|&x| x == 2));
        assert!(bytes[(MB / 2) as usize..].iter().all(|&x| x == 0), "zero-padded");
        assert_eq!(s.sync().unwrap(), Lsn(4 * MB + MB / 2));

        let content = scan(dir.path()).unwrap();
        assert_eq!(content.complete.len(), 1);
        assert_eq!(content.partial.len(), 1);
        assert_eq!(content.partial[0].0.to_string(), "000000010000000000000004.partial");
    }

    #[test]
    fn restart_rewrites_the_partial_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let tli = TimelineId(2);
        let mut s = Spool::open(dir.path(), seg(), tli, Lsn(0)).unwrap();
        s.write(Lsn(0), &[7u8; 1000]).unwrap();
        s.sync().unwrap();
        drop(s);
        // A new run starts at the same segment and gets the first 10 bytes again: what was
        // spooled beyond stays until the stream overwrites it.
        let mut s = Spool::open(dir.path(), seg(), tli, Lsn(0)).unwrap();
        s.write(Lsn(0), &[7u8; 10]).unwrap();
        s.sync().unwrap();
        let bytes = fs::read(dir.path().join("000000020000000000000000.partial")).unwrap();
        assert!(bytes[..1000].iter().all(|&x| x == 7));
        assert!(Spool::open(dir.path(), seg(), tli, Lsn(5)).is_err(), "start must be a segment start");

        // A reconnect rewinds to the segment start; the synced position does not go back.
        s.write(Lsn(10), &[8u8; 90]).unwrap();
        s.sync().unwrap();
        s.rewind(Lsn(0)).unwrap();
        assert_eq!((s.written(), s.synced()), (Lsn(0), Lsn(100)));
        assert!(s.write(Lsn(100), b"x").is_err(), "after a rewind the stream starts at the segment start");
        s.write(Lsn(0), &[7u8; 10]).unwrap();
        assert_eq!(s.sync().unwrap(), Lsn(100));
        assert!(s.rewind(Lsn(MB)).is_err(), "not beyond what was written");
    }
}
