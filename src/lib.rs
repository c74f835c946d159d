#![forbid(unsafe_code)]
pub mod formats;
pub mod model;
