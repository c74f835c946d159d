//! The request in hand: its id and its route, known to everything that runs while it is
//! answered (a task-local, set by the outermost middleware), so that a refusal, a log line and
//! an audit entry all name the same request without each handler passing it along.
//!
//! The id is the caller's `x-request-id` when it is a sensible token (up to 64 letters, digits,
//! `-`, `_`, `.`), so an integrator's own tracing id runs through; otherwise a new ULID. It is
//! sent back on every answer — as the `x-request-id` header (gRPC response metadata) — and
//! written into refusals' bodies, receipts and `RequestInfo`.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::Peer;

/// The header that carries the request id both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The request being answered.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub id: String,
    /// `METHOD /path` as sent (a gRPC call's path names its method).
    pub route: String,
    /// The caller, as the TLS layer established it (none on a path that has no caller).
    pub peer: Option<Peer>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The id of the request being answered, or `""` outside one (a background task).
pub fn request_id() -> String {
    CURRENT.try_with(|c| c.id.clone()).unwrap_or_default()
}

/// The id, the route and the caller of the request being answered.
pub fn current() -> (String, String, Option<Peer>) {
    CURRENT.try_with(|c| (c.id.clone(), c.route.clone(), c.peer.clone())).unwrap_or_default()
}

/// The caller's request id if it is a sensible token, else a new one.
fn id_for(request: &Request) -> String {
    let given = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let sensible = !given.is_empty()
        && given.len() <= 64
        && given.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if sensible {
        given.to_string()
    } else {
        ulid::Ulid::new().to_string()
    }
}

/// Gives the request its id, answers it within that context, and sends the id back.
pub async fn with_request_id(request: Request, next: Next) -> Response {
    let context = RequestContext {
        id: id_for(&request),
        route: format!("{} {}", request.method(), request.uri().path()),
        peer: request.extensions().get::<Peer>().cloned(),
    };
    let header = HeaderValue::from_str(&context.id).ok();
    let mut response = CURRENT.scope(context, next.run(request)).await;
    if let Some(header) = header {
        response.headers_mut().insert(REQUEST_ID, header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request {
        Request::builder().header(REQUEST_ID, value).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn a_sensible_id_is_kept_and_anything_else_replaced() {
        assert_eq!(id_for(&with_header("desk-42.call_7")), "desk-42.call_7");
        for odd in ["", "has space", "引号", &"x".repeat(65)] {
            let id = id_for(&with_header(odd));
            assert_ne!(id, odd);
            assert_eq!(id.len(), 26, "a ULID: {id}");
        }
    }

    #[tokio::test]
    async fn outside_a_request_there_is_no_id() {
        assert_eq!(request_id(), "");
        let context = RequestContext { id: "r1".into(), route: "GET /x".into(), peer: None };
        let (id, _, _) = CURRENT.scope(context, async { current() }).await;
        assert_eq!(id, "r1");
    }
}
