//! `verify`: whether the cluster's archived WAL can carry a restore, checked without a server
//! (the design's "WAL chain: gaps, checksums, timelines"), for operators and a daily cron.
//!
//! One listing of `wal/` finds the objects; the catalog gives the range: from the lowest first
//! segment of the finished backups (WAL before it serves no restore), or with `--all`
//! (or without backups) from the first archived segment, to the last archived one. Then:
//! - every object in the range is read through the same codec path as `get` (zstd frame
//!   checksum, size and BLAKE3 digest against its header), its header must name the file it
//!   is stored as, and a segment's first page must match its name and the cluster record
//!   (magic, system identifier, sizes, page address, timeline); with `--headers-only` only the
//!   object headers are read. History files are always read whole: the chain needs them.
//! - the chain rule of [`verify_chain`](crate::verify_chain) finds the gaps and the timelines
//!   without a history file.
//!
//! Every problem is collected and reported (stdout: a short report, or one JSON document);
//! any problem makes the command fail with exit 6, like a damaged backup in `basebackup
//! verify`. Only a storage failure (exit 5) or an unusable configuration (exit 7) stops it
//! early: then nothing can be concluded.

use std::collections::BTreeSet;
use std::io::Write;

use archive::backup_wal::BackupWal;
use archive::wal_file::{self, MAX_SMALL_FILE};
use common::catalog;
use common::codec::{self, CodecError};
use common::config::Config;
use common::exit::{Failure, FailureKind};
use common::repository::{wal_file_of_key, ClusterInfo, Repository, RepositoryError};
use common::retry::{retry, retry_attempts};
use common::storage::{ObjectKey, ObjectReader};
use common::wal::history::HistoryEntry;
use common::wal::page_header::LONG_HEADER_SIZE;
use common::wal::{TimelineId, WalFileKind, WalFileName, WalSegmentSize};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::verify_chain::{self, Archived};

/// Objects read at the same time. Each holds only stream buffers (about 1.3 MiB), whatever
/// the segment size.
const PARALLEL: usize = 4;
/// What `verify` checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// From the first archived segment instead of the oldest backup's first one.
    pub all: bool,
    /// Read object headers only, not the content (history files excepted).
    pub headers_only: bool,
}

/// Where the checked range starts, and why there.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RangeStart {
    /// The first segment of the range (on the timeline it was found on).
    pub segment: Option<String>,
    /// `oldest-backup`, `all`, or `no-backup`.
    pub reason: &'static str,
    /// The backup whose first segment it is.
    pub backup: Option<String>,
}

/// One timeline in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// The segment where it begins (per its history file), when known.
    pub begins: Option<String>,
    /// First and last segment archived on it in the range.
    pub first: Option<String>,
    /// Last segment archived on it in the range.
    pub last: Option<String>,
    /// Segments (complete or `.partial`) archived on it in the range.
    pub segments: usize,
}

/// Missing segments `first..=last` of one timeline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GapReport {
    /// The timeline.
    pub timeline: u32,
    /// First missing segment.
    pub first: String,
    /// Last missing segment.
    pub last: String,
    /// How many are missing.
    pub segments: u64,
}

/// A damaged object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damaged {
    /// The file it holds (or the key's last part, when that is not a WAL file name).
    pub name: String,
    /// Its key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// Object counts and sizes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Objects {
    /// Objects listed under `wal/`.
    pub listed: usize,
    /// Their stored bytes.
    pub listed_bytes: u64,
    /// Objects checked (in the range, and every history file).
    pub checked: usize,
    /// Their stored bytes.
    pub checked_bytes: u64,
    /// Objects before the range, not checked.
    pub before_range: usize,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// The cluster.
    pub cluster: String,
    /// Whether only headers were read.
    pub headers_only: bool,
    /// Where the range starts.
    pub range: RangeStart,
    /// The timelines, in order.
    pub timelines: Vec<TimelineReport>,
    /// Missing segments.
    pub gaps: Vec<GapReport>,
    /// History files missing for timelines with WAL (`00000003.history`).
    pub missing_histories: Vec<String>,
    /// Damaged objects.
    pub damaged: Vec<Damaged>,
    /// Counts.
    pub objects: Objects,
    /// No gap, no missing history file, no damage.
    pub ok: bool,
}

