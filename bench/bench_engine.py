"""Benchmark the engine's runtimes: dlib vs ONNX Runtime (issue 7, "fast engine").

    python bench/bench_engine.py [--faces DIR] [--repeats N] [--cnn-images N]

On the photos of ../shared/faces: per-face embedding time and faces/s for dlib and ONNX Runtime,
detection time per image for HOG, dlib's CNN (a few images only: it is slow) and the ONNX CNN,
and the ONNX embedder's achieved GFLOP/s against a measured single-thread float32 matmul peak.
All times are medians over repeats. Not a test.
"""

from __future__ import annotations

import os

# Single-threaded BLAS for the peak measurement (set before numpy loads OpenBLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import timed

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine, detectors, dlib_detectors, dlib_runtime, onnx_convert
from facewarden.engine.dlib_resnet import DlibEmbedder

EXTS = {".jpg", ".jpeg", ".png", ".webp"}
EMBED_MFLOP = 541.7  # per 150x150 face: convolutions + fc (2 FLOP per multiply-add)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Single-thread float32 matmul throughput (threadpoolctl limits BLAS when installed)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            t = timed(lambda: a @ b, repeats, warmup=1)
    except ImportError:
        t = timed(lambda: a @ b, repeats, warmup=1)
    return 2 * n**3 / t / 1e9


