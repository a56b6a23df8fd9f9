pub mod binaries;
pub mod checkov;
pub mod packaging;
pub mod readme;
pub mod terraform;
