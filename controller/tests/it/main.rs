//! Integration tests of the controller against a real control plane
//! (kube-apiserver + etcd from testenv), the real robot server, and the
//! real controller binary. One test binary, so the dependencies link once.

mod auth;
mod crds;
mod faults;
mod hostile;
mod kinds;
mod lambda;
mod lifecycle;
mod modes;
mod reconciler;
mod scale;
mod secrets;
mod support;
mod v2;
