//! Criterion benches of the per-segment hot paths of `wal-archiver push` and `get`.
//!
//! push = page-header validation, the WAL summary (a walk over every record, CRC-32C
//! included), then compression and BLAKE3 in one pass into a scratch file, then
//! `LocalStorage::put` (fsync, link, fsync directory). get = decompression with
//! BLAKE3 verification into a new file, then a rename. Each stage is measured alone so the
//! whole-program figures of `compare-push-get.sh` can be explained.
//!
//! Input: the WAL segment named by `PITR_BENCH_SEGMENT` (e.g. one from a corpus built by
//! `make-wal-corpus.sh`), else a deterministic synthetic 16 MiB segment that zstd compresses
//! about as much as pgbench WAL. Scratch files go to `PITR_BENCH_TMP` (default: the system
//! temporary directory; use the filesystem the repository will live on).
//! Run: `cargo bench -p pitr-benches --bench push_path [-- FILTER]`.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::codec::{self, CompressOptions};
use common::storage::local::{temp_path, LocalStorage};
use common::storage::{Body, ObjectKey, PutMode, Storage};
use common::wal::page_header::LONG_HEADER_SIZE;
use common::wal::{record, synthetic, LongPageHeader};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pitr_benches::{input, NAME};

fn scratch_root() -> tempfile::TempDir {
    let base = std::env::var_os("PITR_BENCH_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("pitr-bench.").tempdir_in(base).expect("scratch directory")
}

fn compress(data: &[u8], opts: CompressOptions) -> Vec<u8> {
    let (prefix, rest) = data.split_at(LONG_HEADER_SIZE.min(data.len()));
    let mut out = Cursor::new(Vec::with_capacity(data.len() / 2));
    codec::compress(prefix, &mut &rest[..], &mut out, NAME, Some(data.len() as u64), opts).expect("compress");
    out.into_inner()
}

fn benches(c: &mut Criterion) {
    let (data, what) = input();
    let raw = data.len() as u64;
    let object = compress(&data, CompressOptions { level: 3, workers: 0 });
    eprintln!(
        "input: {what}: {raw} bytes; level 3 object {} bytes (ratio {:.2})",
        object.len(),
        raw as f64 / object.len() as f64
    );

    let mut g = c.benchmark_group("wal");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("long_page_header_parse", |b| {
        b.iter(|| LongPageHeader::parse(black_box(&data[..LONG_HEADER_SIZE])).expect("a WAL segment"))
    });
    g.finish();

    // The WAL summary push stores in each segment's header: on the input (a real segment walks
    // every record; the default synthetic one stops at its first record, whose CRC is random)
    // and on a synthetic segment of valid pgbench-like records. crc32c alone is the floor.
    let valid = synthetic::pgbench_like_segment(0x10, 7_000_000);
    for (what, seg) in [("input", &data[..]), ("synthetic_records", &valid[..])] {
        match record::summarize(seg) {
            Ok(s) => eprintln!(
                "summarize {what}: {} transaction ends, {} restore points, stopped: {}",
                s.xact_ends,
                s.restore_points.len(),
                s.stopped.as_deref().unwrap_or("no")
            ),
            Err(e) => eprintln!("summarize {what}: {e}"),
        }
    }
    let mut g = c.benchmark_group("wal");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("summarize", |b| b.iter(|| record::summarize(black_box(&data[..]))));
    g.bench_function("summarize_synthetic_records", |b| b.iter(|| record::summarize(black_box(&valid[..]))));
    g.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(black_box(&valid[..]))));
    g.finish();

    let mut g = c.benchmark_group("codec");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("blake3_digest", |b| b.iter(|| codec::digest(&mut black_box(&data[..])).expect("digest")));
    for (level, workers) in [(1, 0), (1, 2), (2, 0), (2, 2), (3, 0), (3, 2)] {
        let opts = CompressOptions { level, workers };
        let size = compress(&data, opts).len();
        eprintln!("level {level} workers {workers}: {size} bytes (ratio {:.2})", raw as f64 / size as f64);
        g.bench_function(format!("compress_l{level}_w{workers}"), |b| b.iter(|| compress(black_box(&data), opts)));
    }
    g.bench_function("decompress_verify_to_sink", |b| {
        b.iter(|| codec::decompress(black_box(&object[..]), &mut io::sink()).expect("decompress"))
    });
    g.finish();

    let root = scratch_root();
    let store = LocalStorage::open(root.path().join("repo")).expect("repository");
    let scratch = store.scratch_dir().expect("local storage has a scratch directory");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let seq = AtomicU64::new(0);
    let mut last: Option<PathBuf> = None;
    // Per iteration: the previous object is removed and a fresh staged file written, untimed.
    let mut stage = |dir: &Path| {
        if let Some(p) = last.take() {
            let _ = fs::remove_file(p);
        }
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let key = ObjectKey::new(format!("main/wal/0000000100000000/{NAME}.{n}.zst")).expect("key");
        last = Some(root.path().join("repo").join(key.as_str()));
        let tmp = temp_path(dir, NAME);
        fs::write(&tmp, &object).expect("stage");
        (key, tmp)
    };

    let mut g = c.benchmark_group("local_put");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(object.len() as u64));
    // push's path: the object was compressed into the scratch directory; put = fsync + link + fsync dir
    g.bench_function("scratch_file_fsync_link", |b| {
        b.iter_batched(
            || stage(&scratch),
            |(key, tmp)| {
                rt.block_on(store.put(&key, Body::File(tmp.clone()), PutMode::CreateNew)).expect("put");
                let _ = fs::remove_file(tmp);
            },
            BatchSize::PerIteration,
        )
    });
    // a file elsewhere: copied into scratch, then the same
    let outside = root.path().join("outside");
    fs::create_dir_all(&outside).expect("dir");
    g.bench_function("outside_file_copy_fsync_link", |b| {
        b.iter_batched(
            || stage(&outside),
            |(key, tmp)| {
                rt.block_on(store.put(&key, Body::File(tmp.clone()), PutMode::CreateNew)).expect("put");
                let _ = fs::remove_file(tmp);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // get's path: decompress + verify into a new file through a 1 MiB BufWriter, then rename
    let object_path = root.path().join("object.zst");
    fs::write(&object_path, &object).expect("object");
    let dest = root.path().join("RECOVERYXLOG");
    let mut g = c.benchmark_group("get_path");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("decompress_verify_to_file_rename", |b| {
        b.iter(|| {
            let tmp = root.path().join(".RECOVERYXLOG.tmp");
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).expect("create"));
            codec::decompress(File::open(&object_path).expect("open"), &mut out).expect("decompress");
            out.flush().expect("flush");
            drop(out);
            fs::rename(&tmp, &dest).expect("rename");
        })
    });
    // writing alone: the raw segment into a new file (page cache, no fsync, as get does)
    g.bench_function("write_raw_file_no_fsync", |b| {
        b.iter(|| {
            let tmp = root.path().join(".raw.tmp");
            let mut f = File::create(&tmp).expect("create");
            for chunk in data.chunks(1 << 20) {
                f.write_all(chunk).expect("write");
            }
            drop(f);
            fs::rename(&tmp, &dest).expect("rename");
        })
    });
    g.finish();
}

criterion_group!(push_path, benches);
criterion_main!(push_path);
