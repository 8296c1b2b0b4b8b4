"""The GEMM-only ceiling of a vae-dist training step: the step's ``cblas_sgemm`` calls alone, in
its shapes, through the OpenBLAS the binary links, timed like ``vae-dist bench`` (warm-up, then
the median of timed blocks). Samples/s at that rate is what a step made only of GEMMs would
reach: nothing (ReLU, loss, Adam, batching) can make vae-dist's step faster than it.

The calls are ``GEMM.forward``, ``GEMM.weightGrad`` and ``GEMM.inputGrad`` of Sources/VAE/BLAS.swift
(row-major): every layer's forward and weight gradient, and the input gradient of every layer
but the first encoder layer (nothing reads the gradient of the data).

Usage: python -m vae_dist.gemm_ceiling [--bin BIN] [--threads N] [--batch B] [--hidden 500 500]
                                      [--zdim Z] [--input-size D] [--warmup N] [--steps N] [--repeats N]
Prints one JSON line. Standard library only (ctypes and array).
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from array import array

#: configs/mnist.yaml's network and batch (python/tests/test_torch_bench.py checks them against a
#: checkpoint that configs/mnist.yaml trains).
MNIST_MODEL = {"input_size": 784, "hidden": [500, 500], "decoder_hidden": [500, 500], "zdim": 20, "batch": 100}

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


class CeilingError(Exception):
    """The ceiling cannot be measured; the message is one line."""


def layers(input_size, hidden, decoder_hidden, zdim):
    """``(name, in, out)`` of every linear layer of a vae-kind model, in vae-dist's arena order."""
    out, prev = [], input_size
    for i, h in enumerate(hidden):
        out.append((f"encoder.{i}", prev, h))
        prev = h
    out += [("encoder.mu", prev, zdim), ("encoder.logvar", prev, zdim)]
    prev = zdim
    for i, h in enumerate(decoder_hidden):
        out.append((f"decoder.{i}", prev, h))
        prev = h
    return out + [("decoder.out", prev, input_size)]


def step_gemms(input_size, hidden, decoder_hidden, zdim, batch):
    """The GEMMs of one training step as ``(layer, kind, transA, transB, M, N, K)`` (row-major
    ``cblas_sgemm`` arguments; kind: forward, weight_grad, input_grad)."""
    calls = []
    for name, i, o in layers(input_size, hidden, decoder_hidden, zdim):
        calls.append((name, "forward", NO_TRANS, TRANS, batch, o, i))
        calls.append((name, "weight_grad", TRANS, NO_TRANS, o, i, batch))
        if name != "encoder.0":
            calls.append((name, "input_grad", NO_TRANS, NO_TRANS, batch, i, o))
    return calls


def flops(calls):
    """Floating-point operations of ``calls`` (2·M·N·K each)."""
    return sum(2 * m * n * k for *_, m, n, k in calls)


def openblas_path(binary=None):
    """The OpenBLAS library ``binary`` links (from ``ldd``), else the system's libopenblas."""
    if binary:
        try:
            out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        except OSError:
            out = ""
        for line in out.splitlines():
            name, _, rest = line.strip().partition(" => ")
            if ("openblas" in name or name.startswith("libblas")) and rest.startswith("/"):
                return rest.split(" (")[0]
    path = ctypes.util.find_library("openblas")
    if not path:
        raise CeilingError("no OpenBLAS library found (install libopenblas-dev, or give --bin a vae-dist linked to it)")
    return path


def load_openblas(path, threads):
    lib = ctypes.CDLL(path)
    lib.cblas_sgemm.restype = None
    lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                                     ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                                     ctypes.c_void_p, ctypes.c_int]
    if hasattr(lib, "openblas_set_num_threads"):
        lib.openblas_set_num_threads(threads)
    return lib


def kernel_name(lib):
    if not hasattr(lib, "openblas_get_corename"):
        return "unknown"
    lib.openblas_get_corename.restype = ctypes.c_char_p
    return lib.openblas_get_corename().decode()


def prepared_calls(calls):
    """Argument tuples for ``cblas_sgemm``, each over its own buffers (kept alive in the tuple's
    last element), filled with 0.25 (no subnormals)."""
    def buf(n):
        a = array("f", [0.25]) * n
        return a, a.buffer_info()[0]

    out = []
    for _, _, ta, tb, m, n, k in calls:
        (a, pa), (b, pb), (c, pc) = buf(m * k), buf(k * n), buf(m * n)
        lda = k if ta == NO_TRANS else m
        ldb = n if tb == NO_TRANS else k
        out.append(((ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, 0.0, pc, n), (a, b, c)))
    return out


def time_blocks(lib, prepared, warmup, steps, repeats):
    """Steps/s of each timed block (a step: every call once)."""
    sgemm = lib.cblas_sgemm
    for _ in range(warmup):
        for args, _ in prepared:
            sgemm(*args)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            for args, _ in prepared:
                sgemm(*args)
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def measure(a):
    """The JSON object ``main`` prints."""
    calls = step_gemms(a.input_size, a.hidden, a.decoder_hidden or list(reversed(a.hidden)), a.zdim, a.batch)
    path = openblas_path(a.bin)
    lib = load_openblas(path, a.threads)
    rates = time_blocks(lib, prepared_calls(calls), a.warmup, a.steps, a.repeats)
    rate = statistics.median(rates)
    return {"configuration": "gemm-ceiling", "library": path, "kernel": kernel_name(lib), "threads": a.threads,
            "batch": a.batch, "gemms_per_step": len(calls), "gflop_per_step": flops(calls) / 1e9,
            "steps_per_sec": rate, "samples_per_sec": rate * a.batch, "gemm_gflops": rate * flops(calls) / 1e9,
            "all_steps_per_sec": rates}


def positive(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m vae_dist.gemm_ceiling",
        description="Time one training step's GEMMs alone (the shapes vae-dist calls, through the OpenBLAS "
                    "the binary links) and print the samples/s a step made only of them would reach, as one "
                    "JSON line. The defaults are configs/mnist.yaml's network and batch. "
                    "OPENBLAS_CORETYPE chooses the kernel, as for vae-dist.")
    p.add_argument("--bin", help="vae-dist binary whose OpenBLAS to use (default: the system's libopenblas)")
    p.add_argument("--threads", type=positive, default=1, help="OpenBLAS threads (default 1)")
    p.add_argument("--batch", type=positive, default=MNIST_MODEL["batch"])
    p.add_argument("--input-size", type=positive, default=MNIST_MODEL["input_size"])
    p.add_argument("--hidden", type=positive, nargs="+", default=MNIST_MODEL["hidden"], help="encoder widths")
    p.add_argument("--decoder-hidden", type=positive, nargs="+", help="decoder widths (default: --hidden reversed)")
    p.add_argument("--zdim", type=positive, default=MNIST_MODEL["zdim"])
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--steps", type=positive, default=50, help="steps per timed block (default 50)")
    p.add_argument("--repeats", type=positive, default=5, help="timed blocks; the median is reported (default 5)")
    a = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    try:
        print(json.dumps(measure(a)))
    except (CeilingError, OSError, AttributeError) as e:
        print(f"gemm_ceiling: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
