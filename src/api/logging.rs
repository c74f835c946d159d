//! One log line per request — identity, route, status, latency, transfer id — and the masking
//! that keeps callers' phone numbers and names out of logs (`139****0001`, `李*`). The audit
//! of who did what is the store's history, complete; logs are for operators and must not
//! become a second, leakier copy of citizens' data.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::Peer;

/// Logs the request after it is answered.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let identity = request.extensions().get::<Peer>().map(|p| p.uri.clone()).unwrap_or_default();
    let method = request.method().clone();
    let route = request.uri().path().to_string();
    let response = next.run(request).await;
    let template = super::route_template(&method, &route);
    crate::metrics::counters()
        .request_seconds
        .observe(format!("route=\"{template}\""), started.elapsed());
    let transfer = response
        .headers()
        .get("x-liandong-transfer-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let grpc_status =
        response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info!(
        target: "liandong::request",
        identity = %identity,
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        grpc_status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        transfer_id = transfer,
        request_id = %super::context::request_id(),
        "request"
    );
    response
}

/// How long a request may take to be answered (its head; a `Watch` stream then runs on).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers 503 when a request takes longer than [`REQUEST_TIMEOUT`], so a stuck call never
/// holds its connection and its resources for ever.
pub async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(target: "liandong::request", "request timed out");
            let mut response = Response::new(axum::body::Body::from("request timed out\n"));
            *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

/// The largest header block a request may have.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Answers 431 with the canonical error naming the limit when a request's header block is over
/// [`MAX_HEADER_BYTES`]. (The HTTP/1.1 reader's own buffer stops a larger block still, with a
/// bare 431; HTTP/2 refuses it with its header-list limit.)
pub async fn header_limit(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request.uri().to_string().len();
    if size <= MAX_HEADER_BYTES {
        return next.run(request).await;
    }
    let problem =
        format!("request headers: {size} bytes, over the 64 KiB limit ({MAX_HEADER_BYTES} bytes)");
    axum::response::IntoResponse::into_response(super::refusal::Refusal::new(
        super::refusal::Reason::HeadersTooLarge,
        problem,
    ))
}

/// A phone number with its middle hidden: `13900000001` → `139****0001`; short numbers stay.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.trim_start_matches("+86").chars().collect();
    if digits.len() <= 5 {
        return digits.into_iter().collect();
    }
    let keep_end = 4.min(digits.len() - 3);
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - keep_end..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 3 - keep_end))
}

/// A name with all but its first character hidden: `李女士` → `李**`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => format!("{first}{}", "*".repeat(chars.count())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_phone("+8613900000001"), "139****0001");
        assert_eq!(mask_phone("13900000001"), "139****0001");
        assert_eq!(mask_phone("+8657487654321"), "574****4321");
        assert_eq!(mask_phone("12345"), "12345");
        assert_eq!(mask_name("李"), "李");
        assert_eq!(mask_name("李女士"), "李**");
        assert_eq!(mask_name("阿依古丽·买买提"), "阿*******");
    }
}
