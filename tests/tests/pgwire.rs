//! The replication-protocol client (`common::pgwire`) against a real PostgreSQL: Unix-socket
//! trust, cleartext/MD5/SCRAM passwords over TCP (and `.pgpass`), TLS in each `sslmode`,
//! IDENTIFY_SYSTEM/SHOW, START_REPLICATION with keepalive answers from a separate writer task,
//! BASE_BACKUP in the PostgreSQL 15 syntax, and clear errors for everything that goes wrong.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::lsn::Lsn;
use common::pgwire::{
    BaseBackupMessage, ConnParams, Connection, CopyBothStart, FakeEnv, PgWireError, Replication, ReplicationMessage,
    StandbyStatusUpdate,
};
use common::wal::WalSegmentSize;
use pitr_tests::pg::{free_port, give_to_server_user, TestCluster};

/// Parameters from `conninfo` with a hermetic environment: no `PG*` variables, no home (so no
/// `~/.pgpass` or `~/.postgresql/root.crt`), OS user `postgres`.
fn params(conninfo: &str) -> ConnParams {
    ConnParams::parse_with_env(conninfo, &FakeEnv::new().user("postgres")).unwrap()
}

async fn connect(conninfo: &str) -> Result<Connection, PgWireError> {
    Connection::connect(&params(conninfo)).await
}

fn socket(c: &TestCluster) -> String {
    format!("host={} port={}", c.socket_dir.display(), c.port)
}

fn tcp(c: &TestCluster) -> String {
    format!("host=127.0.0.1 port={}", c.port)
}

/// Replaces pg_hba.conf; the first line always lets the fixture's psql in.
fn write_hba(c: &TestCluster, lines: &[&str]) {
    let mut text = String::from("local all postgres trust\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(c.data.join("pg_hba.conf"), text).unwrap();
}

/// A self-signed certificate with only a Common Name (as PostgreSQL's docs make them) and its
/// key, in `dir`, owned by the server user.
fn self_signed_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (Debian package openssl) is needed for the TLS tests");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    give_to_server_user(&crt);
    give_to_server_user(&key);
    (crt, key)
}

