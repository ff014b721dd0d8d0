//! dataset (under construction).
