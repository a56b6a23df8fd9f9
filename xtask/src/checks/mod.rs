pub mod checkov;
pub mod terraform;
