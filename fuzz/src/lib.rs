//! What every fuzz target checks, for the endpoint it is given: reading any bytes as a
//! transfer, a status or a receipt never panics; and whatever reads successfully renders, and
//! the rendered document reads again (the gateway can always forward what it accepted).

use std::sync::OnceLock;

use liandong::formats::{Endpoint, Registry};

fn endpoint(id: &str) -> &'static Endpoint {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin).endpoint_named(id).expect("a built-in endpoint")
}

/// Feeds `data` to every parser of the endpoint `id`.
pub fn parsers_of(id: &str, data: &[u8]) {
    let endpoint = endpoint(id);
    if let Ok(request) = endpoint.read_transfer(data) {
        let native = endpoint.write_transfer(&request).expect("an accepted transfer renders");
        endpoint.read_transfer(&native).expect("a rendered transfer reads again");
    }
    if let Ok(update) = endpoint.read_status(data) {
        let native = endpoint.write_status(&update).expect("an accepted status renders");
        endpoint.read_status(&native).expect("a rendered status reads again");
    }
    let _ = endpoint.read_receipt(data);
}

/// Feeds `data` to the canonical JSON decoder, and renders what it accepts for every format.
pub fn canonical(data: &[u8]) {
    use liandong::model::{json, TransferRequest};
    if let Ok(mut request) = json::parse::<TransferRequest>(data, TransferRequest::REQUIRED) {
        if request.validate().is_ok() {
            for id in ["330200/12345", "210000/12345", "110000/12345", "330200/110", "210000/110", "110000/110"] {
                let endpoint = endpoint(id);
                if let Ok(native) = endpoint.write_transfer(&request) {
                    endpoint.read_transfer(&native).ok();
                }
            }
        }
    }
}
