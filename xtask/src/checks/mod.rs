pub mod checkov;
pub mod packaging;
pub mod terraform;
