//! The robot controller.