#[tokio::test]
async fn unix_socket_trust_queries_and_copy_out() {
    let mut c = TestCluster::init("pgwire-basic", &[]);
    write_hba(&c, &["local all all trust"]);
    c.start();

    let mut conn =
        connect(&format!("{} user=postgres dbname=postgres application_name=pgwire-test", socket(&c))).await.unwrap();
    assert!(!conn.is_tls());
    assert!(conn.backend_pid().is_some());
    assert!(conn.parameter("server_version").unwrap().starts_with("15"), "{:?}", conn.parameter("server_version"));

    let sets = conn.simple_query("SELECT 1 AS a, NULL::text AS b; SELECT 'x' AS c UNION ALL SELECT 'y'").await.unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(sets[0].rows, vec![vec![Some("1".to_string()), None]]);
    assert_eq!(sets[0].command_tag, "SELECT 1");
    assert_eq!(sets[1].get(1, "c"), Some("y"));

    let app = conn.simple_query("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()").await;
    assert_eq!(app.unwrap()[0].rows[0][0].as_deref(), Some("pgwire-test"));

    // A server error leaves the connection usable.
    let e = conn.simple_query("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("42P01"), "{e}");
    assert!(e.to_string().starts_with("server error 42P01: relation \"no_such_table\" does not exist"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(conn.server_version_num().await.unwrap() / 10000, 15);
    assert!(conn.simple_query("").await.unwrap().is_empty(), "empty query");
    let sets = conn.simple_query("CREATE TEMP TABLE t(i int)").await.unwrap();
    assert_eq!((sets[0].columns.len(), sets[0].command_tag.as_str()), (0, "CREATE TABLE"));

    let mut copy = conn.copy_out("COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT").await.unwrap();
    assert!(copy.preceding.is_empty());
    let mut data = Vec::new();
    while let Some(chunk) = copy.next().await.unwrap() {
        data.extend_from_slice(&chunk);
    }
    assert_eq!(data, b"1\n2\n3\n");
    let after = copy.finish().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].command_tag, "COPY 3");

    // A COPY the caller did not ask for is an error, and the connection survives it.
    let e = conn.simple_query("COPY (SELECT 1) TO STDOUT").await.unwrap_err();
    assert!(matches!(e, PgWireError::Protocol(_)), "{e}");
    assert_eq!(conn.simple_query("SELECT 2").await.unwrap()[0].rows[0][0].as_deref(), Some("2"));
    conn.terminate().await.unwrap();
}

#[tokio::test]
async fn passwords_over_tcp_cleartext_md5_scram_and_pgpass() {
    let mut c = TestCluster::init("pgwire-auth", &[]);
    write_hba(
        &c,
        &[
            "host all pw_user 127.0.0.1/32 password",
            "host all md5_user 127.0.0.1/32 md5",
            "host all scram_user 127.0.0.1/32 scram-sha-256",
            "host replication scram_user 127.0.0.1/32 scram-sha-256",
            "host all rejected_user 127.0.0.1/32 reject",
        ],
    );
    c.start();
    c.sql("CREATE ROLE pw_user LOGIN PASSWORD 'pw secret'");
    c.sql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5''secret'");
    c.sql("CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram:secret\\'");
    c.sql("CREATE ROLE rejected_user LOGIN PASSWORD 'x'");
    assert!(c.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'").starts_with("md5"));
    assert!(c.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'").starts_with("SCRAM-SHA-256$"));

    for conninfo in [
        format!("{} user=pw_user dbname=postgres password='pw secret'", tcp(&c)),
        format!("{} user=md5_user dbname=postgres password='md5\\'secret'", tcp(&c)),
        format!("{} user=scram_user dbname=postgres password='scram:secret\\\\'", tcp(&c)),
        format!("postgresql://scram_user:scram%3Asecret%5C@127.0.0.1:{}/postgres", c.port),
    ] {
        let mut conn = connect(&conninfo).await.unwrap_or_else(|e| panic!("{e}"));
        let who = conn.simple_query("SELECT current_user").await.unwrap();
        assert!(who[0].rows[0][0].as_deref().unwrap().ends_with("_user"));
    }

    // Wrong password: the server's 28P01, not retryable, the password not in the message.
    for user in ["pw_user", "md5_user", "scram_user"] {
        let e = connect(&format!("{} user={user} dbname=postgres password=wrong-pass", tcp(&c))).await.unwrap_err();
        assert_eq!(e.sqlstate(), Some("28P01"), "{user}: {e}");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("password authentication failed"), "{e}");
        assert!(!e.to_string().contains("wrong-pass") && !format!("{e:?}").contains("wrong-pass"));
    }

    // No password anywhere: a clear client-side error naming the sources.
    let e = connect(&format!("{} user=scram_user dbname=postgres", tcp(&c))).await.unwrap_err();
    assert!(matches!(e, PgWireError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("PGPASSWORD") && e.to_string().contains("password file"), "{e}");
    assert!(!e.is_retryable());

    // Channel binding needs TLS.
    let e = connect(&format!("{} user=scram_user dbname=postgres password=x channel_binding=require", tcp(&c)))
        .await
        .unwrap_err();
    assert!(matches!(e, PgWireError::Auth { .. }) && e.to_string().contains("channel binding"), "{e}");

    // pg_hba reject: 28000.
    let e = connect(&format!("{} user=rejected_user dbname=postgres password=x", tcp(&c))).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");

    // The password file, for a replication connection ("replication" in the database field).
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    fs::write(&pgpass, format!("127.0.0.1:{}:replication:scram_user:scram\\:secret\\\\\n", c.port)).unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
    let p = params(&format!("{} user=scram_user passfile={}", tcp(&c), pgpass.display()))
        .with_replication(Replication::Physical);
    let mut conn = Connection::connect(&p).await.unwrap();
    assert!(conn.identify_system().await.unwrap().systemid > 0);
    // Group-readable: ignored like libpq does, so no password.
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Connection::connect(&p).await.unwrap_err();
    assert!(matches!(e, PgWireError::Auth { .. }), "{e}");
}

#[tokio::test]
async fn tls_require_verify_ca_verify_full_and_channel_binding() {
    let mut c = TestCluster::init("pgwire-tls", &[]);
    let (crt, _key) = self_signed_cert(&c.data, "server", "localhost");
    TestCluster::append_conf(
        &c.data,
        &["ssl = on".into(), "ssl_cert_file = 'server.crt'".into(), "ssl_key_file = 'server.key'".into()],
    );
    write_hba(
        &c,
        &[
            "hostssl all scram_user 127.0.0.1/32 scram-sha-256",
            "hostnossl all scram_user 127.0.0.1/32 reject",
            "host all postgres 127.0.0.1/32 trust",
        ],
    );
    c.start();
    c.sql("CREATE ROLE scram_user LOGIN PASSWORD 's3cret'");
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let port = c.port;
    let root = crt.display().to_string();

    for conninfo in [
        format!("host=127.0.0.1 port={port} user=postgres sslmode=require"),
        format!("host=127.0.0.1 port={port} user=postgres sslmode=prefer"),
        format!("host=127.0.0.1 port={port} user=postgres sslmode=verify-ca sslrootcert={root}"),
        format!("host=localhost port={port} user=postgres sslmode=verify-full sslrootcert={root}"),
        format!("postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={root}"),
    ] {
        let mut conn = connect(&conninfo).await.unwrap_or_else(|e| panic!("{conninfo}: {e}"));
        assert!(conn.is_tls(), "{conninfo}");
        assert_eq!(conn.simple_query(ssl_in_use).await.unwrap()[0].rows[0][0].as_deref(), Some("t"), "{conninfo}");
    }
    let mut conn = connect(&format!("host=127.0.0.1 port={port} user=postgres sslmode=disable")).await.unwrap();
    assert!(!conn.is_tls());
    assert_eq!(conn.simple_query(ssl_in_use).await.unwrap()[0].rows[0][0].as_deref(), Some("f"));

    // The certificate is for "localhost", not "127.0.0.1".
    let e = connect(&format!("host=127.0.0.1 port={port} user=postgres sslmode=verify-full sslrootcert={root}"))
        .await
        .unwrap_err();
    assert!(matches!(e, PgWireError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("127.0.0.1") && e.to_string().contains("localhost"), "{e}");
    assert!(!e.is_retryable());
    // A root that did not sign the server's certificate.
    let (other_root, _) = self_signed_cert(&c.data, "other", "localhost");
    let e = connect(&format!(
        "host=localhost port={port} user=postgres sslmode=verify-ca sslrootcert={}",
        other_root.display()
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, PgWireError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("other.crt"), "names the root file: {e}");
    // sslmode=require with a root file behaves like verify-ca (libpq).
    let e = connect(&format!(
        "host=localhost port={port} user=postgres sslmode=require sslrootcert={}",
        other_root.display()
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, PgWireError::Tls { .. }), "{e}");

    // SCRAM over TLS: the server offers SCRAM-SHA-256-PLUS; tls-server-end-point binding works,
    // and declining it ("n") is accepted too.
    for cb in ["require", "prefer", "disable"] {
        let mut conn =
            connect(&format!("host=127.0.0.1 port={port} user=scram_user dbname=postgres password=s3cret sslmode=require channel_binding={cb}"))
                .await
                .unwrap_or_else(|e| panic!("channel_binding={cb}: {e}"));
        assert!(conn.is_tls());
        conn.simple_query("SELECT 1").await.unwrap();
    }
    // hostnossl ... reject: sslmode=disable is refused by pg_hba, prefer gets TLS.
    let e =
        connect(&format!("host=127.0.0.1 port={port} user=scram_user dbname=postgres password=s3cret sslmode=disable"))
            .await
            .unwrap_err();
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");
    // allow: plaintext first, refused by hostnossl reject, then TLS.
    let conn =
        connect(&format!("host=127.0.0.1 port={port} user=scram_user dbname=postgres password=s3cret sslmode=allow"))
            .await
            .unwrap();
    assert!(conn.is_tls());
}

#[tokio::test]
async fn server_without_tls_require_fails_prefer_falls_back() {
    let mut c = TestCluster::init("pgwire-nossl", &["ssl = off".into()]);
    write_hba(&c, &["host all all 127.0.0.1/32 trust"]);
    c.start();
    let e = connect(&format!("{} user=postgres sslmode=require", tcp(&c))).await.unwrap_err();
    assert!(matches!(e, PgWireError::SslRefused(_)), "{e}");
    assert!(e.to_string().contains("server does not support SSL, but SSL was required"), "{e}");
    assert!(!e.is_retryable());
    for mode in ["prefer", "allow", "disable"] {
        let mut conn = connect(&format!("{} user=postgres sslmode={mode}", tcp(&c))).await.unwrap();
        assert!(!conn.is_tls());
        conn.simple_query("SELECT 1").await.unwrap();
    }
    // sslmode only applies to TCP: a Unix socket with require connects in plaintext (libpq).
    let conn = connect(&format!("{} user=postgres sslmode=require", socket(&c))).await;
    assert!(conn.is_ok());
}

#[tokio::test]
async fn connection_failures_are_clear_and_retryable() {
    // Nobody listens on this port.
    let port = free_port();
    let e = connect(&format!("host=127.0.0.1 port={port} user=postgres")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains(&format!("server at \"127.0.0.1\", port {port}")), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = connect(&format!("host={} port={port} user=postgres", dir.path().display())).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains(".s.PGSQL."), "{e}");

    // A server that accepts but never answers: connect_timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let e = connect(&format!("host=127.0.0.1 port={silent} user=postgres connect_timeout=2")).await.unwrap_err();
    assert!(matches!(e, PgWireError::Timeout { .. }), "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));
    hold.abort();

    // A host list: the first host is down, the second answers.
    let mut c = TestCluster::init("pgwire-hosts", &[]);
    write_hba(&c, &["local all all trust"]);
    c.start();
    let mut conn = connect(&format!("host=127.0.0.1,{} port={port},{} user=postgres", c.socket_dir.display(), c.port))
        .await
        .unwrap();
    conn.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn replication_identify_system_show_and_sql_refused() {
    let mut c = TestCluster::init("pgwire-repl", &[]);
    write_hba(&c, &["local replication all trust"]);
    c.start();
    let p = params(&format!("{} user=postgres", socket(&c))).with_replication(Replication::Physical);
    let mut conn = Connection::connect(&p).await.unwrap();

    let id = conn.identify_system().await.unwrap();
    let sysid: u64 = c.sql("SELECT system_identifier FROM pg_control_system()").parse().unwrap();
    assert_eq!(id.systemid, sysid);
    assert_eq!(id.timeline, 1);
    assert!(id.xlogpos > Lsn(0));
    assert_eq!(id.dbname, None);
    assert_eq!(conn.show("wal_segment_size").await.unwrap(), "16MB");
    assert_eq!(conn.wal_segment_size().await.unwrap(), WalSegmentSize::DEFAULT);
    assert!(conn.server_version_num().await.unwrap() >= 150000);

    let e = conn.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("0A000"), "{e}");
    assert!(e.to_string().contains("cannot execute SQL commands in WAL sender for physical replication"), "{e}");
    assert!(!e.is_retryable());
    let e = conn.timeline_history(1).await.unwrap_err();
    assert!(e.to_string().starts_with("server error 58P01: could not open file"), "{e}");
    // Still usable after errors.
    assert_eq!(conn.identify_system().await.unwrap().systemid, sysid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_replication_streams_wal_and_answers_keepalives() {
    let mut c = TestCluster::init("pgwire-stream", &["wal_sender_timeout = '2s'".into()]);
    write_hba(&c, &["local replication all trust"]);
    c.start();
    let p = params(&format!("{} user=postgres application_name=pgwire-recv", socket(&c)))
        .with_replication(Replication::Physical);
    let mut conn = Connection::connect(&p).await.unwrap();
    let id = conn.identify_system().await.unwrap();
    let seg = conn.wal_segment_size().await.unwrap();
    let start = id.xlogpos.segment_start(seg);
    assert_eq!(conn.start_replication(None, start, Some(id.timeline)).await.unwrap(), CopyBothStart::Streaming);

    // Status updates go out from their own task, fed by a channel: the reader never writes.
    let (reader, writer) = conn.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<StandbyStatusUpdate>(16);
    let status_task = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(update) = rx.recv().await {
            writer.send_status_update(&update).await?;
        }
        writer.send_copy_done().await?;
        Ok::<_, PgWireError>(writer)
    });
    let mut reader = reader;

    let mut expected = start;
    let mut got_bytes = 0u64;
    let mut answered_keepalive = false;
    let mut switched = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the server asked for a reply (after wal_sender_timeout / 2 of silence) and we got
    // WAL written after that answer.
    while !(answered_keepalive && switched && expected.segment_number(seg) > start.segment_number(seg)) {
        assert!(Instant::now() < deadline, "streaming stalled at {expected}");
        let payload = tokio::time::timeout(Duration::from_secs(10), reader.next_copy_data())
            .await
            .expect("no message from the walsender")
            .unwrap()
            .expect("server ended the stream");
        match ReplicationMessage::parse(payload).unwrap() {
            ReplicationMessage::XLogData(x) => {
                assert_eq!(x.wal_start, expected, "XLogData must continue where the previous one ended");
                assert!(x.data.len() <= 128 * 1024);
                assert!(x.wal_end >= x.end() || x.wal_end == Lsn(0));
                expected = x.end();
                got_bytes += x.data.len() as u64;
            }
            ReplicationMessage::Keepalive(k) => {
                if k.reply_requested {
                    tx.send(StandbyStatusUpdate::new(expected, expected, Lsn(0))).await.unwrap();
                    if !answered_keepalive {
                        answered_keepalive = true;
                        // New WAL after the answer: the connection is still alive.
                        c.switch_wal();
                        switched = true;
                    }
                }
            }
        }
    }
    assert!(got_bytes > 0);

    // The server took our report: write/flush positions and application_name.
    tx.send(StandbyStatusUpdate::new(expected, expected, Lsn(0))).await.unwrap();
    c.wait_for(
        &format!("SELECT application_name FROM pg_stat_replication WHERE write_lsn = '{expected}' AND flush_lsn = '{expected}'"),
        "pgwire-recv",
        Duration::from_secs(10),
    );

    // Stop: our CopyDone, the server's remaining data and CopyDone, then the end results.
    drop(tx);
    let writer = status_task.await.unwrap().unwrap();
    while let Some(payload) = reader.next_copy_data().await.unwrap() {
        ReplicationMessage::parse(payload).unwrap();
    }
    let mut conn = reader.unsplit(writer).unwrap();
    let results = conn.read_results().await.unwrap();
    let tags: Vec<&str> = results.iter().map(|r| r.command_tag.as_str()).collect();
    assert_eq!(tags, ["START_STREAMING", "START_REPLICATION"]);
    assert_eq!(conn.identify_system().await.unwrap().systemid, id.systemid, "usable after the COPY");
}

#[tokio::test]
async fn base_backup_pg15_syntax() {
    let mut c = TestCluster::init("pgwire-backup", &[]);
    write_hba(&c, &["local replication all trust"]);
    c.start();
    let p = params(&format!("{} user=postgres", socket(&c))).with_replication(Replication::Physical);
    let mut conn = Connection::connect(&p).await.unwrap();

    let mut copy = conn
        .copy_out("BASE_BACKUP (LABEL 'pgwire test', CHECKPOINT 'fast', WAIT false, MANIFEST 'yes')")
        .await
        .unwrap();
    assert_eq!(copy.preceding.len(), 2, "start position and tablespaces: {:?}", copy.preceding);
    let start: Lsn = copy.preceding[0].get(0, "recptr").unwrap().parse().unwrap();
    assert_eq!(copy.preceding[0].get(0, "tli"), Some("1"));
    let spaces = &copy.preceding[1];
    assert_eq!(spaces.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["spcoid", "spclocation", "size"]);
    assert_eq!(spaces.rows.last().unwrap()[0], None, "the main data directory is the NULL row");

    let mut archives = Vec::new();
    let mut tar = Vec::new();
    let mut manifest = Vec::new();
    let mut in_manifest = false;
    while let Some(payload) = copy.next().await.unwrap() {
        match BaseBackupMessage::parse(payload).unwrap() {
            BaseBackupMessage::NewArchive { name, tablespace_path } => archives.push((name, tablespace_path)),
            BaseBackupMessage::ManifestStart => in_manifest = true,
            BaseBackupMessage::Data(d) if in_manifest => manifest.extend_from_slice(&d),
            BaseBackupMessage::Data(d) => tar.extend_from_slice(&d),
            BaseBackupMessage::Progress(_) => {}
        }
    }
    assert_eq!(archives, [("base.tar".to_string(), String::new())]);
    assert_eq!(tar.len() % 512, 0);
    assert!(tar.ends_with(&[0u8; 1024]), "PG 15 tars end with two zero blocks");
    let names: Vec<String> = tar
        .chunks(512)
        .filter(|b| b[257..262] == *b"ustar")
        .map(|b| String::from_utf8_lossy(&b[..100]).trim_end_matches('\0').to_string())
        .collect();
    assert!(names.iter().any(|n| n == "backup_label"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("global/pg_control"));
    let manifest = String::from_utf8(manifest).unwrap();
    assert!(manifest.starts_with("{ \"PostgreSQL-Backup-Manifest-Version\": 1,"), "{}", &manifest[..80]);
    assert!(manifest.contains("\"Manifest-Checksum\""));

    let end = copy.finish().await.unwrap();
    let end_pos = end.iter().find_map(|r| r.get(0, "recptr")).expect("end position result set");
    assert!(end_pos.parse::<Lsn>().unwrap() >= start);
    assert_eq!(end.last().unwrap().command_tag, "BASE_BACKUP");

    // The legacy (13/14) syntax is a syntax error on 15, surfaced cleanly.
    let e = conn.copy_out("BASE_BACKUP LABEL 'x' FAST").await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("42601"), "{e}");
    assert!(conn.identify_system().await.is_ok());
}
