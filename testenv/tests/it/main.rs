//! Integration tests of the harness against the real binaries: one test
//! binary, so the kube client code links once.

mod byoc_direction;
mod crds;
mod lifecycle;
mod rbac;
mod robot_server;
mod support;
