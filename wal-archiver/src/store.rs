//! Storing one WAL file from this program's configuration: open the repository and hand the
//! file to `archive::store` (validation, compression, create-if-absent). The building block
//! below `push`, the look-ahead worker and the receiver's uploader, so that each stores
//! exactly the same object and none of them imports another.

use std::path::Path;

use archive::store::{self, invalid, Stored};
use common::config::Config;
use common::exit::Failure;
use common::wal::WalFileName;

/// Validates and stores the WAL file at `path`. A file whose name is not a WAL file name is
/// refused before the repository is opened.
pub async fn store(config: &Config, path: &Path) -> Result<Stored, Failure> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    WalFileName::parse(file_name).map_err(|e| invalid(&path.display().to_string(), e))?;
    let repo = config.open_repository(true).await?;
    store::store(&repo, config.compress, path).await
}