def onnx_flops_per_face(path: Path) -> float:
    """FLOPs of one face through the converted embedder (Conv and MatMul nodes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    inp = model.graph.input[0].type.tensor_type.shape.dim[0]
    inp.ClearField("dim_param")
    inp.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output})
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    flops = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            o, i, kh, kw = weights[node.input[1]]
            _, _, h, w = shapes[node.output[0]]
            flops += 2.0 * o * h * w * i * kh * kw
        elif node.op_type == "MatMul":
            k, m = weights[node.input[1]]
            flops += 2.0 * k * m
    return flops


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=ROOT / ".." / "shared" / "faces")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cnn-images", type=int, default=3, help="images for dlib's (slow) CNN detector")
    ap.add_argument("--cnn-side", type=int, default=640, help="longer side of the CNN benchmark images")
    args = ap.parse_args()

    import onnxruntime as ort

    from facewarden.engine import onnx_resnet, onnx_runtime
    from facewarden.engine.onnx_mmod import OnnxCnnDetector
    from facewarden.engine.onnx_resnet import OnnxResnetEmbedder

    files = sorted(p for p in args.faces.resolve().rglob("*") if p.suffix.lower() in EXTS)
    if not files:
        sys.exit(f"no images under {args.faces}")
    cache = Path(tempfile.mkdtemp(prefix="facewarden-bench-"))
    print(f"facewarden engine benchmark: {len(files)} images from {args.faces.resolve()}")
    print(
        f"CPU count {os.cpu_count()}, onnxruntime {ort.__version__}, providers {onnx_runtime.providers()}, "
        f"default intra-op threads {onnx_runtime.default_threads()}"
    )
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} (timings are noisy when other work shares the CPUs)"
    )

    t = time.perf_counter()
    resnet_path = onnx_convert.converted_path("resnet", cache)
    t_convert = time.perf_counter() - t
    t = time.perf_counter()
    onnx_convert.converted_path("mmod", cache)
    t_convert_mmod = time.perf_counter() - t
    t = time.perf_counter()
    onnx_convert.converted_path("resnet", cache)
    t_cached = time.perf_counter() - t
    print(
        f"conversion: resnet {t_convert * 1e3:.0f} ms, mmod {t_convert_mmod * 1e3:.0f} ms, "
        f"cache check {t_cached * 1e3:.0f} ms"
    )

    # ---- faces: HOG detection + chips --------------------------------------------------------
    engine = Engine(Settings(runtime="dlib", data_dir=cache / "data"))
    hog_times, chips, decoded = [], [], []
    for p in files:
        image = images.read(p)
        decoded.append(image)
        t = time.perf_counter()
        faces = engine.detect(image)
        hog_times.append(time.perf_counter() - t)
        if faces:
            chips.append(engine.chips(image, faces))
    allchips = np.concatenate(chips)
    n = len(allchips)
    print(f"{n} faces found by HOG in {len(files)} images")

    # ---- embedding ---------------------------------------------------------------------------
    dlib_emb = DlibEmbedder()
    sample = allchips[: min(n, 32)]
    t_dlib = timed(lambda: dlib_emb.embed(sample), max(1, args.repeats // 2), warmup=1) / len(sample)
    ref = dlib_emb.embed(allchips)
    results = []
    for threads in sorted({1, 2, onnx_runtime.default_threads()}):
        so = onnx_runtime.session_options(threads)
        sess = ort.InferenceSession(str(resnet_path), so, providers=onnx_runtime.providers())
        batch = allchips[: onnx_resnet.BATCH]
        t_b = timed(
            lambda sess=sess, batch=batch: sess.run(None, {"chips": batch}), args.repeats, warmup=1
        ) / len(batch)
        one = allchips[:1]
        t_1 = timed(lambda sess=sess, one=one: sess.run(None, {"chips": one}), args.repeats * 4, warmup=1)
        results.append((threads, t_b, t_1))
    ours = OnnxResnetEmbedder(cache_dir=cache).embed(allchips)
    maxdiff = float(np.abs(ours - ref).max())

    flops = onnx_flops_per_face(resnet_path)
    peak = matmul_peak_gflops()

    w = [34, 12, 10, 10]
    print()
    print(row(["embedding (150x150 chip)", "ms/face", "faces/s", "vs dlib"], w))
    print(row(["dlib (batch of 32)", f"{t_dlib * 1e3:.2f}", f"{1 / t_dlib:.1f}", "1.0x"], w))
    for threads, t_b, t_1 in results:
        print(
            row(
                [
                    f"onnx, {threads} thread(s), batch {onnx_resnet.BATCH}",
                    f"{t_b * 1e3:.2f}",
                    f"{1 / t_b:.1f}",
                    f"{t_dlib / t_b:.1f}x",
                ],
                w,
            )
        )
        print(
            row(
                [
                    f"onnx, {threads} thread(s), batch 1",
                    f"{t_1 * 1e3:.2f}",
                    f"{1 / t_1:.1f}",
                    f"{t_dlib / t_1:.1f}x",
                ],
                w,
            )
        )
    best_1t = results[0][1]
    print(f"max |onnx - dlib| over {n} faces: {maxdiff:.2e}")
    print(f"embedder FLOPs/face: {flops / 1e6:.1f} M (counted from the graph; nominal {EMBED_MFLOP} M)")
    print(
        f"achieved (1 thread, batched): {EMBED_MFLOP / 1e3 / best_1t:.1f} GFLOP/s; "
        f"single-thread float32 matmul peak: {peak:.1f} GFLOP/s ({EMBED_MFLOP / 1e3 / best_1t / peak:.0%} of peak)"
    )

    # ---- detection ---------------------------------------------------------------------------
    cnn = OnnxCnnDetector(cache_dir=cache)
    bench_imgs = []
    for image in decoded:
        if len(bench_imgs) >= args.cnn_images:
            break
        if max(image.shape[:2]) >= args.cnn_side:
            bench_imgs.append(detectors.resize(image, args.cnn_side / max(image.shape[:2]))[0])
    with dlib_runtime.hog_detectors.borrow() as hog:
        t_hog_few = [timed(lambda im=im: hog.run(im, 0, 0.0), args.repeats, warmup=1) for im in bench_imgs]
    t_dlib_cnn = [timed(lambda im=im: dlib_detectors.DlibCnn().detect(im), 1) for im in bench_imgs]
    t_onnx_cnn = [timed(lambda im=im: cnn.detect(im), args.repeats, warmup=1) for im in bench_imgs]
    box_diff, score_diff, nboxes = 0.0, 0.0, 0
    for im in bench_imgs:
        a = cnn.detect(im)
        b = sorted(dlib_detectors.DlibCnn().detect(im), key=lambda bs: -bs[1])
        if len(a) != len(b):
            print(f"  warning: {len(a)} ONNX boxes vs {len(b)} dlib boxes")
            continue
        for (ba, sa), (bb, sb) in zip(a, b):
            nboxes += 1
            box_diff = max(
                box_diff,
                abs(ba.left - bb.left),
                abs(ba.top - bb.top),
                abs(ba.right - bb.right),
                abs(ba.bottom - bb.bottom),
            )
            score_diff = max(score_diff, abs(sa - sb))
    shapes = ", ".join(f"{im.shape[1]}x{im.shape[0]}" for im in bench_imgs)
    print()
    print(
        row(
            [f"detection ({len(bench_imgs)} images: {shapes})", "ms/image", "vs dlib CNN", ""],
            [48, 10, 12, 0],
        )
    )
    med = statistics.median
    print(row(["HOG (dlib)", f"{med(t_hog_few) * 1e3:.0f}", "", ""], [48, 10, 12, 0]))
    print(row(["CNN, dlib", f"{med(t_dlib_cnn) * 1e3:.0f}", "1.0x", ""], [48, 10, 12, 0]))
    print(
        row(
            ["CNN, onnx", f"{med(t_onnx_cnn) * 1e3:.0f}", f"{med(t_dlib_cnn) / med(t_onnx_cnn):.1f}x", ""],
            [48, 10, 12, 0],
        )
    )
    print(
        f"CNN boxes: {nboxes} compared, max corner difference {box_diff:.0f} px, max score difference {score_diff:.1e}"
    )
    print(
        f"engine.detect (HOG at the engine's detection scale, + 5-point landmarks) over all {len(decoded)} "
        f"images: {med(hog_times) * 1e3:.0f} ms/image (median)"
    )


if __name__ == "__main__":
    main()
