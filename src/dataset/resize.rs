//! Which filter resized a shard's stored images, recorded so that everything that later
//! resizes a new image for the same model (`predict`, `neighbors --query-image`) does it the
//! same way: a model trained on one filter's pixels sees a small but systematic shift on the
//! other's (about 2% of the logits on photos, issue 25).
use serde::{Deserialize, Serialize};

/// Footer key of the filter's name ([`Resize::as_str`]); absent in shards written before it
/// existed, which were all resized with [`Resize::Lanczos3`].
pub const RESIZE_KEY: &str = "alexnet.resize";

/// Checkpoint metadata key of the filter the model's training images were resized with
/// (absent in checkpoints of older versions and of other frameworks).
pub const CHECKPOINT_KEY: &str = "resize";

/// The filter a checkpoint records under [`CHECKPOINT_KEY`] (`None`: it records none), or
/// `fallback` when it records none; an unknown name is an error naming it.
pub fn recorded(value: Option<&str>, fallback: Resize) -> Result<Resize, String> {
    match value {
        None => Ok(fallback),
        Some(v) => Resize::parse(v).ok_or_else(|| {
            format!("metadata `{CHECKPOINT_KEY}` is {v:?}, not lanczos3 or bilinear")
        }),
    }
}

/// The resampling filter of `ingest --resize` (and of `predict`, taken from the checkpoint).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Lanczos3 with support scaled by the downscale factor (Pillow's LANCZOS): sharper.
    #[default]
    Lanczos3,
    /// Bilinear with support scaled by the downscale factor: Pillow's BILINEAR, which is
    /// what torchvision's default `Resize(S)` does (antialias on).
    Bilinear,
}

impl Resize {
    /// The name on the command line, in the footer and in checkpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Resize::Lanczos3 => "lanczos3",
            Resize::Bilinear => "bilinear",
        }
    }

    /// The filter named `s` ([`Resize::as_str`]), if any.
    pub fn parse(s: &str) -> Option<Resize> {
        [Resize::Lanczos3, Resize::Bilinear]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for r in [Resize::Lanczos3, Resize::Bilinear] {
            assert_eq!(Resize::parse(r.as_str()), Some(r));
            assert_eq!(
                <Resize as clap::ValueEnum>::from_str(r.as_str(), false).unwrap(),
                r
            );
        }
        assert_eq!(Resize::parse("nearest"), None);
        assert_eq!(Resize::default(), Resize::Lanczos3);
        let r = recorded(Some("bilinear"), Resize::Lanczos3);
        assert_eq!(r, Ok(Resize::Bilinear));
        assert_eq!(recorded(None, Resize::Bilinear), Ok(Resize::Bilinear));
        assert!(recorded(Some("cubic"), Resize::Lanczos3)
            .unwrap_err()
            .contains("\"cubic\""));
    }
}
