//! The archive's domain rules, each written once and tested beside it. The commands
//! (`wal-archiver push`, `get`, `verify`, `receive`; `basebackup create`, `expire`, `verify`;
//! `pitr-restore`) decide what to do with a rule's answer (refuse with an exit code, report a
//! line, skip an object); they never restate the rule. When two copies of a rule drift, the
//! planner accepts what `get` refuses, or `verify` passes what `push` would refuse: so there
//! is one copy.
//!
//! - [`identity`]: which cluster a server or a WAL file belongs to, against the repository's
//!   cluster record (system identifier, major version, segment and block size);
//! - [`wal_file`]: what a valid WAL file is: a segment's first page against its name and the
//!   cluster, history and backup history files;
//! - [`server`]: what a server says about itself, asked the same way by `basebackup create`
//!   and the receiver;
//! - [`backup_wal`]: which WAL segments a base backup needs;
//! - [`receiver_partial`]: when the streaming receiver's partial segment may serve a restore;
//! - [`store`] and [`fetch`]: verified store and fetch of WAL objects, for `push`, the
//!   look-ahead worker, the receiver's uploader, `get` and the prefetch worker.
//!
//! Dependencies point down: this crate uses `common` (formats, storage, repository layout) and
//! is used by the three programs; it uses none of them.

pub mod backup_wal;
pub mod fetch;
pub mod identity;
pub mod receiver_partial;
pub mod server;
pub mod store;
pub mod wal_file;
