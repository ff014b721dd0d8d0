//! train (under construction).
