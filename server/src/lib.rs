//! The robot server.
