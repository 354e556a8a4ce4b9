//! S3 and S3-compatible object storage through aws-sdk-s3.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Body, ObjectInfo, ObjectKey, ObjectReader, PutMode, Storage, StorageError};

/// Where and how to reach the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Custom endpoint URL (S3-compatible servers), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region; default from the AWS environment, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub path_style: bool,
}

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    config: S3Config,
}

impl S3Storage {
    /// Builds the client from `config` and the standard AWS credential chain.
    pub async fn connect(config: S3Config) -> Result<Self, StorageError> {
        Ok(S3Storage { config })
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, _key: &ObjectKey, _body: Body, _mode: PutMode) -> Result<(), StorageError> {
        Err(StorageError::Config(format!("s3 not implemented yet ({})", self.config.bucket)))
    }
    async fn get(&self, _key: &ObjectKey) -> Result<ObjectReader, StorageError> {
        Err(StorageError::Config("s3 not implemented yet".into()))
    }
    async fn read_range(&self, _key: &ObjectKey, _range: Range<u64>) -> Result<Bytes, StorageError> {
        Err(StorageError::Config("s3 not implemented yet".into()))
    }
    async fn head(&self, _key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        Err(StorageError::Config("s3 not implemented yet".into()))
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Err(StorageError::Config("s3 not implemented yet".into()))
    }
    async fn delete(&self, _key: &ObjectKey) -> Result<(), StorageError> {
        Err(StorageError::Config("s3 not implemented yet".into()))
    }
}
