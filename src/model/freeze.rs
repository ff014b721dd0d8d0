//! `train --freeze LAYER`: every layer up to and including LAYER's block keeps its weights.
//! The walk starts backward's loop at the first layer after it (nothing below it needs a
//! gradient, so a frozen run also does less work) and leaves the frozen tensors, and their
//! momentum, as they were loaded.
use super::layers::Layer;
use super::walk::NetworkError;

/// The blocks a run can freeze through: fc8 is left out, since a run that freezes it has
/// nothing to train.
pub const FREEZABLE: [&str; 7] = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"];

/// The index in `layers` of the first layer after block `block`'s, or
/// [`NetworkError::Freeze`] when `block` is not one of [`FREEZABLE`].
pub fn first_trainable(layers: &[Layer], block: &str) -> Result<usize, NetworkError> {
    let unknown = || NetworkError::Freeze {
        layer: block.to_string(),
        valid: FREEZABLE.join(", "),
    };
    if !FREEZABLE.contains(&block) {
        return Err(unknown());
    }
    layers
        .iter()
        .rposition(|l| l.block == block)
        .map(|i| i + 1)
        .ok_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Mode, SgdHyper};
    use crate::model::{ModelConfig, Params, Walk};
    use crate::reference::backend::RefBackend;
    use crate::reference::random_tensor;

    #[test]
    fn unknown_and_unfreezable_layers_are_refused_with_the_valid_names() {
        let cfg = ModelConfig::small(75, 16, 5);
        let g = crate::model::Geometry::new(&cfg, 2).unwrap();
        let list = crate::model::layers::layers(&g, Default::default(), cfg.activation);
        for bad in ["conv9", "fc8", "", "Conv5"] {
            let e = first_trainable(&list, bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("conv1, conv2") && e.contains("fc7"),
                "{bad}: {e}"
            );
        }
        // conv5's block ends with its pooling; fc6's linear layer comes next.
        let i = first_trainable(&list, "conv5").unwrap();
        assert_eq!(list[i].block, "fc6");
        assert_eq!(list[i - 1].block, "conv5");
    }

    /// Random parameters and momentum (never zeros: a frozen tensor left at zero would pass
    /// for one trained to zero).
    fn start(cfg: &ModelConfig) -> (Params, Params) {
        let mut params = Params::zeros(cfg).unwrap();
        let mut momentum = Params::zeros(cfg).unwrap();
        for (i, (p, m)) in params
            .tensors
            .iter_mut()
            .zip(momentum.tensors.iter_mut())
            .enumerate()
        {
            p.data = random_tensor(10 + i as u32, p.data.len(), 0.1);
            m.data = random_tensor(40 + i as u32, m.data.len(), 0.01);
        }
        (params, momentum)
    }

    /// One step of the walk on the reference engine from [`start`], with `freeze` or
    /// without: (parameters after SGD, momentum after SGD, gradients).
    fn step(cfg: &ModelConfig, freeze: Option<&str>) -> (Params, Params, Params) {
        let mut be = RefBackend::new();
        let mut walk = Walk::new(&mut be, cfg, 3).unwrap();
        if let Some(f) = freeze {
            walk.freeze_through(f).unwrap();
        }
        let (params, momentum) = start(cfg);
        walk.upload_params(&mut be, &params).unwrap();
        walk.upload_momentum(&mut be, &momentum).unwrap();
        let images = random_tensor(3, walk.geometry.input_len(), 1.0);
        walk.upload_input(&mut be, &images).unwrap();
        walk.upload_labels(&mut be, &[0, 4, 2]).unwrap();
        walk.forward(&mut be, Mode::Eval).unwrap();
        walk.backward(&mut be, Mode::Eval).unwrap();
        let hyper = SgdHyper {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        walk.sgd(&mut be, hyper).unwrap();
        (
            walk.download_params(&mut be).unwrap(),
            walk.download_momentum(&mut be).unwrap(),
            walk.download_grads(&mut be).unwrap(),
        )
    }

    #[test]
    fn a_frozen_walk_leaves_the_frozen_tensors_and_trains_the_rest_as_a_full_one() {
        let cfg = ModelConfig::small(75, 16, 5);
        let (p0, m0) = start(&cfg);
        let (p_full, m_full, g_full) = step(&cfg, None);
        for freeze in ["conv5", "conv2", "fc7"] {
            let (p, m, g) = step(&cfg, Some(freeze));
            let boundary = FREEZABLE.iter().position(|b| *b == freeze).unwrap();
            for (i, t) in p.tensors.iter().enumerate() {
                let name = &t.spec.name;
                let block = name.split_once('.').unwrap().0;
                let frozen = FREEZABLE[..=boundary].contains(&block);
                if frozen {
                    // Bit-identical weights and momentum, and no gradient computed at all.
                    assert_eq!(t.data, p0.tensors[i].data, "{freeze}: {name} moved");
                    assert_eq!(m.tensors[i].data, m0.tensors[i].data, "{freeze}: {name}");
                    assert!(g.tensors[i].data.iter().all(|&v| v == 0.0), "{name}");
                    assert_ne!(p_full.tensors[i].data, p0.tensors[i].data, "{name}");
                } else {
                    // Above the boundary it computes exactly what the full walk does.
                    assert_eq!(g.tensors[i].data, g_full.tensors[i].data, "{name}: grad");
                    assert_eq!(t.data, p_full.tensors[i].data, "{freeze}: {name}");
                    assert_eq!(m.tensors[i].data, m_full.tensors[i].data, "{name}");
                    assert_ne!(t.data, p0.tensors[i].data, "{freeze}: {name} did not train");
                }
            }
        }
    }
}
