//! zstd parameters for WAL: stored size and cost of candidate settings next to what
//! `common::codec::compress` does now, streamed exactly as it does (checksum on, size pledged,
//! 1 MiB writes), each object counted with its [`HEADER_LEN`]-byte header.
//!
//! With `PITR_BENCH_CORPUS=/tmp/pitr-bench/corpus` (a `make-wal-corpus.sh` output) every
//! setting first compresses the whole corpus once and prints its total as stored, the ratio,
//! the difference to `pitr` (the codec as built) and CPU ms per segment; the repository-size
//! target is judged on a corpus, not one segment. `PITR_BENCH_REFERENCE_BYTES` (e.g. `du -sb`
//! of a pgBackRest repository holding the same corpus) adds a column relative to it.
//! `PITR_BENCH_SIZES_ONLY=1` stops there. The timed part (criterion) then uses
//! `PITR_BENCH_SEGMENT`, else the corpus's middle segment, else a synthetic segment.
//! Run: `PITR_BENCH_CORPUS=/tmp/pitr-bench/corpus cargo bench -p pitr-benches --bench zstd_params`.

use std::hint::black_box;
use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use common::codec::{self, CompressOptions, HEADER_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zstd::zstd_safe::{CParameter, Strategy};

/// A named setting: `pitr` is `codec::compress` with its defaults; the others are a zstd level,
/// worker threads and extra parameters, streamed like the codec does.
struct Setting {
    name: &'static str,
    level: i32,
    workers: u32,
    extra: Vec<CParameter>,
}

fn settings() -> Vec<Setting> {
    use CParameter::{ChainLog, HashLog, OverlapSizeLog, SearchLog, Strategy as Strat, WindowLog};
    let s = |name, level, workers, extra| Setting { name, level, workers, extra };
    // The codec's level 3: zstd's level 3 with these three parameters.
    let wal3 = || vec![WindowLog(21), HashLog(13), ChainLog(13)];
    let greedy = || vec![Strat(Strategy::ZSTD_greedy), SearchLog(1), HashLog(15), WindowLog(19)];
    vec![
        s("pitr", 3, 0, vec![]),
        s("zstd_l3", 3, 0, vec![]),
        s("zstd_l3_w2", 3, 2, vec![]),
        s("l3_wlog21_hlog13_clog13", 3, 0, wal3()),
        s("l3_wlog21_hlog13_clog13_w2", 3, 2, wal3()),
        s("l3_wlog22_hlog13_clog16", 3, 0, vec![WindowLog(22), HashLog(13), ChainLog(16)]),
        s("l3_wlog22_hlog13_clog14", 3, 0, vec![WindowLog(22), HashLog(13), ChainLog(14)]),
        s("l3_wlog22_hlog14_clog16", 3, 0, vec![WindowLog(22), HashLog(14), ChainLog(16)]),
        s("l3_wlog21_hlog15_clog16", 3, 0, vec![WindowLog(21), HashLog(15), ChainLog(16)]),
        s("l3_wlog19_hlog15_clog15", 3, 0, vec![WindowLog(19), HashLog(15), ChainLog(15)]),
        s("l3_wlog24", 3, 0, vec![WindowLog(24)]),
        s("l3_greedy_wlog19_hlog15", 3, 0, greedy()),
        s("l3_greedy_wlog19_hlog15_w2", 3, 2, [greedy(), vec![OverlapSizeLog(9)]].concat()),
        s("l3_lazy_wlog18_hlog14", 3, 0, vec![Strat(Strategy::ZSTD_lazy), SearchLog(1), HashLog(14), WindowLog(18)]),
        s("zstd_l1", 1, 0, vec![]),
        s("zstd_l4", 4, 0, vec![]),
        s("zstd_l5", 5, 0, vec![]),
    ]
}

/// Bytes stored for `data` under `s`, header included.
fn stored(data: &[u8], s: &Setting) -> usize {
    if s.name == "pitr" {
        let mut out = Cursor::new(Vec::with_capacity(data.len() / 2));
        let opts = CompressOptions::default();
        codec::compress(data, &mut &[][..], &mut out, "x", Some(data.len() as u64), opts).expect("compress");
        return out.into_inner().len();
    }
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
    for chunk in data.chunks(1 << 20) {
        enc.write_all(chunk).expect("write");
    }
    enc.finish().expect("finish");
    HEADER_LEN + out.len()
}

/// User + system CPU time of this process (all threads) so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms: fine over a corpus); 0 where it is unreadable.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Fields 14 and 15 (utime, stime) of proc(5); `after_name` starts at field 3.
    let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

fn sizes(corpus: &[(String, Vec<u8>)]) {
    let raw: usize = corpus.iter().map(|(_, d)| d.len()).sum();
    let reference: Option<f64> = std::env::var("PITR_BENCH_REFERENCE_BYTES").ok().and_then(|v| v.parse().ok());
    eprintln!(
        "corpus: {} segments, {raw} bytes; stored = compressed + {HEADER_LEN}-byte header per object{}",
        corpus.len(),
        if reference.is_some() { "; ref = PITR_BENCH_REFERENCE_BYTES" } else { "" }
    );
    let mut base = None;
    for s in settings() {
        let (t, c) = (Instant::now(), cpu_seconds());
        let total: usize = corpus.iter().map(|(_, d)| stored(d, &s)).sum();
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let base = *base.get_or_insert(total as f64);
        let vs_ref =
            reference.map(|r| format!("  vs ref {:+6.2}%", 100.0 * (total as f64 - r) / r)).unwrap_or_default();
        eprintln!(
            "  {:28} {total:>11} bytes  ratio {:5.2}  vs pitr {:+6.2}%{vs_ref}  {:5.1} ms CPU/seg ({:5.1} wall)",
            s.name,
            raw as f64 / total as f64,
            100.0 * (total as f64 - base) / base,
            1000.0 * cpu / corpus.len() as f64,
            1000.0 * wall / corpus.len() as f64,
        );
    }
}

fn benches(c: &mut Criterion) {
    let corpus = pitr_benches::corpus();
    if !corpus.is_empty() {
        sizes(&corpus);
        if std::env::var_os("PITR_BENCH_SIZES_ONLY").is_some() {
            return;
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
        eprintln!("{}: {} bytes stored", s.name, stored(&data, &s));
        g.bench_function(s.name, |b| b.iter(|| stored(black_box(&data), &s)));
    }
    g.finish();
}

criterion_group!(zstd_params, benches);
criterion_main!(zstd_params);
