"""Baseline for `storymaker bench segment`: the same segmentation model in onnxruntime on the CPU with --threads
intra-op threads (default 1), network only, medians over --runs after one warm-up.

usage: /root/.cache/parity-venv/bin/python tools/parity/bench_segment_ort.py MODEL.onnx [--runs 3] [--threads 1]
"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1024 for d in inp.shape]
    shape[0] = 1
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = [sess.get_outputs()[0].name]
    times = []
    for i in range(a.runs + 1):
        t = time.perf_counter()
        sess.run(out, {inp.name: x})
        if i > 0:
            times.append((time.perf_counter() - t) * 1e3)
    print(f"onnxruntime {ort.__version__} {a.model} input {shape}, {a.threads} thread(s), {a.runs} runs: network median "
          f"{sorted(times)[len(times) // 2]:.1f} ms")


if __name__ == "__main__":
    main()
