//! `create` against a scripted server that answers BASE_BACKUP the way PostgreSQL 13 and 14
//! do (legacy syntax, one COPY OUT per tablespace without the tar end blocks, then a COPY OUT
//! with the manifest), for what a real server does not show on demand (a stream that differs
//! from its manifest); the version matrix runs real 13 and 14 servers. The same script claims
//! majors pitr does not support (12, 19), which no test machine has.

use std::sync::Arc;
use std::time::Duration;

use basebackup::create::{create, CreateOptions};
use basebackup::verify::verify_backup;
use bytes::{BufMut, BytesMut};
use common::catalog;
use common::codec::{self, CompressOptions};
use common::config::{Config, RepoArgs};
use common::exit::FailureKind;
use common::storage::{read_all, Body, ObjectKey, PutMode, Storage};
use common::tar::testing::file as tar_file;
use common::wal::{TimelineId, WalFileName, WalSegmentSize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn manifest(files: &[(&str, &[u8])], bad_crc_for: Option<&str>) -> Vec<u8> {
    let mut m = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
    for (i, (path, content)) in files.iter().enumerate() {
        let mut crc = crc32c::crc32c(content);
        if bad_crc_for == Some(path) {
            crc ^= 1;
        }
        if i > 0 {
            m.push_str(",\n");
        }
        m.push_str(&format!(
            "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-22 03:56:08 GMT\", \
             \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            content.len(),
            hex::encode(crc.to_le_bytes())
        ));
    }
    m.push_str(
        "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/3000028\", \"End-LSN\": \"0/3000100\" }\n],\n",
    );
    let sum = hex::encode(Sha256::digest(m.as_bytes()));
    m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    m.into_bytes()
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(body);
    b.to_vec()
}

fn row_description(names: &[&str]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(names.len() as i16);
    for n in names {
        b.put_slice(n.as_bytes());
        b.put_u8(0);
        b.put_i32(0);
        b.put_i16(0);
        b.put_i32(25);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i16(0);
    }
    msg(b'T', &b)
}

fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v.as_bytes());
            }
            None => b.put_i32(-1),
        }
    }
    msg(b'D', &b)
}

fn complete(tag: &str) -> Vec<u8> {
    let mut t = tag.as_bytes().to_vec();
    t.push(0);
    msg(b'C', &t)
}

fn result_set(names: &[&str], rows: &[Vec<Option<&str>>], tag: &str) -> Vec<u8> {
    let mut out = row_description(names);
    for r in rows {
        out.extend(data_row(r));
    }
    out.extend(complete(tag));
    out
}

fn copy_out(data: &[u8], piece: usize) -> Vec<u8> {
    let mut out = msg(b'H', &[0, 0, 0]);
    for p in data.chunks(piece) {
        out.extend(msg(b'd', p));
    }
    out.extend(msg(b'c', &[]));
    out
}

async fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let tag = s.read_u8().await.ok()?;
    let len = s.read_i32().await.ok()? as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// The archives the scripted PostgreSQL 14 sends, and its manifest.
struct Script {
    /// `server_version_num`.
    version_num: &'static str,
    tablespace_tar: Vec<u8>,
    base_tar: Vec<u8>,
    manifest: Vec<u8>,
}

