//! The robot server's `/robots` API: wire types shared by the server and the
//! controller, and a typed HTTP client.
//!
//! The reference contract (`POST/GET/PUT/DELETE /robots?name=N`) is kept
//! exactly; `GET /v1/robots` (a paginated listing) is ours.

pub mod client;
pub mod probe;
pub mod wire;

pub use client::{
    AuthHeader, AuthorizationError, AuthorizationFuture, Authorizer, Error, RobotClient,
    http_client,
};
pub use wire::{ErrorBody, InvalidRobot, Robot, RobotList, validate_name};
