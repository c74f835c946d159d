//! The cost of one rate-limit check (goal: ≤ 100 ns), for one identity and for many.
//!
//! `cargo bench --bench ratelimit`; figures in docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, Criterion};
use liandong::security::ratelimit::{CallKind, LimitsConfig, RateLimits};
use liandong::security::Identity;

fn checks(c: &mut Criterion) {
    let mut config = LimitsConfig::default();
    config.endpoint.submit.per_second = 1_000_000_000;
    config.endpoint.submit.burst = 1_000_000_000;
    let limits = RateLimits::new(&config);
    let one = Identity::Endpoint("330200/110".parse().unwrap());
    c.bench_function("check/one_identity", |b| b.iter(|| limits.check(std::hint::black_box(&one), CallKind::Submit)));
    let many: Vec<Identity> = (0..10_000).map(|i| Identity::Agency(format!("agency-{i}"))).collect();
    let mut i = 0;
    c.bench_function("check/10000_identities", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            limits.check(std::hint::black_box(&many[i]), CallKind::Read)
        })
    });
}

criterion_group!(benches, checks);
criterion_main!(benches);
