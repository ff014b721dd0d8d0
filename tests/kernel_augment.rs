//! The augment kernel against the CPU reference on lavapipe (or a GPU): random images, random
//! mean, every kind of draw (corner crops, mirrors, lighting), awkward sizes.
use alexnet::gpu::{augment, Gpu, Tensor};
use alexnet::reference::{augment_forward, check_close, random_tensor};
use alexnet::shape::{uniform01, AugmentDraw, AugmentShape};
use alexnet::train::augment::{random_draws, ten_crop_draws, AugmentSettings, Pca};

fn gpu() -> Gpu {
    Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers (the software Vulkan driver)")
}

fn run(
    gpu: &Gpu,
    s: &AugmentShape,
    images: &[u8],
    mean: &[f32],
    draws: &[AugmentDraw],
    scale: f32,
) -> Vec<f32> {
    let img_t = Tensor::zeros(gpu, augment::image_words(s), "test.images");
    augment::upload_images(gpu, &img_t, images).unwrap();
    let mean_t = Tensor::from_slice(gpu, mean, "test.mean");
    let draws_t = Tensor::zeros(gpu, augment::draw_words(s.n), "test.draws");
    augment::upload_draws(gpu, &draws_t, draws).unwrap();
    let out = Tensor::zeros(gpu, s.n * 3 * s.crop * s.crop, "test.out");
    let mut enc = gpu.encoder("test");
    let mut rec = alexnet::gpu::Recorder::new(gpu, &mut enc);
    augment::forward(&mut rec, s, &img_t, &mean_t, &draws_t, &out, scale).unwrap();
    drop(rec);
    gpu.submit(enc);
    out.download(gpu).unwrap()
}

fn inputs(s: &AugmentShape, seed: u32) -> (Vec<u8>, Vec<f32>) {
    // Image byte count deliberately not a multiple of 4 for odd sizes, to test the packing tail.
    let images = (0..s.n * s.stored * s.stored * 3)
        .map(|i| (uniform01(seed, i as u32) * 256.0) as u8)
        .collect();
    let mean = random_tensor(seed + 1, s.stored * s.stored * 3, 40.0)
        .iter()
        .map(|v| v + 120.0)
        .collect();
    (images, mean)
}

#[test]
fn augment_matches_reference_for_random_draws() {
    let gpu = gpu();
    let s = AugmentShape {
        n: 3,
        stored: 23,
        crop: 17,
    };
    let (images, mean) = inputs(&s, 5);
    let pca = Pca {
        eigenvalues: [5000.0, 400.0, 60.0],
        eigenvectors: [[0.58, 0.58, 0.57], [-0.7, 0.0, 0.71], [0.41, -0.82, 0.41]],
    };
    let settings = AugmentSettings {
        random_crop: true,
        flip: true,
        lighting_std: 0.1,
    };
    let draws = random_draws(77, s.n, s.stored, s.crop, &settings, &pca);
    assert!(draws.iter().any(|d| d.shift[0] != 0.0));
    // A non-trivial input scale, as a narrow variant uses.
    let got = run(&gpu, &s, &images, &mean, &draws, 1.0 / 64.0);
    let want = augment_forward(&s, &images, &mean, &draws, 1.0 / 64.0);
    check_close("augment.out", &got, &want, 1e-6, 1e-6).unwrap();
}

#[test]
fn ten_crop_views_match_reference_and_mirror() {
    let gpu = gpu();
    let (stored, crop) = (19, 13);
    let views = ten_crop_draws(stored, crop);
    let s = AugmentShape {
        n: 10,
        stored,
        crop,
    };
    let (one, mean) = inputs(&AugmentShape { n: 1, stored, crop }, 9);
    let images: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
    let got = run(&gpu, &s, &images, &mean, &views, 1.0);
    check_close(
        "augment.ten_crop",
        &got,
        &augment_forward(&s, &images, &mean, &views, 1.0),
        1e-4,
        1e-6,
    )
    .unwrap();
    // View 5 is view 0 mirrored: row y of channel c reversed.
    let plane = crop * crop;
    for y in 0..crop {
        for x in 0..crop {
            assert_eq!(
                got[y * crop + x],
                got[5 * 3 * plane + y * crop + (crop - 1 - x)]
            );
        }
    }
}
