//! The map side of word count, in isolation: tokenize, combine, encode, partition and sort.
//! Run: `cargo bench -p sluice-benches`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_benches::zipf_text;
use sluice_udf::text::for_each_token;
use sluice_udf::Job;

fn map_side(c: &mut Criterion) {
    let text = zipf_text(8 << 20, 200_000);
    let mut g = c.benchmark_group("wordcount_map");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(10);
    g.bench_function("tokenize_only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for_each_token(&text, |t| n += t.len());
            n
        })
    });
    g.bench_function("std_split_whitespace", |b| {
        b.iter(|| text.split_whitespace().map(str::len).sum::<usize>())
    });
    let job = sluice_udf::wordcount::job();
    g.bench_function("run_map_4_partitions", |b| {
        b.iter(|| job.map_text(&text, 4).map(|o| o.records_out).unwrap_or(0))
    });
    g.finish();
}

criterion_group!(benches, map_side);
criterion_main!(benches);