async fn serve(listener: TcpListener, script: Script, seen: Arc<std::sync::Mutex<Vec<String>>>) {
    let (mut s, _) = listener.accept().await.unwrap();
    let len = s.read_i32().await.unwrap() as usize;
    let mut startup = vec![0u8; len - 4];
    s.read_exact(&mut startup).await.unwrap();
    let mut hello = msg(b'R', &0i32.to_be_bytes());
    hello.extend(msg(b'S', b"server_version\x0014.10\x00"));
    hello.extend(msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
    hello.extend(msg(b'Z', b"I"));
    s.write_all(&hello).await.unwrap();
    while let Some((tag, body)) = read_message(&mut s).await {
        if tag == b'X' {
            return;
        }
        assert_eq!(tag, b'Q');
        let q = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
        seen.lock().unwrap().push(q.clone());
        let mut out = Vec::new();
        match q.as_str() {
            "IDENTIFY_SYSTEM" => out.extend(result_set(
                &["systemid", "timeline", "xlogpos", "dbname"],
                &[vec![Some("7000000000000000042"), Some("1"), Some("0/3000100"), None]],
                "IDENTIFY_SYSTEM",
            )),
            "SHOW server_version_num" => {
                out.extend(result_set(&["server_version_num"], &[vec![Some(script.version_num)]], "SHOW"))
            }
            "SHOW wal_segment_size" => out.extend(result_set(&["wal_segment_size"], &[vec![Some("16MB")]], "SHOW")),
            "SHOW wal_block_size" => out.extend(result_set(&["wal_block_size"], &[vec![Some("8192")]], "SHOW")),
            q if q.starts_with("BASE_BACKUP LABEL ") => {
                out.extend(result_set(&["recptr", "tli"], &[vec![Some("0/3000028"), Some("1")]], "SELECT"));
                out.extend(result_set(
                    &["spcoid", "spclocation", "size"],
                    &[vec![Some("16389"), Some("/srv/ts"), Some("1")], vec![None, None, Some("10")]],
                    "SELECT",
                ));
                // 13/14: raw tar without the two end blocks, one COPY per tablespace, base last.
                out.extend(copy_out(&script.tablespace_tar, 1000));
                out.extend(copy_out(&script.base_tar, 777));
                out.extend(copy_out(&script.manifest, 100));
                out.extend(result_set(&["recptr", "tli"], &[vec![Some("0/3000100"), Some("1")]], "SELECT"));
                out.extend(complete("SELECT"));
            }
            other => panic!("unexpected query {other:?}"),
        }
        out.extend(msg(b'Z', b"I"));
        s.write_all(&out).await.unwrap();
    }
}

struct Setup {
    config: Config,
    storage: Arc<dyn Storage>,
    conninfo: String,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    base_tar: Vec<u8>,
}

async fn setup(bad_crc_for: Option<&str>) -> Setup {
    setup_version("140010", bad_crc_for).await
}

async fn setup_version(version_num: &'static str, bad_crc_for: Option<&str>) -> Setup {
    let ts_file = vec![9u8; 3000];
    let rel = vec![5u8; 20_000];
    let mut tablespace_tar = Vec::new();
    tar_file(&mut tablespace_tar, "PG_14_202107181/16384/16390", &ts_file);
    let mut base_tar = Vec::new();
    tar_file(&mut base_tar, "backup_label", b"START WAL LOCATION: 0/3000028\n");
    tar_file(&mut base_tar, "base/1/1259", &rel);
    tar_file(&mut base_tar, "global/pg_control", &[1u8; 8192]);
    let files: [(&str, &[u8]); 4] = [
        ("backup_label", b"START WAL LOCATION: 0/3000028\n"),
        ("base/1/1259", &rel),
        ("global/pg_control", &[1u8; 8192]),
        ("pg_tblspc/16389/PG_14_202107181/16384/16390", &ts_file),
    ];
    let script =
        Script { version_num, tablespace_tar, base_tar: base_tar.clone(), manifest: manifest(&files, bad_crc_for) };

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, script, seen.clone()));

    let dir = tempfile::tempdir().unwrap();
    let args = RepoArgs { repo: Some(dir.path().join("repo").display().to_string()), ..Default::default() };
    let config = Config::resolve(&args).unwrap();
    let repo = config.open_repository(true).await.unwrap();
    // The WAL the backup needs is archived already.
    let name = WalFileName::segment(TimelineId(1), 3, WalSegmentSize::DEFAULT);
    let mut obj = std::io::Cursor::new(Vec::new());
    codec::compress(&[], &mut &[0u8; 100][..], &mut obj, &name.to_string(), None, CompressOptions::default()).unwrap();
    repo.storage().put(&repo.wal_key(&name), Body::Bytes(obj.into_inner().into()), PutMode::CreateNew).await.unwrap();
    Setup {
        storage: repo.storage().clone(),
        config,
        conninfo: format!("host=127.0.0.1 port={port} user=u sslmode=disable"),
        seen,
        _dir: dir,
        base_tar,
    }
}

