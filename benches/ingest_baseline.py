"""Pillow + pyarrow doing what `alexnet ingest` does, on the same files, for comparison.

    cargo bench --bench ingest            # makes target/.../bench-ingest/raw
    python3 benches/ingest_baseline.py RAW [--jobs N]

Per image: decode, EXIF transpose, convert("RGB"), resize short side to 256 with LANCZOS
(long side floored, as torchvision), centre crop, raw HWC bytes, pixel sums; rows go to a
zstd Parquet file in row groups of ~32 MiB. Decoding runs in a multiprocessing pool.
"""
import argparse, os, pathlib, time
import numpy as np
import pyarrow as pa, pyarrow.parquet as pq
from multiprocessing import Pool
from PIL import Image, ImageOps

S = 256

def work(path):
    t0 = time.perf_counter()
    im = Image.open(path)
    im = ImageOps.exif_transpose(im).convert("RGB")
    t1 = time.perf_counter()
    w, h = im.size
    nw, nh = (S, S * h // w) if w <= h else (S * w // h, S)
    im = im.resize((nw, nh), Image.LANCZOS)
    l, t = (nw - S) // 2, (nh - S) // 2
    px = np.asarray(im.crop((l, t, l + S, t + S)), dtype=np.uint8)
    t2 = time.perf_counter()
    flat = px.reshape(-1, 3).astype(np.uint64)
    sums = flat.sum(0)
    outer = flat.T @ flat
    return px.tobytes(), w, h, sums, outer, t1 - t0, t2 - t1

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/ingest_baseline.parquet")
    a = ap.parse_args()
    files = sorted(str(p) for p in pathlib.Path(a.raw).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    start = time.perf_counter()
    schema = pa.schema([("image", pa.binary()), ("label", pa.int32()), ("source", pa.string()),
                        ("orig_width", pa.int32()), ("orig_height", pa.int32())])
    writer = pq.ParquetWriter(a.out, schema, compression="zstd")
    per_group = (32 << 20) // (S * S * 3)
    rows, mean_img, dec, rs, wr = [], np.zeros(S * S * 3, np.uint64), 0.0, 0.0, 0.0
    with Pool(a.jobs) as pool:
        for i, (img, w, h, sums, outer, td, tr) in enumerate(pool.imap(work, files, chunksize=8)):
            dec += td; rs += tr
            t = time.perf_counter()
            mean_img += np.frombuffer(img, np.uint8)
            rows.append((img, 0, files[i], w, h))
            if len(rows) == per_group or i == len(files) - 1:
                cols = list(zip(*rows))
                writer.write_table(pa.table([pa.array(c) for c in cols], schema=schema))
                rows = []
            wr += time.perf_counter() - t
    writer.close()
    secs = time.perf_counter() - start
    n = len(files)
    print(f"Pillow+pyarrow: {n} images, {secs:.2f} s, {n / secs:.1f} images/s, {n / secs / a.jobs:.1f} images/s per core "
          f"(worker time decode {dec:.1f} s, resize {rs:.1f} s; main-process write {wr:.1f} s)")

if __name__ == "__main__":
    main()