/// Runs `verify` and prints its report; fails with exit 6 when it found any problem.
pub async fn verify(config: &Config, opts: Options, json: bool) -> Result<(), Failure> {
    let repo = config.open_repository(false).await?;
    let report = check(&repo, opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Failure::new(FailureKind::LocalIo, e))?);
    } else {
        print!("{}", render(&report));
    }
    if report.ok {
        return Ok(());
    }
    Err(Failure::msg(
        FailureKind::Corrupt,
        format!("the WAL of cluster {:?} has {} (see the report on stdout)", report.cluster, problems(&report)),
    ))
}

/// "1 gap (2 segments missing), 1 damaged object".
fn problems(r: &Report) -> String {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut out = Vec::new();
    if !r.gaps.is_empty() {
        let missing: u64 = r.gaps.iter().map(|g| g.segments).sum();
        out.push(format!("{} ({} missing)", plural(r.gaps.len(), "gap"), plural(missing as usize, "segment")));
    }
    if !r.missing_histories.is_empty() {
        out.push(plural(r.missing_histories.len(), "missing history file"));
    }
    if !r.damaged.is_empty() {
        out.push(plural(r.damaged.len(), "damaged object"));
    }
    out.join(", ")
}

/// The human report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let from = match (&r.range.segment, r.range.reason, &r.range.backup) {
        (None, ..) => "nothing archived".to_string(),
        (Some(s), "oldest-backup", Some(b)) => format!("from {s} (first segment of the oldest backup, {b})"),
        (Some(s), "all", _) => format!("from {s} (the first archived segment, --all)"),
        (Some(s), ..) => format!("from {s} (the first archived segment: no backup in the catalog)"),
    };
    let how = if r.headers_only { "object headers only" } else { "every object read and checked" };
    line(format!("cluster {:?}: WAL {from} to the last archived segment; {how}", r.cluster));
    for t in &r.timelines {
        let begins = match (&t.begins, t.timeline) {
            (Some(b), 2..) => format!(", begins at {b}"),
            (None, 2..) => ", where it begins is unknown".to_string(),
            _ => String::new(),
        };
        match (&t.first, &t.last) {
            (Some(f), Some(l)) => {
                let plural = if t.segments == 1 { "" } else { "s" };
                line(format!("timeline {}: {f} .. {l}, {} segment{plural}{begins}", t.timeline, t.segments))
            }
            _ => line(format!("timeline {}: no segments in the range{begins}", t.timeline)),
        }
    }
    for g in &r.gaps {
        line(format!("GAP timeline {}: {} .. {} ({} missing)", g.timeline, g.first, g.last, g.segments));
    }
    for h in &r.missing_histories {
        line(format!("MISSING HISTORY: {h} is not in the repository; a restore cannot follow that timeline"));
    }
    for d in &r.damaged {
        line(format!("DAMAGED {} ({}): {}", d.name, d.key, d.problem));
    }
    let o = &r.objects;
    line(format!(
        "{} objects checked ({} bytes stored), {} before the range not checked; {} objects, {} bytes stored in total",
        o.checked, o.checked_bytes, o.before_range, o.listed, o.listed_bytes
    ));
    if r.ok {
        line("OK".to_string());
    } else {
        line(format!("PROBLEMS: {}", problems(r)));
    }
    out
}

/// How one object checked out.
enum Checked {
    /// Sound; for a history file, its entries.
    Sound(Option<Vec<HistoryEntry>>),
    /// Damaged, and why.
    Damaged(String),
    /// Listed, but gone when read (expired meanwhile): treated as not archived.
    Vanished,
}

/// An object to check.
struct Item {
    name: WalFileName,
    key: ObjectKey,
    stored: u64,
}

