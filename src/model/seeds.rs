//! Seeds of the random streams the model draws during training, shared by the GPU graph and the
//! CPU reference so a training step can be recomputed exactly.
use crate::shape::stream_seed;

/// Seed of the dropout mask after fully connected layer `layer` (6 for fc6, 7 for fc7) at
/// training step `step`: `stream_seed(run_seed, step, layer)`. Element i of the `[N,F]` tensor
/// is kept iff `uniform01(seed, i) ≥ p` (see [`crate::reference::dropout`]).
pub fn dropout_seed(run_seed: u64, step: u64, layer: u32) -> u32 {
    stream_seed(run_seed, step, layer)
}

/// Stream id namespace of parameter init: tensor number t of
/// [`super::params::param_specs`] draws from `stream_seed(seed, 0, INIT_STREAM + t)`, far from
/// the dropout (6, 7) and augmentation streams.
pub const INIT_STREAM: u32 = 0x494e_0000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::uniform01;

    /// Values computed by the numpy port in `tests/fixtures/make_torch_fixture.py`: if the
    /// streams change, the PyTorch fixture's dropout masks no longer match, so this fails first.
    #[test]
    fn streams_match_the_python_fixture_script() {
        // uniform01 is a multiple of 2⁻²⁴, so compare the exact integers.
        let u: Vec<u32> = (0..4)
            .map(|i| (uniform01(7, i) * 16_777_216.0) as u32)
            .collect();
        assert_eq!(u, vec![5549290, 8708068, 10036714, 5053508]);
        assert_eq!(dropout_seed(1, 2, 6), 3_048_388_770);
        assert_eq!(dropout_seed((1 << 40) + 5, (1 << 33) + 1, 7), 1_658_630_620);
    }
}
