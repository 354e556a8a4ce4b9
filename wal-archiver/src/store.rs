//! Storing one WAL file from this program's configuration: open the repository and hand the
//! file to `archive::store` (validation, compression, create-if-absent). The building block
//! below `push`, the look-ahead worker and the receiver's uploader, so that each stores
//! exactly the same object and none of them imports another. With a second repository
//! ([`store_everywhere`]) the file then goes there too, or onto the pending list
//! ([`crate::pending`]).

use std::path::Path;

use archive::store::{self, invalid, Stored};
use common::config::Config;
use common::exit::Failure;
use common::wal::WalFileName;

use crate::pending;

/// Validates and stores the WAL file at `path`. A file whose name is not a WAL file name is
/// refused before the repository is opened.
pub async fn store(config: &Config, path: &Path) -> Result<Stored, Failure> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    WalFileName::parse(file_name).map_err(|e| invalid(&path.display().to_string(), e))?;
    let repo = config.open_repository(true).await?;
    store::store(&repo, config.compress, path).await
}

/// Stores the WAL file at `path` in the main repository, then, when a second repository is
/// configured, in that one or on its pending list ([`pending::store_second`]). Fails when the
/// main repository fails (or the second one's configuration is unusable, found before the
/// main store); what the main store did is the outcome.
pub async fn store_everywhere(config: &Config, path: &Path) -> Result<Stored, Failure> {
    let second = config.repo2()?;
    let stored = store(config, path).await?;
    if let Some(second) = &second {
        pending::store_second(config, second, path).await?;
    }
    Ok(stored)
}
