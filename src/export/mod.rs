//! export (under construction).
