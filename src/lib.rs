#![forbid(unsafe_code)]
pub mod cli;
pub mod formats;
pub mod model;
pub mod proto;
