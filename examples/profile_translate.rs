//! A loop for profilers (perf, callgrind): `cargo run --release --example profile_translate -- FORMAT N`.
use liandong::formats::Registry;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "jjd".into());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let (endpoint, file) = match which.as_str() {
        "jqxx" => ("210000/110", "jqxx-xml/transfer-liaoning.xml"),
        "wo" => ("210000/12345", "workorder-xml/transfer-liaoning.xml"),
        _ => ("330200/110", "jjd-json/transfer-ningbo-township.json"),
    };
    let registry = Registry::builtin();
    let endpoint = registry.endpoint_named(endpoint).unwrap();
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec/samples").join(file),
    )
    .unwrap();
    let request = endpoint.read_transfer(&bytes).unwrap();
    let mut total = 0;
    for _ in 0..n {
        total += std::hint::black_box(endpoint.read_transfer(&bytes).unwrap()).sender_ref.len();
        total += std::hint::black_box(endpoint.write_transfer(&request).unwrap()).len();
    }
    println!("{total}");
}
