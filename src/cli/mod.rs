//! The binary's own modules, beside `main.rs` (the CLI's edge): `keyward.toml` and the demo.

pub mod config;
pub mod demo;
