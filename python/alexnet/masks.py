"""alexnet's recomputable random streams (src/shape.rs), in numpy: the dropout masks the Rust
side draws, so a PyTorch run can reproduce a training step of `alexnet train` exactly.

An element i of a stream is uniform01(seed, i) = (hash(hash(seed) ^ i) >> 8) / 2^24, with
lowbias32 as the hash; a stream's seed mixes the run seed, the step and a stream id (6 and 7
are the dropout of fc6 and fc7).
"""

import numpy as np

M32 = 0xFFFFFFFF
#: Stream ids of the two dropout layers.
DROPOUT_STREAMS = {"fc6": 6, "fc7": 7}


def hash_u32(x):
    """lowbias32 (C. Wellons) on uint32 values (numpy arrays or ints)."""
    x = np.asarray(x, dtype=np.uint64) & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def uniform01(seed: int, n: int) -> np.ndarray:
    """uniform01(seed, i) for i in 0..n, as float32 (24 bits, exact)."""
    idx = np.arange(n, dtype=np.uint64)
    h = hash_u32(hash_u32(np.uint64(seed)) ^ idx)
    return ((h >> 8).astype(np.float64) * (1.0 / 16777216.0)).astype(np.float32)


def stream_seed(run_seed: int, step: int, stream: int) -> int:
    """The seed of stream `stream` at training step `step` of a run seeded `run_seed`."""
    h = lambda v: int(hash_u32(np.uint64(v & M32)))
    lo = h((run_seed & M32) ^ h(run_seed >> 32))
    s = h(lo ^ h(step & M32) ^ h(((step >> 32) & M32) ^ 0x9E3779B9))
    return h(s ^ ((stream * 0x85EBCA6B) & M32))


def dropout_keep(p: float, run_seed: int, step: int, layer: str, shape) -> np.ndarray:
    """The keep mask (bool, `shape`) of `layer`'s dropout at `step`: element i of the flat
    [N, F] activation is kept iff uniform01(seed, i) >= p."""
    n = int(np.prod(shape))
    return (uniform01(stream_seed(run_seed, step, DROPOUT_STREAMS[layer]), n) >= p).reshape(shape)