/// Checks the repository's WAL and returns the report (problems included); fails only when
/// the repository cannot be read (or holds no such cluster).
pub async fn check(repo: &Repository, opts: Options) -> Result<Report, Failure> {
    let prefix = repo.wal_prefix();
    let listed = retry(repo.retry_policy(), "list WAL", || repo.storage().list(&prefix)).await?;
    let Some(cluster) = repo.cluster_info().await? else {
        if listed.is_empty() {
            return Err(Failure::msg(
                FailureKind::Config,
                format!(
                    "the repository holds no cluster {:?} (no {}): check --repo and --cluster",
                    repo.cluster(),
                    repo.cluster_info_key()
                ),
            ));
        }
        return Err(Failure::msg(
            FailureKind::Corrupt,
            format!(
                "{} is missing although {} WAL objects are stored: the WAL cannot be checked against its cluster",
                repo.cluster_info_key(),
                listed.len()
            ),
        ));
    };
    let size = cluster.segment_size;
    let mut objects =
        Objects { listed: listed.len(), listed_bytes: listed.iter().map(|o| o.size).sum(), ..Default::default() };

    // Sort the listing: WAL files stored under their own key, and everything else (damage).
    let mut damaged = Vec::new();
    let mut files = Vec::new();
    for o in listed {
        let last = o.key.as_str().rsplit('/').next().unwrap_or_default().to_string();
        let problem = match wal_file_of_key(&o.key) {
            None => "not a WAL object: its name is not a WAL file name followed by .zst".to_string(),
            Some(n) if repo.wal_key(&n) != o.key => {
                format!("stored under the wrong key (its key is {})", repo.wal_key(&n))
            }
            Some(n) => match n.segment_number(size) {
                Err(e) => e.to_string(),
                Ok(segno) => {
                    files.push((n, segno, Item { name: n, key: o.key, stored: o.size }));
                    continue;
                }
            },
        };
        damaged.push(Damaged { name: last, key: o.key.to_string(), problem });
    }

    // The range: from the oldest backup's first segment, or from the first archived one.
    let backups = catalog::list_entries(repo).await?;
    let mut must_hold = Vec::new();
    let mut oldest: Option<(u64, WalFileName, String)> = None;
    for b in &backups {
        let range = match BackupWal::of(b) {
            Ok(r) if r.size == size => r,
            _ => {
                tracing::warn!(backup = %b.id, "catalog entry names no valid WAL segments; ignored for the range");
                continue;
            }
        };
        must_hold.extend([(range.first.timeline, range.first_segno), (range.last.timeline, range.last_segno)]);
        if oldest.as_ref().is_none_or(|(s, ..)| range.first_segno < *s) {
            oldest = Some((range.first_segno, range.first, b.id.clone()));
        }
    }
    let first_archived = files.iter().filter_map(|(n, s, _)| s.map(|s| (s, n.with_kind(WalFileKind::Segment)))).min();
    let (from, range) = match (oldest, opts.all) {
        (Some((from, name, id)), false) => {
            (from, RangeStart { segment: Some(name.to_string()), reason: "oldest-backup", backup: Some(id) })
        }
        // --all: from the first archived segment, or the oldest backup's first one if that is
        // missing (its WAL is required in any case).
        (oldest, all) => {
            let first = first_archived.into_iter().chain(oldest.map(|(s, n, _)| (s, n))).min();
            let reason = if all { "all" } else { "no-backup" };
            (
                first.map_or(0, |(s, _)| s),
                RangeStart { segment: first.map(|(_, n)| n.to_string()), reason, backup: None },
            )
        }
    };

    // Check every history file and every object in the range, a few at a time.
    let mut todo = Vec::new();
    for (_, segno, item) in files {
        match segno {
            Some(s) if s < from => objects.before_range += 1,
            _ => todo.push(item),
        }
    }
    objects.checked = todo.len();
    objects.checked_bytes = todo.iter().map(|i| i.stored).sum();
    let total = todo.len();
    tracing::info!(
        "checking {total} objects{}, {} before the range skipped",
        if opts.headers_only { " (headers only)" } else { "" },
        objects.before_range
    );
    let mut archived = Archived::default();
    let (mut partials, mut complete) = (BTreeSet::new(), BTreeSet::new());
    let mut pending = JoinSet::new();
    let mut todo = todo.into_iter();
    let mut done = 0;
    loop {
        while pending.len() < PARALLEL {
            let Some(item) = todo.next() else { break };
            let (repo, cluster) = (repo.clone(), cluster.clone());
            pending.spawn(async move {
                let checked = check_object(&repo, &cluster, &item, opts.headers_only).await;
                (item, checked)
            });
        }
        let Some(joined) = pending.join_next().await else { break };
        let (item, checked) =
            joined.map_err(|e| Failure::msg(FailureKind::LocalIo, format!("check task failed: {e}")))?;
        done += 1;
        if done % 100 == 0 || done == total {
            tracing::info!("checked {done} of {total} objects");
        }
        let name = item.name;
        let present = match checked? {
            Checked::Vanished => {
                tracing::info!(file = %name, "gone since the listing; counted as not archived");
                false
            }
            Checked::Damaged(problem) => {
                tracing::info!(file = %name, "damaged: {problem}");
                damaged.push(Damaged { name: name.to_string(), key: item.key.to_string(), problem });
                if name.kind == WalFileKind::History {
                    archived.histories.insert(name.timeline, None);
                }
                true
            }
            Checked::Sound(entries) => {
                if let Some(h) = entries {
                    archived.histories.insert(name.timeline, Some(h));
                }
                true
            }
        };
        if present && matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
            if let Ok(Some(s)) = name.segment_number(size) {
                archived.segments.entry(name.timeline).or_default().insert(s);
                if name.kind == WalFileKind::Partial { &mut partials } else { &mut complete }
                    .insert((name.timeline, s));
            }
        }
    }
    damaged.sort_by(|a, b| a.name.cmp(&b.name));
    let partial_only: BTreeSet<_> = partials.difference(&complete).copied().collect();
    let chain = verify_chain::check(&archived, size, from, &must_hold);
    let (timelines, gaps, missing_histories) = describe(&chain, size, &partial_only);
    let ok = gaps.is_empty() && missing_histories.is_empty() && damaged.is_empty();
    Ok(Report {
        cluster: repo.cluster().to_string(),
        headers_only: opts.headers_only,
        range,
        timelines,
        gaps,
        missing_histories,
        damaged,
        objects,
        ok,
    })
}

