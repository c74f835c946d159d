//! The integration tests, in one binary: one link of the gateway and its dependencies instead
//! of one per file. Each file beside this one is a module; run one with
//! `cargo test --test it MODULE::` (e.g. `cargo test --test it refusals::`). They share the
//! helpers in `common/`.

mod common;

mod abuse;
mod audit;
mod certs;
mod cli;
mod console;
mod crash;
mod datasets;
mod demo;
mod deploy;
mod desks;
mod engine;
mod faults;
mod gateway;
mod grpc;
mod house;
mod linkage;
mod loadgen;
mod postgres_restart;
mod properties;
mod python_client;
mod refusals;
mod replicas;
mod samples;
mod stats;
mod sync;
