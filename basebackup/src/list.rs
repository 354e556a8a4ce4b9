//! `list`: the cluster's finished backups (catalog entries only), oldest first.

use common::catalog::{self, BackupEntry};
use common::config::Config;
use common::exit::{Failure, FailureKind};

use crate::progress::human;

/// Stored over raw size as "N.NNx" (how many times smaller the backup is stored).
pub fn ratio(e: &BackupEntry) -> String {
    if e.stored_bytes == 0 {
        "-".into()
    } else {
        format!("{:.2}x", e.raw_bytes as f64 / e.stored_bytes as f64)
    }
}

/// The table `list` prints.
pub fn table(entries: &[BackupEntry], cluster: &str) -> String {
    let mut out = format!(
        "{:<16}  {:>12}  {:>12}  {:>3}  {:<20}  {:<20}  {:>10}  {:>10}  {:>6}\n",
        "id", "start lsn", "stop lsn", "tli", "start time", "stop time", "raw", "stored", "ratio"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<16}  {:>12}  {:>12}  {:>3}  {:<20}  {:<20}  {:>10}  {:>10}  {:>6}\n",
            e.id,
            e.start_lsn.to_string(),
            e.stop_lsn.to_string(),
            e.start_timeline.to_string(),
            e.start_time,
            e.stop_time,
            human(e.raw_bytes),
            human(e.stored_bytes),
            ratio(e)
        ));
    }
    let raw: u64 = entries.iter().map(|e| e.raw_bytes).sum();
    let stored: u64 = entries.iter().map(|e| e.stored_bytes).sum();
    out.push_str(&format!(
        "{} backups, {} raw, {} stored (cluster {cluster:?})\n",
        entries.len(),
        human(raw),
        human(stored)
    ));
    out
}

/// Prints the backups as a table or as JSON lines (one catalog entry per line).
pub async fn list(config: &Config, json: bool) -> Result<(), Failure> {
    let repo = config.open_repository(false).await?;
    let entries = catalog::list_entries(&repo).await?;
    if json {
        for e in &entries {
            let line = serde_json::to_string(e).map_err(|e| Failure::msg(FailureKind::LocalIo, e))?;
            println!("{line}");
        }
    } else {
        print!("{}", table(&entries, repo.cluster()));
    }
    Ok(())
}
