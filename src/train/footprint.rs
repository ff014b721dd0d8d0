//! The host memory a training run's settings need, checked before anything is allocated,
//! so `--widths 100000000,…` stops with a one-line error instead of an aborted allocation.
use super::{TrainConfig, TrainError};
use crate::memory::{check, Bytes};
use crate::model::param_specs;

/// Host bytes the run holds at least: the parameters, their momentum, and the copies of both
/// a checkpoint write downloads (4 floats of 4 bytes per parameter), plus the loader's
/// batches in flight (`prefetch` queued, one being assembled, one on its way to the GPU).
pub fn host_bytes(cfg: &TrainConfig, stored: usize) -> Result<(u128, u128), TrainError> {
    let params: u128 = param_specs(&cfg.model)?
        .iter()
        .map(|s| s.shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    let image = (stored as u128).pow(2) * 3;
    let batches = cfg.batch as u128 * image * (cfg.loader.prefetch as u128 + 2);
    Ok((params, params * 16 + batches))
}

/// Refuses settings that cannot fit in this machine's memory.
pub fn check_fits(cfg: &TrainConfig, stored: usize) -> Result<(), TrainError> {
    let m = &cfg.model;
    // Beyond this a single layer's size overflows the shape arithmetic itself.
    if m.widths.iter().any(|&w| w > u32::MAX as usize) || m.classes > u32::MAX as usize {
        return Err(TrainError::Mismatch(format!(
            "widths {:?} and {} classes: a width above {} cannot be allocated anywhere; lower --widths",
            m.widths,
            m.classes,
            u32::MAX
        )));
    }
    let (params, need) = host_bytes(cfg, stored)?;
    check(
        format!(
            "the model (widths {:?}, {} classes: {params} parameters, {}) with batch {}",
            m.widths,
            m.classes,
            Bytes(params * 4),
            cfg.batch
        ),
        need,
        "lower --widths (the paper: 96,256,384,384,256,4096,4096) or --batch",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn the_estimate_counts_every_parameter() {
        let cfg = TrainConfig {
            model: ModelConfig::paper(1000),
            ..TrainConfig::default()
        };
        let (params, need) = host_bytes(&cfg, 256).unwrap();
        // The paper's network: about 61 million parameters.
        assert!((60_000_000..63_000_000).contains(&params), "{params}");
        assert!(need > params * 16);
        let mut huge = cfg.clone();
        huge.model.widths[0] = 100_000_000;
        let e = check_fits(&huge, 256).unwrap_err().to_string();
        assert!(e.contains("memory") && e.contains("--widths"), "{e}");
    }
}
