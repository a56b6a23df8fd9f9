//! Integration tests: the server in process, and the real `robot-server`
//! binary where only it will do, on loopback ports.

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
mod stalls;
mod state_file;