/// The chain check's findings with file names; `partial_only` are the segments archived
/// only as `.partial` files.
fn describe(
    chain: &verify_chain::Chain,
    size: WalSegmentSize,
    partial_only: &BTreeSet<(TimelineId, u64)>,
) -> (Vec<TimelineReport>, Vec<GapReport>, Vec<String>) {
    let seg = |tli: TimelineId, s: u64| WalFileName::segment(tli, s, size);
    let shown = |tli: TimelineId, s: u64| {
        let n = seg(tli, s);
        if partial_only.contains(&(tli, s)) { n.with_kind(WalFileKind::Partial) } else { n }.to_string()
    };
    let timelines: Vec<TimelineReport> = chain
        .timelines
        .iter()
        .map(|t| TimelineReport {
            timeline: t.tli.0,
            begins: t.begins.map(|b| seg(t.tli, b).to_string()),
            first: t.archived.map(|(f, _, _)| shown(t.tli, f)),
            last: t.archived.map(|(_, l, _)| shown(t.tli, l)),
            segments: t.archived.map_or(0, |(_, _, n)| n),
        })
        .collect();
    let gaps: Vec<GapReport> = chain
        .gaps
        .iter()
        .map(|g| GapReport {
            timeline: g.tli.0,
            first: seg(g.tli, g.first).to_string(),
            last: seg(g.tli, g.last).to_string(),
            segments: g.last - g.first + 1,
        })
        .collect();
    let missing_histories = chain.missing_histories.iter().map(|t| WalFileName::history(*t).to_string()).collect();
    (timelines, gaps, missing_histories)
}

/// Checks one object: fully through the codec (or only its header), then its content.
async fn check_object(
    repo: &Repository,
    cluster: &ClusterInfo,
    item: &Item,
    headers_only: bool,
) -> Result<Checked, Failure> {
    let name = item.name;
    if headers_only && name.kind != WalFileKind::History {
        let header = match repo.object_header(&item.key).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Checked::Vanished),
            Err(RepositoryError::Corrupt(m)) => return Ok(Checked::Damaged(m)),
            Err(e) => return Err(e.into()),
        };
        return Ok(match check_header(cluster, &name, &header.name, header.raw_size) {
            Ok(()) => Checked::Sound(None),
            Err(m) => Checked::Damaged(m),
        });
    }
    let keep = if matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
        LONG_HEADER_SIZE
    } else {
        MAX_SMALL_FILE as usize + 1
    };
    // A read cut off in the middle is the network's fault, not the object's: read again,
    // within the retries, before anything is called damaged.
    let read = retry_attempts(repo.retry_policy(), "read WAL object", || async {
        let reader = match retry(repo.retry_policy(), "read WAL object", || repo.storage().get(&item.key)).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err((e.into(), false)),
        };
        let (result, head, interrupted) = tokio::task::spawn_blocking(move || {
            let mut head = Head { keep, bytes: Vec::new() };
            let (r, interrupted) = match reader {
                ObjectReader::File(f) => (codec::decompress(f, &mut head), false),
                ObjectReader::Bytes(b) => (codec::decompress(&b[..], &mut head), false),
                ObjectReader::Reader(r) => (codec::decompress(r, &mut head), false),
                ObjectReader::Stream(s) => {
                    let mut src = codec::SourceErrors::new(tokio_util::io::SyncIoBridge::new(s));
                    let r = codec::decompress(&mut src, &mut head);
                    (r, src.failed())
                }
            };
            (r, head, interrupted)
        })
        .await
        .map_err(|e| (Failure::msg(FailureKind::LocalIo, format!("check task failed: {e}")), false))?;
        match result {
            Ok(h) => Ok(Some(Ok((h, head)))),
            // The reader failed (our sink never does): the repository, not the object.
            Err(e) if interrupted || matches!(e, CodecError::Io(_)) => {
                Err((Failure::msg(FailureKind::Storage, format!("reading {}: {e}", item.key)), true))
            }
            Err(e) => Ok(Some(Err(e.to_string()))),
        }
    })
    .await?;
    let (header, head) = match read {
        None => return Ok(Checked::Vanished),
        Some(Err(m)) => return Ok(Checked::Damaged(m)),
        Some(Ok(r)) => r,
    };
    let checked = check_header(cluster, &name, &header.name, header.raw_size)
        .and_then(|()| check_content(repo.cluster(), cluster, &name, &head.bytes));
    Ok(match checked {
        Ok(h) => Checked::Sound(h),
        Err(m) => Checked::Damaged(m),
    })
}

