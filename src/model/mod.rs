//! model (under construction).
