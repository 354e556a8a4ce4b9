//! Fixtures for the end-to-end tests: real PostgreSQL clusters ([`pg`]), real S3-compatible
//! servers ([`s3`]) and the project's binaries run as processes ([`bins`]).

pub mod bins;
pub mod campaign;
pub mod fake_s3;
pub mod fault_proxy;
pub mod fs;
pub mod matrix;
pub mod pg;
pub mod receiver;
pub mod repo;
pub mod s3;
pub mod wal;
