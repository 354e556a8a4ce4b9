//! Prefetching for `get`: PostgreSQL asks for one segment at a time and replays it before
//! asking for the next, so fetching on demand leaves replay waiting on every download. After
//! each `get` of a segment, a detached worker (`wal-archiver prefetch-worker`, one at a time,
//! guarded by a file lock) downloads the next `prefetch` segments of the same timeline, in
//! parallel, into a spool directory beside `%p` (`pg_wal/.pitr-prefetch`). The next `get`
//! then serves its segment by renaming it from the spool, or waits briefly for it when the
//! worker is still downloading it.
//!
//! Spool files are verified like any download before they get their final name,
//! `<segment>.b3-<digest>` (the BLAKE3 digest of their content, from the object's header), and
//! verified again at the moment they are served: the file's digest against its name and its
//! first page against the segment asked for. Spool files are never fsynced (a crash only
//! costs a download), so after a power loss one may be truncated, zero-filled or hold stale
//! blocks; such a file is removed and the segment fetched from the repository, never handed to
//! PostgreSQL (which would read "end of WAL" in it and end recovery early). A missing segment
//! stops the worker and is never remembered: the foreground `get` asks the repository itself
//! and answers exactly. Any worker failure only means the foreground fetches the segment
//! itself.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use archive::wal_file::check_first_page;
use common::codec;
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::wal::page_header::LONG_HEADER_SIZE;
use common::wal::{WalFileKind, WalFileName, WalSegmentSize};

use crate::worker;

/// How long `get` waits for a segment the worker is downloading.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// Unclaimed spool files older than this are removed (e.g. left over after recovery ended).
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Parallel downloads of one worker.
const WORKERS: usize = 2;

/// The spool directory for a `get` whose destination is `dest`.
pub fn spool_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(".pitr-prefetch"),
        _ => PathBuf::from(".pitr-prefetch"),
    }
}

fn inflight_marker(spool: &Path, name: &str) -> PathBuf {
    spool.join(format!("{name}.inflight"))
}

/// Between a spool file's segment name and its content's digest.
const DIGEST_TAG: &str = ".b3-";

/// The name a verified download of `name` with BLAKE3 digest `digest` gets in the spool.
fn ready_name(name: &str, digest: &str) -> String {
    format!("{name}{DIGEST_TAG}{digest}")
}

/// A spool file name's segment name and digest (`None` for markers, locks, temporary files).
fn parse_ready(file: &str) -> Option<(&str, &str)> {
    let (name, digest) = file.split_once(DIGEST_TAG)?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some((name, digest))
}

/// The spool's ready file for segment `name`, with its recorded digest.
fn find_ready(spool: &Path, name: &str) -> Option<(PathBuf, String)> {
    fs::read_dir(spool).ok()?.flatten().find_map(|e| {
        let file = e.file_name().to_string_lossy().into_owned();
        let (n, digest) = parse_ready(&file)?;
        (n == name).then(|| (e.path(), digest.to_string()))
    })
}

