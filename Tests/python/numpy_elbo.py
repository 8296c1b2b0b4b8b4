#!/usr/bin/env python3
"""Independent NumPy forward pass of a vae-dist checkpoint (used by PythonInteropTests).

usage: numpy_elbo.py CHECKPOINT TEST_IMAGES_IDX[.gz] COUNT

Reads the checkpoint with safetensors.numpy.load_file (tensors) and safetensors.safe_open
(metadata only), reads the IDX images itself (gzip + numpy), scales pixels to [0, 1] exactly as
vae-dist does for `binarize: none` (float32 pixel * float32(1/255)), and evaluates the first COUNT
images with z = mu (epsilon = 0), in float64:

    ELBO(x) = log p(x | z = mu) - KL(q(z|x) || N(0, I))

Prints one JSON object: elbo (mean), recon (mean of -log p), kl (mean), count, and the tensor
names with shapes and dtypes and the metadata the file carries.
"""
import gzip
import json
import struct
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def read_idx_images(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 0x00000803:
        raise SystemExit(f"{path}: not an IDX image file (magic {magic:#x})")
    pixels = np.frombuffer(data, dtype=np.uint8, count=n * rows * cols, offset=16)
    return pixels.reshape(n, rows * cols)


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    checkpoint, images_path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tensors = load_file(checkpoint)
    with safe_open(checkpoint, framework="np") as f:
        metadata = f.metadata() or {}
    model = json.loads(metadata["model"])

    pixels = read_idx_images(images_path)[:count]
    x32 = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
    x = x32.astype(np.float64)

    def linear(h, name):
        w = tensors[name + ".weight"].astype(np.float64)  # [out, in], like torch.nn.Linear
        b = tensors[name + ".bias"].astype(np.float64)
        return h @ w.T + b

    h = x
    for i in range(len(model["hidden"])):
        h = np.maximum(linear(h, f"encoder.{i}"), 0.0)
    mu = linear(h, "encoder.mu")
    logvar = linear(h, "encoder.logvar")
    h = mu  # epsilon = 0
    for i in range(len(model["decoder_hidden"])):
        h = np.maximum(linear(h, f"decoder.{i}"), 0.0)
    out = linear(h, "decoder.out")

    if model["likelihood"] == "bernoulli":
        logp = np.sum(x * out - np.maximum(out, 0.0) - np.log1p(np.exp(-np.abs(out))), axis=1)
    else:
        sigma = float(model["sigma"])
        n = x.shape[1]
        logp = -0.5 / sigma**2 * np.sum((out - x) ** 2, axis=1) - 0.5 * n * np.log(2 * np.pi * sigma**2)
    kl = -0.5 * np.sum(1.0 + logvar - mu**2 - np.exp(logvar), axis=1)
    elbo = logp - kl

    print(json.dumps({
        "elbo": float(elbo.mean()),
        "recon": float(-logp.mean()),
        "kl": float(kl.mean()),
        "count": int(x.shape[0]),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "dtypes": {k: str(v.dtype) for k, v in tensors.items()},
        "metadata": metadata,
    }))


if __name__ == "__main__":
    main()
