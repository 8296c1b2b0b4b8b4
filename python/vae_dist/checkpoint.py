"""Reading vae-dist checkpoints (safetensors files) into numpy.

A checkpoint holds the model's tensors, named like a PyTorch module (``encoder.0.weight``,
``encoder.mu.bias``, ``decoder.out.weight``, ...; weights ``[out, in]`` as in ``nn.Linear``),
optionally Adam's moments as ``adam.m.<name>`` / ``adam.v.<name>``, and string metadata:
``format`` (``vae-dist/1``), ``model`` (JSON: input_size, hidden, decoder_hidden, zdim,
likelihood and, for a Gaussian likelihood, sigma), ``config`` (the resolved YAML of the run),
and the training state (``step``, ``epoch``, ``seed``, ...).
"""

import json

import numpy as np

#: Prefixes of the optimiser tensors stored beside the model's.
OPTIMIZER_PREFIXES = ("adam.m.", "adam.v.")
#: The model kind this package reads; a checkpoint without a ``kind`` field is one.
SUPPORTED_KIND = "vae"


def read(path):
    """Reads a safetensors file. Returns ``(tensors, metadata)``: ``tensors`` maps every tensor
    name to a numpy array; ``metadata`` is the string metadata, with ``model``
    parsed from JSON into a dict when present. Weights-only files give empty metadata."""
    from safetensors import safe_open

    path = str(path)
    with safe_open(path, framework="numpy") as f:
        metadata = dict(f.metadata() or {})
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if "model" in metadata:
        try:
            metadata["model"] = json.loads(metadata["model"])
        except ValueError as e:
            raise ValueError(f"{path}: metadata field 'model' is not JSON: {e}") from None
    return tensors, metadata


def model_tensors(tensors):
    """The model's tensors only: drops Adam's ``adam.m.*`` and ``adam.v.*`` moments."""
    return {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIXES)}


def kind(metadata):
    """The checkpoint's model kind: the ``kind`` metadata field (top level, else inside the
    ``model`` JSON), ``"vae"`` when absent."""
    k = metadata.get("kind")
    if k is None and isinstance(metadata.get("model"), dict):
        k = metadata["model"].get("kind")
    return SUPPORTED_KIND if k is None else str(k)


def model_config(metadata, path="checkpoint"):
    """The ``model`` metadata as a dict with every field checked, for building a module.
    Raises a one-line ValueError naming ``path`` when the kind is not ``vae`` or a field is
    missing or malformed."""
    k = kind(metadata)
    if k != SUPPORTED_KIND:
        raise ValueError(f"{path}: checkpoint kind '{k}' is not supported: expected '{SUPPORTED_KIND}'")
    m = metadata.get("model")
    if not isinstance(m, dict):
        raise ValueError(f"{path}: no 'model' metadata: expected a checkpoint written by vae-dist train")

    def pos_int(v, field):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
            raise ValueError(f"{path}: metadata field 'model.{field}': expected a positive integer, got {v!r}")
        return int(v)

    def int_list(field):
        v = m.get(field)
        if not isinstance(v, list):
            raise ValueError(f"{path}: metadata field 'model.{field}': expected a list of positive integers")
        return [pos_int(x, field) for x in v]

    likelihood = m.get("likelihood")
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f"{path}: metadata field 'model.likelihood': expected 'bernoulli' or 'gaussian', got {likelihood!r}")
    out = {
        "input_size": pos_int(m.get("input_size"), "input_size"),
        "hidden": int_list("hidden"),
        "decoder_hidden": int_list("decoder_hidden"),
        "zdim": pos_int(m.get("zdim"), "zdim"),
        "likelihood": likelihood,
    }
    if likelihood == "gaussian":
        sigma = m.get("sigma")
        if sigma == "learned":
            out["sigma"] = sigma
        elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"{path}: metadata field 'model.sigma': expected a positive number or 'learned', got {sigma!r}")
        else:
            out["sigma"] = float(np.float32(sigma))  # vae-dist holds sigma as a 32-bit float
    return out


def binarization(metadata):
    """``data.binarize`` of the run that wrote the checkpoint (``none``, ``static`` or
    ``dynamic``), read from the ``config`` YAML; None when the metadata has no config. Pass it
    to ``vae_dist.data.heldout`` to get the held-out set vae-dist evaluates this model on."""
    section = None
    for line in str(metadata.get("config", "")).splitlines():
        if line and not line[0].isspace():
            section = line.split(":", 1)[0].strip()
        elif section == "data" and line.strip().startswith("binarize:"):
            return line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
    return None
