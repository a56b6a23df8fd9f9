//! A real control plane on loopback, for tests and the demo.
//!
//! [`ControlPlane`] runs a real etcd and kube-apiserver shaped like a
//! managed control plane seen from outside: TLS with its own CA, bearer
//! tokens from a static token file, RBAC. The controller's identity is bound
//! only by the RBAC files `infra/rbac/` ships, so a missing rule fails a
//! test the way it would fail in production. [`RobotServer`] runs the real
//! `robot-server` binary. [`netns`] builds private networks for the BYOC
//! direction tests. Every process dies with its guard, and with the test
//! process if that is killed.

mod apiserver;
pub mod binaries;
mod controlplane;
pub mod devstack;
mod error;
mod etcd;
pub mod faultproxy;
pub mod http;
pub mod kubeconfig;
pub mod manifests;
pub mod moto;
pub mod netns;
mod pki;
pub mod process;
pub mod python;
mod robot_server;
mod tokens;
mod wait;
mod workspace;

pub use controlplane::{ADMIN_USER, CONTROLLER_USER, ControlPlane, CrdSet, Options};
pub use error::Error;
pub use robot_server::{RobotServer, RobotServerOptions};
pub use wait::wait_for;
pub use workspace::{
    binary_path, build_binary, kubectl_path, provider_dummy_dir, shared_dir, workspace_root,
};

/// Makes aws-lc-rs the process-wide rustls provider, as every binary of the
/// workspace does; a provider installed earlier is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
