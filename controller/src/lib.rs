//! robot-controller: reconciles Robots in a remote control plane against a
//! robot server inside a private network. Every connection goes outward.
//!
//! Data flows one way: [`source`] (kubeconfig and token bytes) ->
//! [`kubeclient`] (a control-plane client that survives rotation) ->
//! [`managed`] (the generic Crossplane reconciler) -> [`robot`] (the robot
//! server's API). [`runtime`] decides how the process runs: a long-lived
//! service, one pass, or a Lambda handler.

pub mod cli;
pub mod crd;
pub mod endpoints;
pub mod kubeclient;
pub mod kubeconfig;
pub mod managed;
pub mod providerconfig;
pub mod ratelimit;
pub mod robot;
pub mod runtime;
pub mod serverauth;
pub mod source;
pub mod telemetry;