/// Moves a prefetched `wal` to `dest` if the spool has it and it is intact (waiting while the
/// worker is still downloading it). False when the caller must fetch it itself.
pub fn take(spool: &Path, wal: &WalFileName, dest: &Path) -> bool {
    let name = wal.to_string();
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    loop {
        if let Some((ready, digest)) = find_ready(spool, &name) {
            return serve(&ready, &digest, wal, dest);
        }
        if !inflight_marker(spool, &name).exists() || !worker::running(spool) || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Verifies the spool file `ready` now (its digest against `digest`, its first page against
/// `wal`) and renames it to `dest`; a file that fails is removed and false returned.
fn serve(ready: &Path, digest: &str, wal: &WalFileName, dest: &Path) -> bool {
    match check_spooled(ready, digest, wal) {
        Ok(()) => fs::rename(ready, dest).is_ok(),
        Err(e) => {
            tracing::warn!(file = %wal, spool_file = %ready.display(), "not serving a damaged prefetched file: {e}");
            let _ = fs::remove_file(ready);
            false
        }
    }
}

fn check_spooled(path: &Path, digest: &str, wal: &WalFileName) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut first = [0u8; LONG_HEADER_SIZE];
    f.read_exact(&mut first).map_err(|e| format!("cannot read its first page: {e}"))?;
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let (size, actual) = codec::digest(&mut f).map_err(|e| e.to_string())?;
    if actual != digest {
        return Err(format!("its content ({size} bytes) does not match the digest it was downloaded with"));
    }
    check_first_page(wal, &first, size).map(|_| ()).map_err(|e| e.to_string())
}

/// Starts a worker to fetch the segments after `wal` (just restored to `restored`), unless
/// one is running or at least half of the next `prefetch` segments are in the spool already:
/// a worker then fetches several segments at once instead of one per `get` (each worker is a
/// process start and a repository connection, and PostgreSQL waits for `get` to exit while it
/// starts one). The next segments are marked in flight before the worker starts, so the next
/// `get` waits for the worker instead of racing it.
pub fn kick(config: &Config, spool: &Path, wal: &WalFileName, restored: &Path) {
    if fs::create_dir_all(spool).is_err() || worker::running(spool) {
        return;
    }
    let size = fs::metadata(restored).ok().and_then(|m| WalSegmentSize::new(m.len()).ok());
    if let Some((segno, size)) = size.and_then(|s| Some((wal.segment_number(s).ok().flatten()?, s))) {
        let missing: Vec<String> = (1..=u64::from(config.prefetch))
            .map(|i| WalFileName::segment(wal.timeline, segno + i, size).to_string())
            .filter(|name| find_ready(spool, name).is_none())
            .collect();
        if missing.len() * 2 < config.prefetch as usize {
            return;
        }
        for name in &missing {
            let _ = File::create(inflight_marker(spool, name));
        }
    }
    let after = wal.to_string();
    worker::spawn(
        config,
        spool,
        &["prefetch-worker".as_ref(), "--after".as_ref(), after.as_ref(), "--spool".as_ref(), spool.as_os_str()],
    );
}

/// The worker: fetches up to `config.prefetch` segments after `after` into `spool`.
pub async fn worker(config: &Config, spool: &Path, after: &str) -> Result<(), Failure> {
    let after = WalFileName::parse(after).map_err(|e| Failure::msg(FailureKind::Usage, e))?;
    if after.kind != WalFileKind::Segment {
        return Err(Failure::msg(FailureKind::Usage, "prefetch works on segment names"));
    }
    let Some(lock) = worker::acquire(spool)? else {
        return Ok(()); // another worker is at it
    };
    let repo = config.open_repository(false).await?;
    let Some(cluster) = repo.cluster_info().await? else {
        clear_markers(spool);
        return Ok(());
    };
    let size = cluster.segment_size;
    let first = after.segment_number(size).map_err(|e| Failure::msg(FailureKind::Usage, e))?.unwrap_or(0);
    clean(spool, &after, first, size);

    let wanted: Vec<WalFileName> = (1..=u64::from(config.prefetch))
        .map(|i| WalFileName::segment(after.timeline, first + i, size))
        .filter(|n| find_ready(spool, &n.to_string()).is_none())
        .collect();
    for n in &wanted {
        let _ = File::create(inflight_marker(spool, &n.to_string()));
    }
    let queue = Mutex::new(wanted.clone().into_iter());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(n) = next else { return };
                    let name = n.to_string();
                    if !stop.load(Ordering::SeqCst) {
                        // Downloaded (and verified) under a hidden name, then renamed to its
                        // ready name, which carries the digest `take` checks it against.
                        let download = spool.join(format!(".{name}.download"));
                        let fetched = rt.block_on(archive::fetch::fetch(&repo, &n, &download)).and_then(|h| {
                            fs::rename(&download, spool.join(ready_name(&name, &h.blake3)))
                                .map_err(|e| Failure::msg(FailureKind::LocalIo, e))
                        });
                        if let Err(f) = fetched {
                            let _ = fs::remove_file(&download);
                            if f.kind != FailureKind::NotFound {
                                eprintln!("prefetch of {name} failed: {f}");
                            }
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    let _ = fs::remove_file(inflight_marker(spool, &name));
                }
            });
        }
    });
    clear_markers(spool);
    drop(lock);
    Ok(())
}

