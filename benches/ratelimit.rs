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
    // As the gateway calls it: the identity's URI made once per connection.
    let one = Identity::Endpoint("330200/110".parse().unwrap());
    let key = one.uri();
    c.bench_function("check/one_identity", |b| {
        b.iter(|| limits.check_keyed(std::hint::black_box(&one), &key, CallKind::Submit))
    });
    let many: Vec<(Identity, String)> = (0..10_000)
        .map(|i| {
            let identity = Identity::Agency(format!("agency-{i}"));
            let uri = identity.uri();
            (identity, uri)
        })
        .collect();
    let mut i = 0;
    c.bench_function("check/10000_identities", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            limits.check_keyed(std::hint::black_box(&many[i].0), &many[i].1, CallKind::Read)
        })
    });
}

criterion_group!(benches, checks);
criterion_main!(benches);
