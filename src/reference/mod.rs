//! reference (under construction).