/// Removes every in-flight marker (the worker is done with all of them).
fn clear_markers(spool: &Path) {
    for e in fs::read_dir(spool).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".inflight") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes spool files for segments at or before `after`'s position and unclaimed stale ones.
fn clean(spool: &Path, after: &WalFileName, after_segno: u64, size: WalSegmentSize) {
    let Ok(entries) = fs::read_dir(spool) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        let consumed = WalFileName::parse(parse_ready(&name).map_or(name.as_str(), |(n, _)| n))
            .ok()
            .and_then(|n| n.segment_number(size).ok().flatten())
            .is_some_and(|segno| segno <= after_segno);
        let leftover_tmp = name.starts_with('.');
        if (consumed || ((stale || leftover_tmp) && name != "lock" && name != "worker.log"))
            && name != after.to_string()
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_worker_while_half_of_the_window_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let args = common::config::RepoArgs { repo: Some("/nonexistent".into()), ..Default::default() };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.prefetch, 8);
        let spool = dir.path().join(".pitr-prefetch");
        fs::create_dir_all(&spool).unwrap();
        let restored = dir.path().join("RECOVERYXLOG");
        File::create(&restored).unwrap().set_len(16 << 20).unwrap();
        let wal = WalFileName::parse("000000010000000000000010").unwrap();
        // Segments 0x11..=0x15 ready: 3 of the next 8 are missing, fewer than half the
        // window, which is not yet worth a worker.
        for n in 0x11..=0x15u64 {
            let name = WalFileName::segment(wal.timeline, n, WalSegmentSize::DEFAULT).to_string();
            File::create(spool.join(ready_name(&name, &"0".repeat(64)))).unwrap();
        }
        kick(&config, &spool, &wal, &restored);
        let markers = fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".inflight"))
            .count();
        assert_eq!(markers, 0, "no worker was started, no segment marked in flight");
    }

    /// What a power loss can leave of an unsynced spool file (a flipped byte, a truncated
    /// file, zeros where data was) is never served: it is removed and the caller fetches the
    /// segment from the repository. An intact one is served.
    #[test]
    fn damaged_spool_files_are_never_served() {
        let seg = common::wal::synthetic::pgbench_like_segment(0x21, 200);
        let wal = WalFileName::segment(common::wal::TimelineId(1), 0x21, WalSegmentSize::DEFAULT);
        let (_, digest) = codec::digest(&mut &seg[..]).unwrap();
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 5] = [
            ("byte flipped", |b| b[5_000_000] ^= 0x40),
            ("truncated", |b| b.truncate(8 << 20)),
            ("zero-filled tail", |b| b[4096..].fill(0)),
            ("all zeros", |b| b.fill(0)),
            ("empty", |b| b.clear()),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let spool = dir.path().join(".pitr-prefetch");
            fs::create_dir_all(&spool).unwrap();
            let mut bytes = seg.clone();
            damage(&mut bytes);
            let file = spool.join(ready_name(&wal.to_string(), &digest));
            fs::write(&file, &bytes).unwrap();
            let dest = dir.path().join("RECOVERYXLOG");
            assert!(!take(&spool, &wal, &dest), "{what}: served");
            assert!(!dest.exists() && !file.exists(), "{what}: left in place");
        }
        // Another segment's intact file under this segment's name is not served either.
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join(".pitr-prefetch");
        fs::create_dir_all(&spool).unwrap();
        let next = WalFileName::segment(common::wal::TimelineId(1), 0x22, WalSegmentSize::DEFAULT);
        fs::write(spool.join(ready_name(&next.to_string(), &digest)), &seg).unwrap();
        assert!(!take(&spool, &next, &dir.path().join("RECOVERYXLOG")));
        // Intact: served, byte for byte.
        fs::write(spool.join(ready_name(&wal.to_string(), &digest)), &seg).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(take(&spool, &wal, &dest));
        assert!(fs::read(&dest).unwrap() == seg);
    }
}
