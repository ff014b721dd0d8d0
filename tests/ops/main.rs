//! One suite of op cases over every engine, as candle's `test_device!` runs one test body on
//! every device: each case is written once over `alexnet::backend::Backend` (`cases.rs`,
//! `network.rs`) and [`on_engines!`] makes one `#[test]` of it per engine, named
//! `<case>::<engine>` (`cargo test --test ops conv::cpu_x2`, `… --test ops gpu_`). The plain
//! loops of `alexnet::reference` are the oracle.
//!
//! The engines: the reference's own `Backend` (op cases only: it checks the trait's wiring
//! onto the loops), the CPU engine on 1, 2 and 3 workers (every chunking path), and the GPU
//! engine on the first real GPU, else lavapipe, once per convolution kernel and tile policy
//! (so lavapipe also runs what an H200 runs). With no adapter at all the GPU tests fail and
//! say to install `mesa-vulkan-drivers`.
//!
//! What the trait does not expose stays in engine-only files: the launchers' accumulate and
//! split-K forms, tile selection and binding-limit splits (`tests/kernels.rs`), the
//! augmentation kernels (`tests/kernel_augment.rs`, `tests/cpu_vs_reference.rs`), the GPU
//! network's bind-group cache (`tests/network_gpu_vs_reference.rs`).
mod cases;
mod engines;
mod network;

use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::gemm::TilePolicy;

/// For each case of module `$m`, a module named for the case holding one `#[test]` per
/// engine. `ops` lists run on every engine; `network` lists skip the reference (its walk is
/// their oracle) and the GPU's tiled kernels with small tiles (the op cases cover them, and a
/// network on lavapipe takes a minute); `fixture` lists run where `network` lists do and on the
/// reference.
macro_rules! on_engines {
    (@test $name:ident, $m:ident :: $case:ident, $make:expr) => {
        #[test]
        fn $name() {
            $m::$case(&mut $make);
        }
    };
    (@engines $m:ident :: $case:ident) => {
        on_engines!(@test cpu_x1, $m::$case, engines::cpu(1));
        on_engines!(@test cpu_x2, $m::$case, engines::cpu(2));
        on_engines!(@test cpu_x3, $m::$case, engines::cpu(3));
        on_engines!(@test gpu_direct, $m::$case, engines::gpu(ConvKernels::Direct, TilePolicy::Cpu));
        on_engines!(@test gpu_tiled, $m::$case, engines::gpu(ConvKernels::Tiled, TilePolicy::Gpu));
    };
    (ops $m:ident : $($case:ident),* $(,)?) => {
        $(
            mod $case {
                use super::*;
                on_engines!(@test reference, $m::$case, engines::reference());
                on_engines!(@engines $m::$case);
                on_engines!(
                    @test gpu_tiled_small_tiles,
                    $m::$case,
                    engines::gpu(ConvKernels::Tiled, TilePolicy::Cpu)
                );
            }
        )*
    };
    (network $m:ident : $($case:ident),* $(,)?) => {
        $(
            mod $case {
                use super::*;
                on_engines!(@engines $m::$case);
            }
        )*
    };
    (fixture $m:ident : $($case:ident),* $(,)?) => {
        $(
            mod $case {
                use super::*;
                on_engines!(@test reference, $m::$case, engines::reference());
                on_engines!(@engines $m::$case);
            }
        )*
    };
}

on_engines!(ops cases: conv, linear, lrn, maxpool, dropout, softmax_xent, sgd, copy);

on_engines!(network network:
    two_columns_relu_lrn_eval_batch_3,
    one_column_tanh_dropout_batch_2,
    no_lrn_relu_dropout_batch_1,
    batch_norm_relu_dropout_batch_3,
    widths_div_8_input_131_batch_3,
    non_overlapping_pooling_batch_2,
    torchvision_padded_conv1_batch_2,
    errors_name_what_is_wrong,
);
on_engines!(fixture network: pytorch_fixture);
