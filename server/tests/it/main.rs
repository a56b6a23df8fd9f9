//! Integration tests: the real `robot-server` binary on a loopback port.

mod harness;

mod auth;
mod bad_input;
mod concurrency;
mod config;
mod escaping;
mod observability;
mod reference;
mod roundtrip;
mod shutdown;
mod state_file;
