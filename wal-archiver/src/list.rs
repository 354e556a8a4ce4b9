//! `list`: what WAL the repository holds for the cluster, for operators and scripts.

use common::config::Config;
use common::exit::Failure;
use common::retry::retry;

/// Prints every WAL object of the cluster: name and stored size, as a table or JSON lines.
pub async fn list(config: &Config, json: bool) -> Result<(), Failure> {
    let repo = config.open_repository(false).await?;
    let prefix = repo.wal_prefix();
    let objects = retry(repo.retry_policy(), "list WAL", || repo.storage().list(&prefix)).await?;
    let mut total = 0u64;
    if !json {
        println!("{:<44} {:>12}", "file", "stored bytes");
    }
    for o in &objects {
        let key = o.key.as_str();
        let name = key.rsplit('/').next().unwrap_or(key).trim_end_matches(".zst");
        total += o.size;
        if json {
            println!("{}", serde_json::json!({ "name": name, "stored_bytes": o.size, "key": key }));
        } else {
            println!("{name:<44} {:>12}", o.size);
        }
    }
    if !json {
        println!("{} files, {total} bytes stored (cluster {:?})", objects.len(), repo.cluster());
    }
    Ok(())
}
