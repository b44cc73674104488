//! The `cargo xtask` commands, one module each.

pub mod bench;
pub mod igt;
pub mod qemu;
pub mod setup;
pub mod test;
