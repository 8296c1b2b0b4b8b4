#!/usr/bin/env python3
"""Independent NumPy forward pass of a vae-dist checkpoint's encoder or decoder, compared with
the files `vae-dist encode` and `vae-dist decode` wrote (used by EncodeDecodeTests).

usage: numpy_forward.py encode CHECKPOINT X.npy MU.npy [LOGVAR.npy]
       numpy_forward.py decode CHECKPOINT Z.npy OUT.npy

Reads the checkpoint with safetensors (the tensors; the metadata only for the layer counts and
the likelihood) and every array with np.load, and runs the network in float64: ReLU after each
hidden layer, none after the heads, weights [out, in] as in torch.nn.Linear. uint8 input is
scaled as vae-dist reads it (float32(value) * float32(1/255)). The decoder's mean is
1 / (1 + exp(-logit)) for a Bernoulli likelihood and the output itself for a Gaussian.

Prints one JSON object with, for each output file, its shape, dtype, min, max and "rel": the
largest |file - numpy| divided by the largest |numpy|.
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def linear(tensors, h, name):
    w = tensors[name + ".weight"].astype(np.float64)
    b = tensors[name + ".bias"].astype(np.float64)
    return h @ w.T + b


def encoder(tensors, model, x):
    h = x
    for i in range(len(model["hidden"])):
        h = np.maximum(linear(tensors, h, f"encoder.{i}"), 0.0)
    return linear(tensors, h, "encoder.mu"), linear(tensors, h, "encoder.logvar")


def decoder_mean(tensors, model, z):
    h = z
    for i in range(len(model["decoder_hidden"])):
        h = np.maximum(linear(tensors, h, f"decoder.{i}"), 0.0)
    out = linear(tensors, h, "decoder.out")
    return 1.0 / (1.0 + np.exp(-out)) if model["likelihood"] == "bernoulli" else out


def inputs(path):
    a = np.load(path)
    rows = a.reshape(a.shape[0], -1)
    if rows.dtype == np.uint8:
        rows = rows.astype(np.float32) * np.float32(1.0 / 255.0)
    return rows.astype(np.float64)


def compare(path, reference):
    got = np.load(path)
    flat = got.reshape(got.shape[0], -1).astype(np.float64)
    scale = max(float(np.max(np.abs(reference))), 1e-30)
    return {"shape": list(got.shape), "dtype": str(got.dtype), "min": float(got.min()), "max": float(got.max()),
            "rel": float(np.max(np.abs(flat - reference))) / scale}


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in ("encode", "decode"):
        raise SystemExit(__doc__)
    mode, checkpoint, source = sys.argv[1:4]
    tensors = load_file(checkpoint)
    with safe_open(checkpoint, framework="np") as f:
        model = json.loads((f.metadata() or {})["model"])
    result = {}
    if mode == "encode":
        mu, logvar = encoder(tensors, model, inputs(source))
        result["mu"] = compare(sys.argv[4], mu)
        if len(sys.argv) == 6:
            result["logvar"] = compare(sys.argv[5], logvar)
    else:
        result["mean"] = compare(sys.argv[4], decoder_mean(tensors, model, inputs(source)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
