//! robot-controller: reconciles managed resources (Robots) in a remote
//! control plane against a robot server inside a private network. Every
//! connection goes outward.
//!
//! Data flows one way: [`source`] (kubeconfig and token bytes) ->
//! [`kubeclient`] (a control-plane client that survives rotation) ->
//! [`managed`] (the generic Crossplane reconciler) -> [`kinds`] (each
//! managed kind's external API). [`runtime`] decides how the process runs
//! (a long-lived service, one pass, or a Lambda handler) for every kind of
//! the list it is given.

pub mod api;
pub mod cli;
pub mod crd;
pub mod credentials;
pub mod endpoints;
pub mod kinds;
pub mod kubeclient;
pub mod kubeconfig;
pub mod managed;
pub mod provider;
pub mod ratelimit;
pub mod runtime;
pub mod serverauth;
pub mod source;
pub mod telemetry;
