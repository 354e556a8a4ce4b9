//! End to end: the receiver's `--metrics-listen` endpoint against a real PostgreSQL 15,
//! scraped with plain HTTP/1.1 over std::net as Prometheus or a load balancer would.
//!
//! - once the stream is idle, `flushed_lsn` is pg_stat_replication's `flush_lsn` and the
//!   server's end of WAL, and every lag is zero;
//! - `uploaded_lsn` and the last segment upload time advance after pg_switch_wal();
//! - `/health` is 200 while streaming, 503 with the reason while the server is down (the
//!   error counter grows), and 200 again after it restarts (a reconnect is counted);
//! - an address that cannot be bound is one clear line and exit 7.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::wal::{WalFileName, WalSegmentSize};
use pitr_tests::bins;
use pitr_tests::pg::{scratch_dir, TestCluster};
use pitr_tests::receiver::{wait_streaming, ReceiverProc};
use pitr_tests::repo::TestRepo;

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_string())
}

/// The value of sample `name` (with its labels, if any) in an exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .unwrap()
}

struct Scraper {
    port: u16,
}

impl Scraper {
    fn metrics(&self) -> String {
        let (status, body) = http_get(self.port, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn get(&self, name: &str) -> f64 {
        sample(&self.metrics(), &format!("pitr_receive_{name}"))
    }

    /// Polls until `check` holds for an exposition, failing with `what` and the last one.
    fn wait_until(&self, what: &str, rx: &ReceiverProc, mut check: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.metrics();
            if check(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what} not reached within 60 s:\n{text}\n{}", rx.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `/health` until it answers `want`; returns the body.
    fn wait_health(&self, want: u16, rx: &ReceiverProc) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = http_get(self.port, "/health");
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/health is {status} {body:?}, not {want}, after 60 s:\n{}", rx.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The port from the receiver's "serving http://127.0.0.1:PORT/metrics" line.
fn metrics_port(rx: &ReceiverProc) -> u16 {
    let line = rx.wait_log_line("http://127.0.0.1:", Duration::from_secs(30));
    let rest = &line[line.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len()..];
    rest.split('/').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in {line:?}"))
}

fn pg_bytes(cluster: &TestCluster, lsn_sql: &str) -> f64 {
    cluster.sql(&format!("SELECT ({lsn_sql} - '0/0'::pg_lsn)::bigint")).parse().unwrap()
}

/// The stream is idle: what the server has flushed, the receiver has fsynced and reported.
fn wait_idle(cluster: &TestCluster, scraper: &Scraper, rx: &ReceiverProc) -> f64 {
    let reported = "(SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'pitr')";
    let mut flushed = 0.0;
    scraper.wait_until("flushed_lsn = flush_lsn = the server's end of WAL", rx, |text| {
        flushed = sample(text, "pitr_receive_flushed_lsn");
        let server_end = sample(text, "pitr_receive_server_wal_end_lsn");
        let in_sync =
            flushed == pg_bytes(cluster, reported) && flushed == pg_bytes(cluster, "pg_current_wal_flush_lsn()");
        in_sync && server_end == flushed && sample(text, "pitr_receive_flush_lag_bytes") == 0.0
    });
    flushed
}

#[test]
fn metrics_and_health_follow_the_stream() {
    let repo = TestRepo::local();
    let mut primary = TestCluster::init("recv-metrics", &[]);
    primary.start();
    let work = scratch_dir("recv-metrics-work");
    let spool = work.path().join("spool");
    let mut rx = ReceiverProc::start(&repo, &primary, &spool, &["--metrics-listen", "127.0.0.1:0"]);
    let scraper = Scraper { port: metrics_port(&rx) };
    wait_streaming(&primary, &rx, false);
    assert_eq!(scraper.wait_health(200, &rx), "ok\n");
    // The receiver runs itself again (same pid) with a fixed malloc mmap threshold, so that
    // segment-sized buffers freed on its blocking threads go back to the system.
    let env = rx.environment();
    assert!(env.iter().any(|v| v == "MALLOC_MMAP_THRESHOLD_=4194304"), "{env:?}");

    // Every metric is announced with HELP and TYPE.
    let text = scraper.metrics();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
    }
    assert_eq!(sample(&text, "pitr_receive_connected"), 1.0);
    assert_eq!(sample(&text, "pitr_receive_timeline"), 1.0);
    assert_eq!(sample(&text, "pitr_receive_reconnects_total"), 0.0);

    // Some WAL; once idle, flushed = what the server reports and has, and the growing
    // segment is uploaded up to it.
    primary.sql("CREATE TABLE t(i int); INSERT INTO t SELECT generate_series(1, 10000)");
    let flushed = wait_idle(&primary, &scraper, &rx);
    let text = scraper.wait_until("the growing segment uploaded up to the flush position", &rx, |t| {
        sample(t, "pitr_receive_uploaded_lsn") == sample(t, "pitr_receive_flushed_lsn")
    });
    assert!(sample(&text, "pitr_receive_received_lsn") >= flushed);
    assert_eq!(sample(&text, "pitr_receive_upload_lag_bytes"), 0.0);
    assert_eq!(sample(&text, "pitr_receive_upload_lag_seconds"), 0.0);
    assert!(sample(&text, "pitr_receive_last_partial_upload_timestamp_seconds") > 1.7e9);
    assert!(sample(&text, "pitr_receive_last_message_timestamp_seconds") > 1.7e9);
    assert_eq!(sample(&text, "pitr_receive_last_segment_upload_timestamp_seconds"), 0.0);

    // A segment switch: the complete segment is stored, uploaded passes its end.
    let switched = primary.switch_wal();
    let size = WalSegmentSize::DEFAULT;
    let segno = WalFileName::parse(&switched).unwrap().segment_number(size).unwrap().unwrap();
    let end = ((segno + 1) * size.bytes()) as f64;
    scraper.wait_until("uploaded_lsn past the switched segment", &rx, |t| {
        sample(t, "pitr_receive_uploaded_lsn") >= end
            && sample(t, "pitr_receive_last_segment_upload_timestamp_seconds") > 1.7e9
    });
    wait_idle(&primary, &scraper, &rx);

    // The server goes away: 503 with the reason, errors counted, not connected.
    let errors_before = scraper.get("errors_total{kind=\"connection\"}");
    primary.stop();
    let reason = scraper.wait_health(503, &rx);
    assert!(
        reason.starts_with("not streaming: ") && reason.ends_with('\n') && reason.lines().count() == 1,
        "{reason:?}"
    );
    scraper.wait_until("a connection error counted", &rx, |t| {
        sample(t, "pitr_receive_errors_total{kind=\"connection\"}") > errors_before
            && sample(t, "pitr_receive_connected") == 0.0
    });

    // It comes back: healthy again, one reconnect, and the stream is followed as before.
    primary.start();
    wait_streaming(&primary, &rx, false);
    assert_eq!(scraper.wait_health(200, &rx), "ok\n");
    assert_eq!(scraper.get("reconnects_total"), 1.0);
    assert_eq!(scraper.get("connected"), 1.0);
    primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
    let after = wait_idle(&primary, &scraper, &rx);
    assert!(after > flushed, "flushed_lsn advanced after the restart");

    rx.signal(15);
    assert_eq!(rx.wait(Duration::from_secs(60)), Some(0), "{}", rx.log());
}

#[test]
fn metrics_address_in_use_is_a_configuration_error() {
    let repo = TestRepo::local();
    let work = scratch_dir("recv-metrics-bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = |listen: &str| {
        let mut c = repo.wal_archiver();
        c.args(["receive", "-d", "host=/nonexistent", "--spool", work.path().join("spool").to_str().unwrap()]);
        c.args(["--metrics-listen", listen]);
        bins::run(c)
    };
    run(&addr).fails_with(7, &format!("--metrics-listen {addr}: cannot listen"));
    // Not an IP:PORT: a usage error.
    let r = run("localhost");
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(r.stderr.contains("--metrics-listen"), "{r:#?}");
}
