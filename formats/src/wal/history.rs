//! Timeline history files (`NNNNNNNN.history`): which parent timeline each timeline forked
//! from, and at which LSN.
//!
//! Format (`timeline.c: readTimeLineHistory`): one line per ancestor, oldest first,
//! `parentTLI<TAB>switchpoint<TAB>reason`; blank lines and `#` comments are ignored. The parent
//! is valid for LSNs below the switch point; the child starts exactly at it.

use super::TimelineId;
use crate::lsn::Lsn;

/// One ancestor line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The parent timeline.
    pub parent: TimelineId,
    /// Where the child forked from the parent.
    pub switch_point: Lsn,
    /// Free text (e.g. `no recovery target specified`).
    pub reason: String,
}

/// A history file that PostgreSQL would not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timeline history, line {line}: {message}")]
pub struct HistoryError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses the content of the history file of `timeline`.
pub fn parse(timeline: TimelineId, content: &[u8]) -> Result<Vec<HistoryEntry>, HistoryError> {
    let text = std::str::from_utf8(content).map_err(|_| HistoryError { line: 0, message: "not text".into() })?;
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| HistoryError { line: i + 1, message };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ['\t', ' ']);
        let parent: u32 =
            fields.next().unwrap_or("").parse().map_err(|_| err(format!("bad timeline id in {raw:?}")))?;
        let switch_point: Lsn =
            fields.next().unwrap_or("").trim().parse().map_err(|_| err(format!("bad switch point in {raw:?}")))?;
        let reason = fields.next().unwrap_or("").trim().to_string();
        if let Some(prev) = out.last() {
            if parent <= prev.parent.0 || switch_point < prev.switch_point {
                return Err(err("timeline ids and switch points must increase".into()));
            }
        }
        if parent == 0 || parent >= timeline.0 {
            return Err(err(format!("parent timeline {parent} is not below timeline {timeline}")));
        }
        out.push(HistoryEntry { parent: TimelineId(parent), switch_point, reason });
    }
    if out.is_empty() {
        return Err(HistoryError { line: 0, message: "no ancestor lines".into() });
    }
    Ok(out)
}

/// Where `timeline` ended according to the history files of later timelines (each given as
/// its parsed entries): the earliest switch point out of `timeline` that any of them records,
/// `None` when none names it as a parent (it is the newest timeline of its branch).
pub fn ended_at<'a>(timeline: TimelineId, later: impl IntoIterator<Item = &'a [HistoryEntry]>) -> Option<Lsn> {
    later.into_iter().flatten().filter(|e| e.parent == timeline).map(|e| e.switch_point).min()
}

/// Where `timeline` ended: [`ended_at`] over the history files of `timeline + 1`,
/// `timeline + 2`, ... as `read` returns them, read until one is missing (as PostgreSQL looks
/// for the newest timeline).
pub async fn timeline_end<F, Fut, E>(timeline: TimelineId, mut read: F) -> Result<Option<Lsn>, E>
where
    F: FnMut(TimelineId) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<HistoryEntry>>, E>>,
{
    let mut later = Vec::new();
    let mut t = timeline.0;
    while let Some(n) = t.checked_add(1) {
        t = n;
        match read(TimelineId(n)).await? {
            Some(h) => later.push(h),
            None => break,
        }
    }
    Ok(ended_at(timeline, later.iter().map(Vec::as_slice)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_files() {
        let h = parse(TimelineId(2), b"1\t0/401D108\tbefore 2026-11-22 03:56:35.301525+00\n\n").unwrap();
        assert_eq!(
            h,
            vec![HistoryEntry {
                parent: TimelineId(1),
                switch_point: "0/401D108".parse().unwrap(),
                reason: "before 2026-11-22 03:56:35.301525+00".into()
            }]
        );
        let h =
            parse(TimelineId(3), b"# comment\n1\t0/3000000\tno recovery target specified\n2\t0/5000A00\tx\n").unwrap();
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn where_a_timeline_ended() {
        let two = parse(TimelineId(2), b"1\t0/5000100\tx\n").unwrap();
        let three = parse(TimelineId(3), b"1\t0/5000100\tx\n2\t0/9000000\ty\n").unwrap();
        let t = |n| TimelineId(n);
        assert_eq!(ended_at(t(1), [&two[..], &three[..]]), Some("0/5000100".parse().unwrap()));
        assert_eq!(ended_at(t(2), [&two[..], &three[..]]), Some("0/9000000".parse().unwrap()));
        assert_eq!(ended_at(t(3), [&two[..], &three[..]]), None);
        assert_eq!(ended_at(t(1), []), None);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse(TimelineId(2), b"").is_err());
        assert!(parse(TimelineId(2), b"hello\n").is_err());
        assert!(parse(TimelineId(2), b"2\t0/1\tself\n").is_err());
        assert!(parse(TimelineId(3), b"1\t0/5\ta\n2\t0/4\tb\n").is_err());
        assert!(parse(TimelineId(2), &[0xff, 0xfe]).is_err());
    }
}
