//! zstd parameters for WAL: size and speed of candidate settings for `common::codec::compress`,
//! streamed exactly as it does (checksum on, size pledged, a 40-byte prefix then 1 MiB writes).
//!
//! With `PITR_BENCH_CORPUS=/tmp/pitr-bench/corpus` (a `make-wal-corpus.sh` output) every
//! setting first compresses the whole corpus once and prints its total size next to the
//! current settings' (the repository-size target is judged on a corpus, not one segment); the
//! timed part then uses `PITR_BENCH_SEGMENT` or the corpus's middle segment (else synthetic).
//! Run: `PITR_BENCH_CORPUS=/tmp/pitr-bench/corpus cargo bench -p pitr-benches --bench zstd_params`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zstd::zstd_safe::CParameter;

/// A named setting: level, worker threads, extra parameters.
struct Setting {
    name: &'static str,
    level: i32,
    workers: u32,
    extra: Vec<CParameter>,
}

fn settings() -> Vec<Setting> {
    let tuned = || vec![CParameter::WindowLog(19), CParameter::HashLog(16)];
    let s = |name, level, workers, extra| Setting { name, level, workers, extra };
    vec![
        s("l3_w0", 3, 0, vec![]),
        s("l3_w2", 3, 2, vec![]),
        s("l3_w2_job4M", 3, 2, vec![CParameter::JobSize(4 << 20)]),
        s("l3_w0_wlog19_hlog16", 3, 0, tuned()),
        s("l3_w2_job2M_wlog19_hlog16", 3, 2, [tuned(), vec![CParameter::JobSize(2 << 20)]].concat()),
        s("l3_w2_job4M_wlog19_hlog16", 3, 2, [tuned(), vec![CParameter::JobSize(4 << 20)]].concat()),
        s("l1_w0", 1, 0, vec![]),
        s("l1_w2", 1, 2, vec![]),
        s("l1_w2_job4M", 1, 2, vec![CParameter::JobSize(4 << 20)]),
        s("l2_w2", 2, 2, vec![]),
    ]
}

fn compress(data: &[u8], s: &Setting) -> usize {
    let mut out = Vec::with_capacity(data.len() / 2);
    let mut enc = zstd::stream::write::Encoder::new(&mut out, s.level).expect("encoder");
    enc.include_checksum(true).expect("checksum");
    if s.workers > 0 {
        enc.multithread(s.workers).expect("workers");
    }
    for p in &s.extra {
        enc.set_parameter(*p).expect("parameter");
    }
    enc.set_pledged_src_size(Some(data.len() as u64)).expect("pledge");
    let split = data.len().min(40);
    enc.write_all(&data[..split]).expect("write");
    for chunk in data[split..].chunks(1 << 20) {
        enc.write_all(chunk).expect("write");
    }
    enc.finish().expect("finish");
    out.len()
}

fn benches(c: &mut Criterion) {
    let corpus = pitr_benches::corpus();
    if !corpus.is_empty() {
        let raw: usize = corpus.iter().map(|(_, d)| d.len()).sum();
        let base: usize = corpus.iter().map(|(_, d)| compress(d, &settings()[0])).sum();
        eprintln!(
            "corpus: {} segments, {raw} bytes; sizes relative to l3_w0 (pitr's level 3, one thread):",
            corpus.len()
        );
        for s in settings() {
            let total: usize = corpus.iter().map(|(_, d)| compress(d, &s)).sum();
            eprintln!(
                "  {:28} {total:>11} bytes  ratio {:5.2}  {:+.2}%",
                s.name,
                raw as f64 / total as f64,
                100.0 * (total as f64 - base as f64) / base as f64
            );
        }
    }
    let (data, what) = match (std::env::var_os("PITR_BENCH_SEGMENT"), corpus.len()) {
        (None, n) if n > 0 => {
            let (name, d) = &corpus[n / 2];
            (d.clone(), format!("corpus segment {name}"))
        }
        _ => pitr_benches::input(),
    };
    eprintln!("timed input: {what}");
    let mut g = c.benchmark_group("zstd_params");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(data.len() as u64));
    for s in settings() {
        eprintln!("{}: {} bytes", s.name, compress(&data, &s));
        g.bench_function(s.name, |b| b.iter(|| compress(black_box(&data), &s)));
    }
    g.finish();
}

criterion_group!(zstd_params, benches);
criterion_main!(zstd_params);
