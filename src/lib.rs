//! Liandong (联动): the gateway through which 110 police alarm desks and 12345 government
//! service hotlines hand cases to each other.
//!
//! # Layout
//!
//! docs/ARCHITECTURE.md draws it; `tests/house.rs` checks the code against it. From the base up,
//! each part using only the parts on its own line or below:
//!
//! - base: [`model`] (the canonical model of `canonical.md` and its rules: Beijing time, `+86`
//!   phones, WGS-84 points, the category taxonomy, the transition table) and [`metrics`]
//!   (process-wide counters and histograms); [`formats`] (each endpoint's native documents ⇄
//!   the model, driven by `profiles/*.toml`: no Rust code knows a province) and [`proto`] (the
//!   model as protocol buffers); [`store`] (SQLite or PostgreSQL: writes, outbox, shared
//!   records and their live copies in memory, the audit trail, replica names).
//! - core: [`config`] and [`security`] (settings as plain data; identities, policy, rate
//!   limits, TLS and the PKI), [`engine`], [`routing`] and [`sync`] (transfers, three-tier
//!   routing by the `directory`, shared datasets and their feeds). No two modules use each
//!   other.
//! - fronts: [`api`] (HTTPS and gRPC over one refusal model) and [`delivery`] (the outbox
//!   pushed to destinations); [`server`], the process that runs them.
//! - tools, which nothing in the gateway uses: [`cli`], [`site`], [`loadgen`], [`simulate`],
//!   [`demo`].
//!
//! # Invariants
//!
//! - No input makes the library panic; a document is translated whole or refused whole.
//! - Identity comes from outside the document: the sending endpoint is a parameter of every
//!   read, never a field of the document.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod engine;
pub mod formats;
pub mod loadgen;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod routing;
pub mod security;
pub mod server;
pub mod simulate;
pub mod site;
pub mod stats;
pub mod store;
pub mod sync;
