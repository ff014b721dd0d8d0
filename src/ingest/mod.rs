//! ingest (under construction).