/// Keeps the first `keep` bytes written to it, and drops the rest.
struct Head {
    keep: usize,
    bytes: Vec<u8>,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.keep.saturating_sub(self.bytes.len()).min(buf.len());
        self.bytes.extend_from_slice(&buf[..room]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an object's header must say: the file it is stored as, and the raw size such a file
/// has (`archive::wal_file`).
fn check_header(cluster: &ClusterInfo, name: &WalFileName, header_name: &str, raw_size: u64) -> Result<(), String> {
    if header_name != name.to_string() {
        return Err(format!("the object holds {header_name:?}, not {name}"));
    }
    wal_file::check_stored_size(cluster, name, raw_size).map_err(|e| e.to_string())
}

/// What the content must be (`archive::wal_file`, as `push` checks it): for a segment, a first
/// page that matches its name and the cluster record; a history file that parses (its entries
/// are returned); a backup history file.
fn check_content(
    cluster_name: &str,
    cluster: &ClusterInfo,
    name: &WalFileName,
    head: &[u8],
) -> Result<Option<Vec<HistoryEntry>>, String> {
    match name.kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            wal_file::check_segment(cluster_name, cluster, name, head, cluster.segment_size.bytes())
                .map(|()| None)
                .map_err(|e| format!("first page: {e}"))
        }
        WalFileKind::History | WalFileKind::Backup => wal_file::check_small(name, head).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::catalog::BackupEntry;
    use common::codec::CompressOptions;
    use common::lsn::Lsn;
    use common::retry::RetryPolicy;
    use common::storage::memory::MemoryStorage;
    use common::storage::{read_all, Body, PutMode};
    use common::wal::{LongPageHeader, PgMajor, SystemId};

    use super::*;

    /// Small segments keep the tests quick; nothing here depends on 16 MiB.
    const MIB: u64 = 1 << 20;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            system_id: SystemId(7_310_000_000_000_000_001),
            pg_major: PgMajor::from_magic(0xD110).unwrap(),
            segment_size: WalSegmentSize::new(MIB).unwrap(),
            block_size: 8192,
        }
    }

    async fn repo() -> Repository {
        let r = Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0));
        r.register_cluster(&cluster()).await.unwrap();
        r
    }

    async fn put(r: &Repository, file: &str, raw: &[u8]) -> ObjectKey {
        let name = WalFileName::parse(file).unwrap();
        let mut obj = std::io::Cursor::new(Vec::new());
        let opts = CompressOptions::default();
        codec::compress(raw, &mut std::io::empty(), &mut obj, file, Some(raw.len() as u64), opts).unwrap();
        let key = r.wal_key(&name);
        r.storage().put(&key, Body::Bytes(obj.into_inner().into()), PutMode::CreateNew).await.unwrap();
        key
    }

    /// Segment `segno` of timeline `tli` (a `.partial` with `partial`): a valid first page,
    /// then filler that zstd cannot make much of, so a flipped byte lands in real data.
    async fn segment(r: &Repository, tli: u32, segno: u64, partial: bool) -> ObjectKey {
        let c = cluster();
        let page = LongPageHeader {
            major: c.pg_major,
            info: 0x0002,
            timeline: TimelineId(tli),
            page_address: Lsn(segno * MIB),
            system_id: c.system_id,
            segment_size: c.segment_size,
            block_size: c.block_size,
        };
        let mut raw = vec![0u8; MIB as usize];
        let mut x = segno.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for b in raw.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        raw[..LONG_HEADER_SIZE].copy_from_slice(&page.encode());
        let mut name = WalFileName::segment(TimelineId(tli), segno, c.segment_size);
        if partial {
            name = name.with_kind(WalFileKind::Partial);
        }
        put(r, &name.to_string(), &raw).await
    }

    async fn backup(r: &Repository, id: &str, start: &str, stop: &str) {
        let e = BackupEntry {
            version: catalog::CATALOG_VERSION,
            id: id.into(),
            label: "t".into(),
            system_id: cluster().system_id,
            server_version_num: 150000,
            segment_size: MIB,
            start_lsn: Lsn(0),
            start_timeline: TimelineId(1),
            stop_lsn: Lsn(0),
            stop_timeline: TimelineId(1),
            start_time: "2026-11-22T07:56:00Z".into(),
            stop_time: "2026-11-22T07:56:05Z".into(),
            archives: vec![],
            manifest_checksum: "00".into(),
            wal_start_segment: start.into(),
            wal_stop_segment: stop.into(),
            raw_bytes: 0,
            stored_bytes: 0,
        };
        let key = ObjectKey::new(catalog::entry_key("main", id)).unwrap();
        let body = serde_json::to_vec(&e).unwrap();
        r.storage().put(&key, Body::Bytes(body.into()), PutMode::CreateNew).await.unwrap();
    }

    async fn flip_byte_in_the_middle(r: &Repository, key: &ObjectKey) {
        let mut obj = read_all(r.storage().as_ref(), key).await.unwrap().to_vec();
        let mid = codec::HEADER_LEN + (obj.len() - codec::HEADER_LEN) / 2;
        obj[mid] ^= 0x55;
        r.storage().put(key, Body::Bytes(obj.into()), PutMode::Overwrite).await.unwrap();
    }

    fn key(file: &str) -> ObjectKey {
        let name = WalFileName::parse(file).unwrap();
        Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0)).wal_key(&name)
    }

    const FULL: Options = Options { all: false, headers_only: false };

    /// Timeline 1 from segment 2, promoted inside segment 5 (its last segment a `.partial`),
    /// timeline 2 from there on.
    async fn promoted() -> Repository {
        let r = repo().await;
        for s in 2..=4 {
            segment(&r, 1, s, false).await;
        }
        segment(&r, 1, 5, true).await;
        put(&r, "00000002.history", b"1\t0/500100\tno recovery target specified\n").await;
        for s in 5..=7 {
            segment(&r, 2, s, false).await;
        }
        put(&r, "000000010000000000000003.00000028.backup", b"START WAL LOCATION: 0/300028\n").await;
        r
    }

    #[tokio::test]
    async fn a_sound_archive_across_a_promotion_is_ok() {
        let r = promoted().await;
        let rep = check(&r, FULL).await.unwrap();
        assert!(rep.ok, "{}", render(&rep));
        assert_eq!(rep.range.reason, "no-backup");
        assert_eq!(rep.range.segment.as_deref(), Some("000000010000000000000002"));
        let tl: Vec<_> =
            rep.timelines.iter().map(|t| (t.timeline, t.first.clone(), t.last.clone(), t.segments)).collect();
        assert_eq!(
            tl,
            vec![
                (1, Some("000000010000000000000002".into()), Some("000000010000000000000005.partial".into()), 4),
                (2, Some("000000020000000000000005".into()), Some("000000020000000000000007".into()), 3),
            ]
        );
        assert_eq!(rep.timelines[1].begins.as_deref(), Some("000000020000000000000005"));
        assert_eq!((rep.objects.listed, rep.objects.checked, rep.objects.before_range), (9, 9, 0));
        assert!(render(&rep).ends_with("OK\n"), "{}", render(&rep));
        // Headers only: the same verdict.
        assert!(check(&r, Options { headers_only: true, ..FULL }).await.unwrap().ok);
    }

    #[tokio::test]
    async fn every_problem_is_reported() {
        let r = promoted().await;
        // A gap on each timeline, a damaged segment, a timeline without history, a history
        // file that does not parse, an object under another file's key.
        r.storage().delete(&key("000000010000000000000003")).await.unwrap();
        r.storage().delete(&key("000000020000000000000006")).await.unwrap();
        flip_byte_in_the_middle(&r, &key("000000020000000000000007")).await;
        for s in [9, 10] {
            segment(&r, 4, s, false).await;
        }
        put(&r, "00000003.history", b"garbage\n").await;
        // Segment 9's object, also stored as segment 8.
        let nine = read_all(r.storage().as_ref(), &segment(&r, 2, 9, false).await).await.unwrap();
        r.storage().put(&key("000000020000000000000008"), Body::Bytes(nine), PutMode::CreateNew).await.unwrap();

        let rep = check(&r, FULL).await.unwrap();
        assert!(!rep.ok);
        let gaps: Vec<_> = rep.gaps.iter().map(|g| (g.first.as_str(), g.last.as_str())).collect();
        assert_eq!(
            gaps,
            vec![
                ("000000010000000000000003", "000000010000000000000003"),
                ("000000020000000000000006", "000000020000000000000006")
            ]
        );
        assert_eq!(rep.missing_histories, vec!["00000004.history".to_string()]);
        let bad: Vec<_> = rep.damaged.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(bad, vec!["000000020000000000000007", "000000020000000000000008", "00000003.history"], "{rep:#?}");
        assert!(rep.damaged[1].problem.contains("holds \"000000020000000000000009\""), "{rep:#?}");
        let text = render(&rep);
        assert!(
            text.contains("PROBLEMS: 2 gaps (2 segments missing), 1 missing history file, 3 damaged objects"),
            "{text}"
        );

        // Headers only: the damaged payload goes unnoticed, everything else does not.
        let rep = check(&r, Options { headers_only: true, ..FULL }).await.unwrap();
        let bad: Vec<_> = rep.damaged.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(bad, vec!["000000020000000000000008", "00000003.history"]);
        assert_eq!(rep.gaps.len(), 2);
        assert_eq!(rep.missing_histories.len(), 1);
    }

    #[tokio::test]
    async fn the_range_starts_at_the_oldest_backup() {
        let r = promoted().await;
        // Segment 2 is older than every backup: missing, it is no gap; --all finds it.
        r.storage().delete(&key("000000010000000000000002")).await.unwrap();
        segment(&r, 1, 0, false).await;
        backup(&r, "20261122T080000Z", "000000020000000000000006", "000000020000000000000006").await;
        backup(&r, "20261122T070000Z", "000000010000000000000003", "000000010000000000000004").await;
        let rep = check(&r, FULL).await.unwrap();
        assert!(rep.ok, "{}", render(&rep));
        assert_eq!(
            rep.range,
            RangeStart {
                segment: Some("000000010000000000000003".into()),
                reason: "oldest-backup",
                backup: Some("20261122T070000Z".into())
            }
        );
        assert_eq!(rep.objects.before_range, 1, "segment 0 is not read");
        assert_eq!(rep.timelines[0].first.as_deref(), Some("000000010000000000000003"));

        let rep = check(&r, Options { all: true, ..FULL }).await.unwrap();
        assert_eq!(rep.range.segment.as_deref(), Some("000000010000000000000000"));
        let gaps: Vec<_> = rep.gaps.iter().map(|g| (g.first.as_str(), g.last.as_str())).collect();
        assert_eq!(gaps, vec![("000000010000000000000001", "000000010000000000000002")]);

        // A backup whose WAL goes past the archive: the rest of its WAL is missing.
        backup(&r, "20261122T090000Z", "000000020000000000000007", "000000020000000000000009").await;
        let rep = check(&r, FULL).await.unwrap();
        let gaps: Vec<_> = rep.gaps.iter().map(|g| (g.first.as_str(), g.last.as_str())).collect();
        assert_eq!(gaps, vec![("000000020000000000000008", "000000020000000000000009")]);
    }

    #[tokio::test]
    async fn a_repository_without_the_cluster_is_a_configuration_error() {
        let r = Repository::new(Arc::new(MemoryStorage::new()), "main", RetryPolicy::with_retries(0));
        let e = check(&r, FULL).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Config, "{e}");
        let rep = check(&repo().await, FULL).await.unwrap();
        assert!(rep.ok && rep.timelines.is_empty() && rep.range.segment.is_none(), "{rep:#?}");
    }
}
