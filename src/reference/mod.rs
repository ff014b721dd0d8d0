//! Plain CPU implementations of every op, the truth the kernels are tested against.
pub mod augment;
