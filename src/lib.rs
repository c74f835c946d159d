//! Liandong (联动): the gateway through which 110 police alarm desks and 12345 government
//! service hotlines hand cases to each other.
//!
//! # Layout
//!
//! Read in this order; each layer uses only the ones above it.
//!
//! - [`model`]: the canonical case-exchange model of `canonical.md` — cases, transfer requests,
//!   transfers, status updates, dataset records — and the normalisation rules every province's
//!   data goes through (Beijing time, `+86` phones, WGS-84 points, the category taxonomy).
//! - [`formats`]: translation between each endpoint's native documents and the model. One
//!   generic engine reads data files (`profiles/*.toml`, one per format, and the endpoint
//!   registry) in both directions; no Rust code knows a particular province. Errors name the
//!   native field (`JQXX.BJSJ: expected yyyy-MM-dd HH:mm:ss, got "2023/05/08"`), and each
//!   format's receipts are rendered from its profile.
//! - [`proto`]: the model as protocol buffers (`proto/liandong/v1/`), for gRPC partners, with
//!   lossless conversion both ways.
//! - [`config`], [`store`], [`engine`]: the configuration, durable storage (SQLite or
//!   PostgreSQL), and the transfer engine — destinations, deadlines, the transition rules.
//! - [`routing`]: three-tier routing by the shared `directory` dataset.
//! - [`sync`]: shared datasets (owners, growing versions, tombstones, change feeds),
//!   reconciliation, and a follower client.
//! - [`security`], [`api`], [`delivery`], [`server`]: mutual TLS and identities, policy and rate
//!   limits; the HTTPS and gRPC fronts; pushing to destinations; the process that runs them.
//! - [`cli`]: the `liandong` command line; [`site`], [`loadgen`], [`metrics`], [`simulate`] and
//!   [`demo`] serve it.
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
pub mod store;
pub mod sync;
