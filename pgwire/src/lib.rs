//! A thin PostgreSQL client for what tokio-postgres cannot do: physical replication
//! (`replication=true` walsender connections, START_REPLICATION's COPY BOTH stream,
//! BASE_BACKUP's COPY OUT). `basebackup create` and `wal-archiver receive` use it.
//!
//! Connection strings, `PG*` variables and `.pgpass` follow libpq ([`conninfo`], [`pgpass`]),
//! TLS follows libpq's `sslmode` ([`tls`]), authentication covers trust, password, MD5 and
//! SCRAM-SHA-256 (with channel binding over TLS). [`Connection`] speaks the simple-query protocol with
//! three levels of reading (messages, responses, whole queries) and splits into a reader and
//! a writer for streaming: keep the [`ConnectionWriter`] in its own task that sends a
//! [`StandbyStatusUpdate`] on a timer and whenever a keepalive asks for one, so the walsender
//! never times out while the consumer of the [`ConnectionReader`] is slow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), common::pgwire::PgWireError> {
//! use common::pgwire::{ConnParams, Connection, Replication};
//! let params = ConnParams::parse("host=/var/run/postgresql user=replicator")?
//!     .with_replication(Replication::Physical)
//!     .with_fallback_application_name("walarchiver");
//! let mut conn = Connection::connect(&params).await?;
//! let id = conn.identify_system().await?;
//! println!("system {} timeline {} at {}", id.systemid, id.timeline, id.xlogpos);
//! # Ok(()) }
//! ```

mod auth;
mod conn;
pub mod conninfo;
pub mod env;
mod error;
pub mod message;
pub mod pgpass;
mod replication;
mod stream;
pub mod tls;

pub use conn::{Connection, ConnectionReader, ConnectionWriter, CopyBothStart, CopyOut, Response, ResultSet};
pub use conninfo::{ChannelBindingMode, ConnParams, Host, Password, Replication, SslMode, Target};
pub use env::{Environment, FakeEnv, ProcessEnv};
pub use error::{PgWireError, Result, ServerError};
pub use message::{BackendMessage, Column, CopyFormat};
pub use replication::{
    parse_wal_segment_size, pg_now_micros, BaseBackupMessage, IdentifySystem, PrimaryKeepalive, ReplicationMessage,
    StandbyStatusUpdate, TimelineHistoryFile, XLogData, PG_EPOCH_OFFSET_MICROS,
};
