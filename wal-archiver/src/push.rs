//! `push`: PostgreSQL's archive_command.
//!
//! Contract: exit 0 only once the file is durably in the repository. The validation and the
//! store are [`crate::store`] (`archive::store`, shared with the look-ahead worker and the
//! receiver's uploader); this module adds the command's edge: the look-ahead worker for a
//! backlog. With a second repository, exit 0 means: durably in the main repository, and in
//! the second one or recorded on its pending list ([`crate::pending`]).

use std::path::Path;

use archive::store::Stored;
use common::config::Config;
use common::exit::Failure;

use crate::push_ahead;
use crate::store::store_everywhere as store;

/// What a successful push did.
pub type PushOutcome = Stored;

/// Archives the WAL file at `path` (PostgreSQL's archive_command), first starting the
/// look-ahead worker when more segments wait, and waiting for the worker when it is already
/// pushing this one. Exit 0 still means: this file's content is durably in the repository.
pub async fn push(config: &Config, path: &Path) -> Result<PushOutcome, Failure> {
    let Some(ahead) = push_ahead::Ahead::begin(config, path) else {
        return store(config, path).await;
    };
    let outcome = store(config, path).await;
    drop(ahead);
    outcome
}