fn opts() -> CreateOptions {
    CreateOptions {
        label: Some("old".into()),
        wal_timeout: Duration::from_secs(2),
        progress: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_14_backups_are_stored_as_complete_tar_streams() {
    let s = setup(None).await;
    let entry = create(&s.config, &s.conninfo, opts()).await.unwrap();
    let queries = s.seen.lock().unwrap().clone();
    assert_eq!(
        queries.last().unwrap(),
        "BASE_BACKUP LABEL 'old' PROGRESS FAST NOWAIT MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C' TABLESPACE_MAP"
    );
    assert_eq!(entry.server_version_num, 140010);
    assert_eq!(entry.start_lsn.to_string(), "0/3000028");
    assert_eq!(entry.stop_lsn.to_string(), "0/3000100");
    assert_eq!(entry.wal_start_segment, "000000010000000000000003");
    let names: Vec<&str> = entry.archives.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["16389.tar", "base.tar"]);
    assert_eq!(entry.archives[0].tablespace_path.as_deref(), Some("/srv/ts"));

    // The stored base.tar is the server's stream plus the two end blocks.
    let key = ObjectKey::new(catalog::chunk_key("main", &entry.id, "base.tar", 0)).unwrap();
    let mut back = Vec::new();
    codec::decompress(&read_all(s.storage.as_ref(), &key).await.unwrap()[..], &mut back).unwrap();
    let mut expected = s.base_tar.clone();
    expected.extend_from_slice(&[0u8; 1024]);
    assert_eq!(back, expected);

    let repo = s.config.open_repository(false).await.unwrap();
    let v = verify_backup(&repo, &entry).await.unwrap();
    assert_eq!(v.files, 4);
    assert_eq!(catalog::list_entries(&repo).await.unwrap(), vec![entry]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_differs_from_its_manifest_is_not_recorded() {
    let s = setup(Some("base/1/1259")).await;
    let before: Vec<_> = s.storage.list("").await.unwrap();
    let e = create(&s.config, &s.conninfo, opts()).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Corrupt);
    assert!(e.to_string().contains("base/1/1259: CRC-32C"), "{e}");
    // Only the cluster record was added; the chunks were removed again.
    let after: Vec<String> = s.storage.list("").await.unwrap().into_iter().map(|o| o.key.to_string()).collect();
    let mut expected: Vec<String> = before.into_iter().map(|o| o.key.to_string()).collect();
    expected.push("main/cluster.json".into());
    expected.sort();
    assert_eq!(after, expected);
}

/// A server of a major outside 13 to 18 is refused with one line that names the supported
/// ones (exit 3), before anything is written: not even the cluster record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_majors_are_refused_before_anything_is_written() {
    for version in ["120022", "190001"] {
        let s = setup_version(version, None).await;
        let before: Vec<String> = s.storage.list("").await.unwrap().into_iter().map(|o| o.key.to_string()).collect();
        let e = create(&s.config, &s.conninfo, opts()).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Invalid, "{version}: {e}");
        let text = e.to_string();
        assert!(text.contains("is not supported (13 to 18 are)") && !text.contains('\n'), "{version}: {text}");
        let after: Vec<String> = s.storage.list("").await.unwrap().into_iter().map(|o| o.key.to_string()).collect();
        assert_eq!(after, before, "{version}: nothing written");
        assert!(!s.seen.lock().unwrap().iter().any(|q| q.starts_with("BASE_BACKUP")), "{version}");
    }
}
