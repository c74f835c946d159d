//! Who is calling, established once from the verified client certificate, and the TLS
//! material that makes that possible.
//!
//! Every listener of the gateway is mutual TLS: a client without a certificate chained to the
//! configured CA never reaches a handler. The identity is the certificate's URI SAN
//! (`liandong://endpoint/330200/110`), read after the handshake has verified the chain, and it
//! travels with the request; nothing a document says about its sender is believed.

pub mod ca;
pub mod ca_log;
pub mod connections;
pub mod identity;
pub mod inspect;
pub mod pki;
pub mod policy;
pub mod ratelimit;
pub mod reload;
pub mod tls;

pub use identity::Identity;

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: {0}")]
    Verifier(String),
    #[error("certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Installs the one crypto provider (ring) for the whole process. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
