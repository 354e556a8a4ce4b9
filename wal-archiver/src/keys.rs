//! `wal-archiver keys`: make a key file, show an encrypted repository's keys, and rotate its
//! key-encryption key (see `common::encryption` for what the keys are).

use std::path::Path;

use common::config::Config;
use common::encryption::{self, kek, EncryptionRecord, Kek, KekSetting};
use common::exit::{Failure, FailureKind};

use crate::cli::KeysCommand;

/// `keys new-key-file FILE`.
pub fn new_key_file(file: &Path) -> Result<(), Failure> {
    let fingerprint = kek::new_key_file(file)?;
    println!("wrote a new key-encryption key to {} (fingerprint {fingerprint})", file.display());
    println!("keep a copy where losing this host cannot take it: without it the repository cannot be read");
    Ok(())
}

/// The other `keys` commands.
pub async fn run(config: &Config, action: KeysCommand) -> Result<(), Failure> {
    let storage = config.open_backend(false).await?;
    let name = config.repo.to_string();
    match action {
        KeysCommand::NewKeyFile { file } => new_key_file(&file),
        KeysCommand::List { json } => {
            let record = encryption::read_record(storage.as_ref(), config.retry).await?;
            if json {
                let v = match &record {
                    Some(r) => serde_json::json!({ "encrypted": true, "record": r }),
                    None => serde_json::json!({ "encrypted": false }),
                };
                println!("{v:#}");
            } else {
                match &record {
                    Some(r) => print!("{}", describe(r)),
                    None => println!("repository {name} is not encrypted"),
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { new_key_file, new_kms_key_id, new_kms_endpoint, new_kms_region } => {
            let old = configured(config).await?;
            let setting = match (new_key_file, new_kms_key_id) {
                (Some(f), _) => KekSetting::File(std::path::absolute(&f).unwrap_or(f)),
                (None, Some(key_id)) => {
                    let (endpoint, region) = match &config.encryption {
                        Some(KekSetting::Kms { endpoint, region, .. }) => (endpoint.clone(), region.clone()),
                        _ => (None, config.s3.region.clone()),
                    };
                    KekSetting::Kms {
                        key_id,
                        endpoint: new_kms_endpoint.or(endpoint),
                        region: new_kms_region.or(region),
                        profile: config.s3.profile.clone(),
                    }
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let new = Kek::open(&setting).await.map_err(|e| e.context("the new key-encryption key"))?;
            let done = encryption::rotate(storage.as_ref(), config.retry, &old, &new, &name).await?;
            println!(
                "repository {name}: every data key is now wrapped by {} as well ({} changed); new objects use data \
                 key {}",
                new.describe(),
                done.changed,
                done.record.current
            );
            println!(
                "next: configure the new key everywhere (archive_command, restore_command, receive, backups), then \
                 run `wal-archiver keys retire` with it"
            );
            Ok(())
        }
        KeysCommand::Retire => {
            let kek = configured(config).await?;
            let done = encryption::retire(storage.as_ref(), config.retry, &kek, &name).await?;
            println!(
                "repository {name}: {} data key(s) now wrapped by {} only ({} changed); other keys open nothing here",
                done.record.keys.len(),
                kek.describe(),
                done.changed
            );
            Ok(())
        }
    }
}

async fn configured(config: &Config) -> Result<Kek, Failure> {
    config.open_kek().await?.ok_or_else(|| {
        Failure::msg(
            FailureKind::Key,
            "no key-encryption key is configured: set encryption-key-file or encryption-kms-key-id to the current key",
        )
    })
}

/// The record, for people.
fn describe(r: &EncryptionRecord) -> String {
    let mut out = format!("encrypted since {} ({}); new objects use data key {}\n", r.created, r.cipher, r.current);
    for k in &r.keys {
        let wraps: Vec<&str> = k.wrapped.iter().map(|w| w.kek.as_str()).collect();
        out.push_str(&format!("data key {} (made {}): wrapped by {}\n", k.id, k.created, wraps.join(", ")));
    }
    out
}
