//! Exports of a trained run: feature vectors, nearest neighbours, and images (filters,
//! contact sheets, the report's curves).
pub mod plot;
