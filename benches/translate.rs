//! Translation throughput per format, both directions, on the spec's transfer samples, and
//! rendering with delivery's read-back check.
//!
//! `cargo bench --bench translate`; figures and the machine are in docs/PERFORMANCE.md.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use liandong::formats::Registry;

/// One transfer sample per format (the formats.md example where there is one) and its sender.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("jjd-json", "330200/110", "jjd-json/transfer-ningbo-township.json"),
    ("gd-json", "330200/12345", "gd-json/transfer-ningbo.json"),
    ("incident-json", "110000/110", "incident-json/transfer-beijing.json"),
    ("ticket-json", "110000/12345", "ticket-json/transfer-beijing.json"),
    ("jqxx-xml", "210000/110", "jqxx-xml/transfer-liaoning.xml"),
    ("workorder-xml", "210000/12345", "workorder-xml/transfer-liaoning.xml"),
];

fn translate(c: &mut Criterion) {
    let registry = Registry::builtin();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec/samples");
    let mut read = c.benchmark_group("native_to_canonical");
    read.throughput(Throughput::Elements(1));
    for (format, endpoint, file) in SAMPLES {
        let endpoint = registry.endpoint_named(endpoint).unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        read.bench_with_input(BenchmarkId::from_parameter(format), &bytes, |b, bytes| {
            b.iter(|| endpoint.read_transfer(std::hint::black_box(bytes)).unwrap())
        });
    }
    read.finish();
    let mut write = c.benchmark_group("canonical_to_native");
    write.throughput(Throughput::Elements(1));
    for (format, endpoint, file) in SAMPLES {
        let endpoint = registry.endpoint_named(endpoint).unwrap();
        let request = endpoint.read_transfer(&std::fs::read(dir.join(file)).unwrap()).unwrap();
        write.bench_with_input(BenchmarkId::from_parameter(format), &request, |b, request| {
            b.iter(|| endpoint.write_transfer(std::hint::black_box(request)).unwrap())
        });
    }
    write.finish();
    // What delivery does before every send: render, then read the result back with the
    // destination's own profile (a document its reader would refuse is never sent).
    let mut checked = c.benchmark_group("canonical_to_native_read_back");
    checked.throughput(Throughput::Elements(1));
    for (format, endpoint, file) in SAMPLES {
        let endpoint = registry.endpoint_named(endpoint).unwrap();
        let request = endpoint.read_transfer(&std::fs::read(dir.join(file)).unwrap()).unwrap();
        checked.bench_with_input(BenchmarkId::from_parameter(format), &request, |b, request| {
            b.iter(|| {
                let bytes = endpoint.write_transfer(std::hint::black_box(request)).unwrap();
                endpoint.format.read_transfer(&bytes, &request.from, &endpoint.codes).unwrap()
            })
        });
    }
    checked.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
