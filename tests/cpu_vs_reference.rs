//! What the CPU engine does beyond the `Backend` trait, against the plain reference
//! (`alexnet::reference`): the input stage's augmentation (crop, flip, colour shift, mean and
//! scale) to the bit, and its errors on bad sizes. Every op and the whole network on the CPU
//! engine (1 to 3 workers) are checked, as on every engine, by the one suite in `tests/ops/`.
use alexnet::cpu::{CpuDevice, HostInput};
use alexnet::reference as r;
use alexnet::shape::{AugmentDraw, AugmentShape};

fn pool(threads: usize) -> CpuDevice {
    CpuDevice::new(threads).expect("a rayon pool")
}

#[test]
fn augmentation_is_the_references_to_the_bit() {
    let s = AugmentShape {
        n: 3,
        stored: 13,
        crop: 9,
    };
    let images: Vec<u8> = (0..s.n * 13 * 13 * 3)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let mean: Vec<f32> = (0..13 * 13 * 3)
        .map(|i| (i % 97) as f32 * 1.7 + 30.0)
        .collect();
    let draws = [
        AugmentDraw {
            x0: 0,
            y0: 4,
            flip: 0,
            _pad: 0,
            shift: [1.5, -2.0, 0.25, 0.0],
        },
        AugmentDraw {
            x0: 4,
            y0: 0,
            flip: 1,
            _pad: 0,
            shift: [-3.0, 0.5, 2.0, 0.0],
        },
        AugmentDraw {
            x0: 2,
            y0: 3,
            flip: 1,
            _pad: 0,
            shift: [0.0; 4],
        },
    ];
    let want = r::augment_forward(&s, &images, &mean, &draws, 1.0 / 64.0);
    let mut input = HostInput::new(3, 13, 9, &mean, 1.0 / 64.0);
    input.set_images(&images).unwrap();
    let mut got = vec![f32::NAN; want.len()];
    pool(2).install(|| input.augment(&draws, &mut got)).unwrap();
    assert!(got == want, "augmentation differs from the reference");
    // Bad sizes are errors, not panics.
    assert!(input.set_images(&images[1..]).is_err());
    let off = AugmentDraw { x0: 5, ..draws[0] };
    assert!(input.augment(&[off, draws[1], draws[2]], &mut got).is_err());
}
