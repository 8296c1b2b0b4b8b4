#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into Fuzz/corpus/<target>/ as seed-*
(standard library, plus numpy for the .npy seeds: run it with the project's venv Python, e.g.
/work/venv/bin/python Fuzz/make-seeds.py, from anywhere; it rewrites the same bytes). A fuzzing run
(scripts/fuzz) starts from the corpus, and its minimised result replaces it, so these seeds
are the start of the committed corpus, not necessarily in it under their names."""

import gzip
import io
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- safetensors

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)], laid out in order, as SafeTensors.encode does."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, dtype, shape, data in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        assert n == len(data), name
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def model_tensors(layers, prefix="", start=0.0):
    """[(name, out, in)] → weight [out, in] and bias [out] tensors of distinct small floats."""
    ts, v = [], start
    for name, o, i in layers:
        w = [v + 0.01 * k for k in range(o * i)]
        b = [-v - 0.01 * k for k in range(o)]
        v += 0.25
        ts.append((prefix + name + ".weight", "F32", [o, i], f32(w)))
        ts.append((prefix + name + ".bias", "F32", [o], f32(b)))
    return ts


def checkpoint(model_json, layers, config_yaml, moments=True, legacy_crc=False, **state):
    ts = model_tensors(layers)
    if moments:
        ts += model_tensors(layers, "adam.m.", 0.001) + model_tensors(layers, "adam.v.", 0.0001)
    if legacy_crc:
        crc = 0
        for t in ts:
            crc = zlib.crc32(t[3], crc)
        crcs = str(crc)
    else:
        crcs = "{" + ",".join('"%s":%d' % (t[0], zlib.crc32(t[3])) for t in ts) + "}"
    meta = {"format": "vae-dist/1", "model": model_json, "config": config_yaml, "step": "40", "epoch": "2",
            "seed": "3", "world_size": "2", "global_batch": "50", "adam_step": "40",
            "data_checksum": "123456789", "tensor_crc32": crcs, "window_recon": "12.5", "window_kl": "3.25",
            "window_count": "4"}
    meta.update({k: str(v) for k, v in state.items()})
    return safetensors(ts, meta)


VAE_LAYERS = [("encoder.0", 2, 4), ("encoder.mu", 1, 2), ("encoder.logvar", 1, 2), ("decoder.0", 2, 1),
              ("decoder.out", 4, 2)]
VAE_JSON = '{"kind":"vae","input_size":4,"hidden":[2],"decoder_hidden":[2],"zdim":1,"likelihood":"bernoulli"}'
VAE_YAML = ("name: tiny\nmodel:\n  kind: vae\n  input_size: 4\n  hidden: [2]\n  decoder_hidden: [2]\n  zdim: 1\n"
            "  likelihood: bernoulli\ndata:\n  dataset: synthetic\n  binarize: dynamic\ntrain:\n  batch: 50\n"
            "  steps: 120\n  lr: 0.001\n  seed: 3\n")
CVAE_LAYERS = [("encoder.0", 2, 2), ("encoder.mu", 1, 2), ("encoder.logvar", 1, 2), ("decoder.0", 2, 1),
               ("decoder.out", 2, 2), ("cond.0", 2, 2)]
CVAE_JSON = ('{"kind":"cvae","input_size":4,"condition_size":2,"condition_hidden":[2],"condition_into_encoder":0,'
             '"hidden":[2],"decoder_hidden":[2],"zdim":1,"likelihood":"bernoulli"}')
REG_LAYERS = [("cond.0", 2, 2), ("decoder.0", 2, 2), ("decoder.out", 2, 2)]
REG_JSON = ('{"kind":"regressor","input_size":4,"condition_size":2,"condition_hidden":[2],"decoder_hidden":[2],'
            '"likelihood":"gaussian","sigma":0.5}')

st = "fuzz-safetensors"
out(st, "checkpoint-vae", checkpoint(VAE_JSON, VAE_LAYERS, VAE_YAML))
out(st, "checkpoint-vae-no-moments", checkpoint(VAE_JSON, VAE_LAYERS, VAE_YAML, moments=False))
out(st, "checkpoint-vae-legacy-crc", checkpoint(VAE_JSON, VAE_LAYERS, VAE_YAML, moments=False, legacy_crc=True))
out(st, "checkpoint-cvae", checkpoint(CVAE_JSON, CVAE_LAYERS, "", moments=False, window_recon="nan"))
out(st, "checkpoint-regressor", checkpoint(REG_JSON, REG_LAYERS, "", moments=False, window_kl="inf"))
out(st, "weights-export", safetensors(model_tensors(VAE_LAYERS), {"format": "vae-dist/weights", "model": VAE_JSON}))
out(st, "empty", safetensors([]))
out(st, "dtypes", safetensors([(dt, dt, [2], bytes(range(2 * n))) for dt, n in SIZES.items()]))
out(st, "shapes", safetensors([("scalar", "F64", [], f32([1.5, -2.0])), ("zero", "F32", [0, 3], b""),
                                ("also-zero", "I64", [3, 0], b""), ("matrix", "U16", [2, 3], bytes(range(12))),
                                ("cube", "I8", [1, 2, 2], b"\x01\x02\x03\x04")]))
out(st, "metadata-escapes", safetensors([("t\u00e9\"\\n", "U8", [3], b"abc")],
                                        {"quote\"": "back\\slash", "ctl": "\x01\t\n", "utf8": "\u00e9\u4e2d\U0001F600"}))
# Written by another writer: pretty JSON, tensors out of offset order, __metadata__ last, null metadata.
other = {"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
         "a": {"data_offsets": [0, 4], "shape": [1], "dtype": "F32"}}
h = json.dumps(other, indent=2).encode()
out(st, "reordered-pretty", struct.pack("<Q", len(h)) + h + f32([1.0, 2.0]))
h = b'{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"__metadata__":null}'
out(st, "metadata-null-last", struct.pack("<Q", len(h)) + h + b"\x07\x08")
h = b'{"\\u0061":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
out(st, "escaped-key", struct.pack("<Q", len(h)) + h + b"\x2a")

# ---------------------------------------------------------------- IDX and gzip


def idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def gz(data, level=6, name=None, mtime=0):
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name or "", mode="wb", compresslevel=level, fileobj=buf, mtime=mtime) as f:
        f.write(data)
    return buf.getvalue()


def gz_all_header_fields(data):
    """A member with FTEXT, FHCRC, FEXTRA, FNAME and FCOMMENT set (zlib must skip them all)."""
    flags = 0x01 | 0x02 | 0x04 | 0x08 | 0x10
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0" + b"\x00\x03"
    head += struct.pack("<H", 4) + b"AB\x00\x00" + b"name.idx\x00" + b"a comment\x00"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


images = idx(0x803, [3, 2, 3], bytes(range(18)))
labels = idx(0x801, [3], b"\x07\x02\x01")
digit = idx(0x803, [1, 28, 28], bytes((x * y) % 256 if 6 < x < 22 and 6 < y < 22 else 0
                                      for y in range(28) for x in range(28)))
ix = "fuzz-idx"
out(ix, "images-raw", images)
out(ix, "labels-raw", labels)
out(ix, "digit-28x28-raw", digit)
out(ix, "images-gz", gz(images))
out(ix, "labels-gz", gz(labels, name="t10k-labels-idx1-ubyte"))
out(ix, "digit-28x28-gz9", gz(digit, level=9))
out(ix, "images-gz-stored", gz(images, level=0))
out(ix, "labels-gz-multimember", gz(labels[:5]) + gz(labels[5:]))
out(ix, "images-gz-empty-member-first", gz(b"") + gz(images))
out(ix, "labels-gz-header-fields", gz_all_header_fields(labels))
out(ix, "gz-empty", gz(b""))
out(ix, "gz-zeros-4k", gz(bytes(4096), level=9))

# ---------------------------------------------------------------- configs

cf = "fuzz-config"
for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
    if name.endswith(".yaml"):
        with open(os.path.join(ROOT, "configs", name), "rb") as f:
            out(cf, name, f.read())
out(cf, "empty-mapping.yaml", "{}\n")
out(cf, "flow-style.yaml", "{name: flow, model: {hidden: [8, 4], zdim: 2}, train: {steps: 5, lr: 1e-3}}\n")
out(cf, "gaussian.yaml", "model:\n  likelihood: gaussian\n  sigma: 0.25\n  decoder_hidden: [7]\n  hidden: [5, 6]\n"
    "train:\n  beta1: 0.5\n  beta2: 0.99\n  adam_eps: 1.0e-6\n  weight_decay: 0.1\n  weight_decay_mode: decoupled\n"
    "  weight_decay_biases: true\n  checkpoint_minutes: 2.5\n  eval_samples: 3\n  check_every: 0\n")
out(cf, "run-directory-config.yaml", "name: smoke\nmodel:\n  kind: vae\n  input_size: 784\n  hidden: [64]\n"
    "  decoder_hidden: [64]\n  zdim: 4\n  likelihood: bernoulli\ndata:\n  dataset: synthetic\n  binarize: dynamic\n"
    "  train_limit: 2000\ntrain:\n  batch: 50\n  steps: 120\n  lr: 0.001\n  beta1: 0.9\n  beta2: 0.999\n"
    "  adam_eps: 1e-08\n  weight_decay: 0.0\n  weight_decay_mode: l2\n  weight_decay_biases: false\n  seed: 3\n"
    "  checkpoint_every: 40\n  eval_every: 60\n  keep_checkpoints: 2\n  log_every: 10\n  eval_samples: 1\n"
    "  check_every: 1000\n# environment (informational)\nenvironment:\n  blas_kernel: Haswell\n")
out(cf, "nulls-anchors-tags.yaml", "name: 'quoted name'\nmodel:\n  hidden: &h [3, 3]\n  decoder_hidden: *h\n"
    "  zdim: !!int 2\ndata:\n  train_limit: ~\ntrain:\n  epochs: null\n  steps: 7\n  seed: 0x10\n")
out(cf, "regressor-small.yaml", "model:\n  kind: regressor\n  input_size: 16\n  condition_hidden: [4]\n"
    "  decoder_hidden: [4]\ndata:\n  condition: middle-column\n  condition_binarize: static\n")
out(cf, "documents.yaml", "# two documents\n---\nname: first\n...\n")

# ---------------------------------------------------------------- .npy

try:
    import numpy as np
except ImportError:
    raise SystemExit("make-seeds.py: the .npy seeds need numpy; run it with the venv's Python "
                     "(python -m venv … && pip install numpy, or $VAE_DIST_PYTHON)")


def npy(x, version=None, allow_pickle=False):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, x, allow_pickle=allow_pickle)
    else:
        np.lib.format.write_array(buf, x, version=version, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(text, version=(1, 0), data=b""):
    """A hand-made header: `text` padded as NumPy pads it (for spellings np.save never writes)."""
    size = 2 if version == (1, 0) else 4
    used = 8 + size + len(text) + 1
    body = text.encode("latin1") + b" " * (64 - used % 64) + b"\n"
    return (b"\x93NUMPY" + bytes(version) + len(body).to_bytes(size, "little") + body + data)


nf = "fuzz-npy"
small = np.arange(6, dtype=np.float32).reshape(2, 3) / np.float32(7)
out(nf, "u8-1d", npy(np.arange(5, dtype=np.uint8)))
out(nf, "u8-2d", npy((np.arange(12) * 7 % 256).astype(np.uint8).reshape(3, 4)))
out(nf, "u8-nhw", npy(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)))
out(nf, "f32-2d", npy(small))
out(nf, "f32-nhwc", npy(np.arange(36, dtype=np.float32).reshape(1, 3, 4, 3)))
out(nf, "f32-v2", npy(small, version=(2, 0)))
out(nf, "f32-v3", npy(small, version=(3, 0)))
out(nf, "f64", npy(small.astype(np.float64)))
out(nf, "i64", npy(np.arange(3, dtype=np.int64)))
out(nf, "be-f4", npy(small.astype(">f4")))
out(nf, "fortran", npy(np.asfortranarray(small)))
out(nf, "structured", npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "u1")])))
out(nf, "object", npy(np.array([1, "a"], dtype=object), allow_pickle=True))
out(nf, "zero-rows", npy(np.zeros((0, 3), dtype=np.float32)))
out(nf, "scalar", npy(np.float32(1.5)))
out(nf, "truncated", npy(small)[:-3])
out(nf, "trailing", npy(small) + b"\0")
out(nf, "py2-long", npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 2L), }", data=b"\1\2\3\4"))
out(nf, "double-quotes", npy_header('{"shape": (1, 4), "fortran_order": False, "descr": "<f4"}', data=bytes(16)))
