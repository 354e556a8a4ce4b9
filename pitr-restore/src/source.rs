//! Where the planner learns about archived WAL: one narrow trait, and its implementation on a
//! repository. Presence is decided by exact-key reads of each object's header (which carries
//! the segment's summary, see `common::codec`); LIST results are only hints, used to tell "a
//! segment is missing in the middle" from "the archive ends here".

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use common::exit::{Failure, FailureKind};
use common::repository::{wal_file_of_key, Repository};
use common::retry::retry;
use common::wal::history::HistoryEntry;
use common::wal::record::{self, SegmentSummary};
use common::wal::{TimelineId, WalFileKind, WalFileName};

/// What the planner needs to know about archived WAL.
#[async_trait]
pub trait WalSource: Send + Sync {
    /// The summary of a segment, or `None` when that exact segment is not archived.
    async fn segment(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure>;
    /// The summary of the streaming receiver's partial object for segment `name` (its
    /// growing segment, `<cluster>/receiver/<segment>.partial.zst`), or `None` when there is
    /// none for exactly that segment.
    async fn receiver_partial(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure>;
    /// The parsed history file of `tli`, or `None` when it is not archived.
    async fn history(&self, tli: TimelineId) -> Result<Option<Vec<HistoryEntry>>, Failure>;
    /// WAL files a listing shows (hints only).
    async fn listed(&self) -> Result<Listing, Failure>;
}

/// What a listing of the WAL area shows.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Complete segments: (timeline, name).
    pub segments: BTreeSet<WalFileName>,
    /// Timelines with a history file.
    pub histories: BTreeSet<TimelineId>,
}

/// [`WalSource`] on a repository.
#[derive(Debug, Clone)]
pub struct RepoSource {
    repo: Repository,
}

impl RepoSource {
    /// Wraps `repo`.
    pub fn new(repo: Repository) -> Arc<RepoSource> {
        Arc::new(RepoSource { repo })
    }

    async fn read(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, Failure> {
        Ok(self.repo.read_object(&self.repo.wal_key(name)).await?.map(|(_, raw)| raw))
    }
}

#[async_trait]
impl WalSource for RepoSource {
    async fn segment(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure> {
        let Some(header) = self.repo.wal_header(name).await? else {
            return Ok(None);
        };
        if let Some(s) = header.wal {
            return Ok(Some(s));
        }
        // Stored without a summary (an older pitr): read the segment itself.
        tracing::info!(segment = %name, "no summary in the object header; reading the segment");
        let Some(bytes) = self.read(name).await? else {
            return Ok(None);
        };
        record::summarize(&bytes)
            .map(Some)
            .map_err(|e| Failure::msg(FailureKind::Corrupt, format!("archived segment {name}: {e}")))
    }

    async fn receiver_partial(&self, name: &WalFileName) -> Result<Option<SegmentSummary>, Failure> {
        // The receiver uploads it without a summary (a record walk per upload would add to
        // every upload, and in repository durability to every commit): it is read whole here,
        // once, at the end of the plan; compressed it is small (valid WAL, then zeros).
        let key = self.repo.receiver_partial_key(name);
        let Some((header, raw)) = self.repo.read_object(&key).await? else {
            return Ok(None);
        };
        let expected = archive::receiver_partial::object_name(name);
        if header.name != expected {
            return Err(Failure::msg(FailureKind::Corrupt, format!("{key} holds {:?}, not {expected:?}", header.name)));
        }
        if let Some(s) = header.wal {
            return Ok(Some(s));
        }
        record::summarize(&raw)
            .map(Some)
            .map_err(|e| Failure::msg(FailureKind::Corrupt, format!("the receiver's partial segment {key}: {e}")))
    }

    async fn history(&self, tli: TimelineId) -> Result<Option<Vec<HistoryEntry>>, Failure> {
        Ok(self.repo.history(tli).await?)
    }

    async fn listed(&self) -> Result<Listing, Failure> {
        let prefix = self.repo.wal_prefix();
        let storage = self.repo.storage().clone();
        let objects = retry(self.repo.retry_policy(), "list WAL", || storage.list(&prefix)).await?;
        let mut out = Listing::default();
        for o in objects {
            match wal_file_of_key(&o.key) {
                Some(n) if n.kind == WalFileKind::Segment => {
                    out.segments.insert(n);
                }
                Some(n) if n.kind == WalFileKind::History => {
                    out.histories.insert(n.timeline);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
