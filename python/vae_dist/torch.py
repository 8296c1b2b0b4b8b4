"""vae-dist checkpoints as PyTorch modules, and PyTorch weights as vae-dist initialisations.

``load(path)`` builds a ``VAE`` module from a checkpoint's ``model`` metadata and loads its
tensors strictly; ``save_init(module, path)`` writes a weights-only safetensors file that
``vae-dist train --init FILE`` reads. Both model shapes load: the dense towers of ``hidden`` and
``decoder_hidden``, and layer lists (``encoder`` and ``decoder``: dense, conv, deconv, flatten
and reshape entries, parsed by ``parse_layer``).
"""

import math
import re
from typing import NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from . import checkpoint as _checkpoint

#: A layer's nonlinearity by its config word, with PyTorch's (and vae-dist's) constants.
ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "elu": lambda x: F.elu(x, alpha=1.0),
    "tanh": torch.tanh,
    "softplus": lambda x: F.softplus(x, beta=1.0, threshold=20.0),
    "none": lambda x: x,
}

_KINDS = ("dense", "conv", "deconv", "flatten", "reshape")
_SETTING = re.compile(r"(op|k|s|p)([0-9]+)")
_COUNT = re.compile(r"[0-9]+")


class Layer(NamedTuple):
    """One entry of a layer list (``model.encoder`` / ``model.decoder``), parsed. ``size``: the
    dense layer's features or the conv/deconv layer's output channels; ``shape``: reshape's
    ``(C, H, W)``; ``activation``: the word given, None for the place's default."""

    kind: str
    size: int = 0
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    shape: Tuple[int, ...] = ()
    activation: Optional[str] = None

    @property
    def has_parameters(self):
        """Whether the entry has a weight and a bias (and so an activation and a name)."""
        return self.kind in ("dense", "conv", "deconv")

    def __str__(self):
        """The canonical text, as vae-dist writes it into checkpoints (``conv 32 k4 s2 p1``)."""
        act = "" if self.activation is None else " " + self.activation
        if self.kind == "dense":
            return f"dense {self.size}{act}"
        if self.kind == "conv":
            return f"conv {self.size} k{self.kernel} s{self.stride} p{self.padding}{act}"
        if self.kind == "deconv":
            return f"deconv {self.size} k{self.kernel} s{self.stride} p{self.padding} op{self.output_padding}{act}"
        if self.kind == "flatten":
            return "flatten"
        return "reshape " + "x".join(str(d) for d in self.shape)


def parse_layer(text):
    """One layer-list entry as a ``Layer``: ``dense N``, ``conv C kK [sS] [pP]``,
    ``deconv C kK [sS] [pP] [opO]`` (settings in any order; s defaults to 1, p and op to 0),
    ``flatten``, ``reshape CxHxW``; dense, conv and deconv take an optional activation word last
    (relu, leaky_relu, elu, tanh, softplus, none). Raises a one-line ValueError naming the entry."""
    if not isinstance(text, str):
        raise ValueError(f"layer {text!r}: expected a string such as 'dense 500' or 'conv 32 k4 s2 p1'")
    words = text.split()
    if not words:
        raise ValueError(f"layer {text!r}: empty; expected e.g. 'dense 500' or 'conv 32 k4 s2 p1'")
    kind, activation = words[0], None
    if len(words) > 1 and words[-1] in ACTIVATIONS:
        activation = words.pop()
    args = words[1:]
    if kind == "dense":
        if len(args) != 1 or not _COUNT.fullmatch(args[0]) or int(args[0]) < 1:
            raise ValueError(f"layer {text!r}: expected 'dense N' with N a positive integer (and an optional activation: "
                             f"{', '.join(ACTIVATIONS)})")
        return Layer("dense", int(args[0]), activation=activation)
    if kind in ("conv", "deconv"):
        usage = f"expected '{kind} CHANNELS kK [sS] [pP]{' [opO]' if kind == 'deconv' else ''}', e.g. '{kind} 32 k4 s2 p1'"
        if not args or not _COUNT.fullmatch(args[0]) or int(args[0]) < 1:
            raise ValueError(f"layer {text!r}: {usage}")
        values = {}
        for a in args[1:]:
            m = _SETTING.fullmatch(a)
            if m is None or m.group(1) in values or (m.group(1) == "op" and kind == "conv"):
                raise ValueError(f"layer {text!r}: {a!r} is not a setting; {usage}")
            values[m.group(1)] = int(m.group(2))
        if "k" not in values:
            raise ValueError(f"layer {text!r}: no kernel size; {usage}")
        k, s, p, op = values["k"], values.get("s", 1), values.get("p", 0), values.get("op", 0)
        if k < 1 or s < 1:
            raise ValueError(f"layer {text!r}: kernel size and stride must be at least 1; {usage}")
        if op >= s:
            raise ValueError(f"layer {text!r}: output padding {op}; expected 0 to stride - 1 ({s - 1}), as PyTorch requires")
        return Layer(kind, int(args[0]), k, s, p, op, activation=activation)
    if kind == "flatten":
        if args or activation is not None:
            raise ValueError(f"layer {text!r}: flatten takes no size and no activation")
        return Layer("flatten")
    if kind == "reshape":
        dims = args[0].split("x") if len(args) == 1 else []
        if len(dims) != 3 or not all(_COUNT.fullmatch(d) and int(d) >= 1 for d in dims) or activation is not None:
            raise ValueError(f"layer {text!r}: expected 'reshape CxHxW' with positive sizes, e.g. 'reshape 64x7x7' "
                             "(and no activation)")
        return Layer("reshape", shape=tuple(int(d) for d in dims))
    raise ValueError(f"layer {text!r}: unknown layer {kind!r}; expected {', '.join(_KINDS[:-1])} or {_KINDS[-1]}")


def _shown(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def layer_output_shape(layer, shape):
    """The per-example shape after ``layer`` (a ``Layer``) applied to ``shape`` (``[n]`` or
    ``[C, H, W]``), as PyTorch computes it; a one-line ValueError when it cannot apply."""
    shape = tuple(shape)
    if layer.kind == "dense":
        if len(shape) != 1:
            raise ValueError(f"a dense layer is fed {_shown(shape)}; put flatten before it")
        return (layer.size,)
    if layer.kind in ("conv", "deconv"):
        if len(shape) != 3:
            raise ValueError(f"a {layer.kind} layer needs [channels, height, width], is fed {_shown(shape)}; "
                             "put reshape CxHxW before it")
        k, s, p = layer.kernel, layer.stride, layer.padding
        if layer.kind == "conv":
            if k > shape[1] + 2 * p or k > shape[2] + 2 * p:
                raise ValueError(f"kernel {k} is larger than the padded input {shape[1] + 2 * p}x{shape[2] + 2 * p} "
                                 f"(input {_shown(shape)}, padding {p})")
            return (layer.size, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        h, w = ((d - 1) * s - 2 * p + k + layer.output_padding for d in shape[1:])
        if h < 1 or w < 1:
            raise ValueError(f"its output would be {h}x{w} from input {_shown(shape)}")
        return (layer.size, h, w)
    if layer.kind == "flatten":
        return (math.prod(shape),)
    if math.prod(layer.shape) != math.prod(shape):
        raise ValueError(f"reshape to {_shown(layer.shape)} ({math.prod(layer.shape)} values) is fed {_shown(shape)} "
                         f"({math.prod(shape)} values)")
    return layer.shape


class VAE(nn.Module):
    """The vae-dist network. Dense towers (``hidden``): encoder input -> hidden... (ReLU) ->
    (mu, logvar) heads of size ``zdim``; decoder: zdim -> decoder_hidden... (ReLU) -> input-sized
    output, Bernoulli logits or the Gaussian mean; with ``sigma="learned"`` the output is twice as
    wide, the means and then one log-variance per dimension. Parameter names match vae-dist's
    tensors (``encoder.0.weight``, ``encoder.mu.bias``, ``decoder.out.weight``, ...), so
    ``state_dict()`` is a checkpoint's model part, name for name and in the same order.

    Layer lists (``encoder=[...]``, ``decoder=[...]``, entries as ``parse_layer`` reads them,
    instead of ``hidden`` and ``decoder_hidden``): entry i is ``encoder.<i>`` / ``decoder.<i>``
    (flatten and reshape count but have no parameters), the decoder's last entry with parameters
    is ``decoder.out``; dense is ``nn.Linear``, conv ``nn.Conv2d``, deconv ``nn.ConvTranspose2d``,
    each followed by its activation (default relu, none for ``decoder.out``). The encoder reads the
    image ``input_shape`` ([C, H, W]; square and grey when None and ``input_size`` is a square)
    when its first entry is conv, deconv or flatten, else the flat row, and must end flat: the
    ``encoder.mu`` and ``encoder.logvar`` heads are dense. The decoder starts from ``[zdim]`` and
    ends with the data's shape (twice the channels when sigma is learned). Rows in and out stay
    flat, ``[batch, input_size]``, as with dense towers."""

    def __init__(self, input_size=784, hidden=None, decoder_hidden=None, zdim=20,
                 likelihood="bernoulli", sigma=1.0, *, encoder=None, decoder=None, input_shape=None):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood: expected 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.input_size, self.zdim, self.likelihood = int(input_size), int(zdim), likelihood
        self.sigma = None if likelihood != "gaussian" else "learned" if sigma == "learned" else float(sigma)
        if encoder is not None or decoder is not None:
            if hidden is not None or decoder_hidden is not None:
                raise ValueError("give hidden and decoder_hidden, or the layer lists encoder and decoder, not both")
            self._build_layer_lists(encoder, decoder, input_shape)
            return
        if input_shape is not None:
            raise ValueError("input_shape is for layer lists (encoder and decoder)")
        self.encoder_layers = self.decoder_layers = self.input_shape = None
        hidden = [500, 500] if hidden is None else [int(h) for h in hidden]
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else [int(h) for h in decoder_hidden]
        self.hidden, self.decoder_hidden = hidden, decoder_hidden
        # ModuleDicts, not Sequentials: the ReLUs are functional, so layer i is "<part>.i".
        self.encoder = nn.ModuleDict()
        prev = self.input_size
        for i, h in enumerate(hidden):
            self.encoder[str(i)] = nn.Linear(prev, h)
            prev = h
        self.encoder["mu"] = nn.Linear(prev, self.zdim)
        self.encoder["logvar"] = nn.Linear(prev, self.zdim)
        self.decoder = nn.ModuleDict()
        prev = self.zdim
        for i, h in enumerate(decoder_hidden):
            self.decoder[str(i)] = nn.Linear(prev, h)
            prev = h
        self.decoder["out"] = nn.Linear(prev, self.input_size * (2 if self.sigma == "learned" else 1))

    def _build_layer_lists(self, encoder, decoder, input_shape):
        """The layer-list towers: every shape walked and checked (one-line ValueErrors naming
        ``model.<part>[i]`` and the entry), the modules created in vae-dist's arena order."""
        for part, entries in (("encoder", encoder), ("decoder", decoder)):
            if entries is None:
                raise ValueError("model.encoder and model.decoder: give both layer lists (or neither, and hidden)")
            if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
                raise ValueError(f"model.{part}: expected a list of layers such as 'conv 32 k4 s2 p1', got {entries!r}")

        def parsed(part, entries):
            out = []
            for i, e in enumerate(entries):
                try:
                    out.append(e if isinstance(e, Layer) else parse_layer(e))
                except ValueError as err:
                    raise ValueError(f"model.{part}[{i}]: {err}") from None
            if not any(layer.has_parameters for layer in out):
                raise ValueError(f"model.{part}: has no dense, conv or deconv layer")
            return tuple(out)

        self.encoder_layers, self.decoder_layers = parsed("encoder", encoder), parsed("decoder", decoder)
        self.hidden = self.decoder_hidden = None
        if input_shape is not None:
            if isinstance(input_shape, str) or not hasattr(input_shape, "__len__") or len(input_shape) != 3 or not all(
                    not isinstance(d, bool) and isinstance(d, (int, float)) and d == int(d) and d >= 1 for d in input_shape):
                raise ValueError(f"model.input_shape: expected [channels, height, width], got {input_shape!r}")
            input_shape = tuple(int(d) for d in input_shape)
            if math.prod(input_shape) != self.input_size:
                raise ValueError(f"model.input_shape: {_shown(input_shape)} is not [channels, height, width] of "
                                 f"model.input_size {self.input_size} values")
        self.input_shape = input_shape
        side = math.isqrt(self.input_size)
        image = input_shape or ((1, side, side) if side * side == self.input_size else (self.input_size,))
        outputs = self.input_size * (2 if self.sigma == "learned" else 1)  # per row, flat

        def walk(part, layers, shape, last_name, last_default):
            """(modules dict, plan, final shape); plan: (layer, module key or None, activation)."""
            modules, plan = nn.ModuleDict(), []
            last = max(i for i, layer in enumerate(layers) if layer.has_parameters)
            for i, layer in enumerate(layers):
                try:
                    out = layer_output_shape(layer, shape)
                except ValueError as err:
                    raise ValueError(f"model.{part}[{i}] ({layer}): {err}") from None
                if not layer.has_parameters:
                    plan.append((layer, None, None))
                else:
                    key = last_name if i == last and last_name else str(i)
                    if layer.kind == "dense":
                        modules[key] = nn.Linear(shape[0], layer.size)
                    elif layer.kind == "conv":
                        modules[key] = nn.Conv2d(shape[0], layer.size, layer.kernel, stride=layer.stride,
                                                 padding=layer.padding)
                    else:
                        modules[key] = nn.ConvTranspose2d(shape[0], layer.size, layer.kernel, stride=layer.stride,
                                                          padding=layer.padding, output_padding=layer.output_padding)
                    default = last_default if i == last else "relu"
                    plan.append((layer, key, layer.activation or default))
                shape = out
            return modules, plan, shape

        first = self.encoder_layers[0].kind
        self._encoder_input = image if first in ("conv", "deconv", "flatten") else (self.input_size,)
        # Several channels: the model's rows are [H, W, C] (as image files hold them); the conv
        # reading them and the deconv writing them permute to and from NCHW.
        self._channels_last = len(image) == 3 and image[0] > 1
        self.encoder, self._encoder_plan, top = walk("encoder", self.encoder_layers, self._encoder_input, None, "relu")
        if len(top) != 1:
            raise ValueError(f"model.encoder: ends with shape {_shown(top)}; end it with flatten "
                             "(the mu and logvar heads are dense)")
        self.encoder["mu"] = nn.Linear(top[0], self.zdim)
        self.encoder["logvar"] = nn.Linear(top[0], self.zdim)
        self.decoder, self._decoder_plan, out = walk("decoder", self.decoder_layers, (self.zdim,), "out", "none")
        per_value = 2 if self.sigma == "learned" else 1
        want = (image[0] * per_value,) + image[1:] if len(image) == 3 else (outputs,)
        if out != want and out != (outputs,):
            values = " (a mean and a log-variance per value: twice the channels)" if self.sigma == "learned" else ""
            raise ValueError(f"model.decoder: ends with shape {_shown(out)}, but the data's examples need "
                             f"{_shown(want)}{values}")

    @classmethod
    def from_config(cls, model):
        """From a checkpoint's ``model`` metadata dict: dense towers (``hidden``,
        ``decoder_hidden``), or layer lists when it has ``encoder`` (and ``decoder``)."""
        if "encoder" in model or "decoder" in model:
            return cls(model["input_size"], None, None, model["zdim"], model.get("likelihood", "bernoulli"),
                       model.get("sigma", 1.0), encoder=model.get("encoder"), decoder=model.get("decoder"),
                       input_shape=model.get("input_shape"))
        return cls(model["input_size"], model["hidden"], model["decoder_hidden"], model["zdim"],
                   model.get("likelihood", "bernoulli"), model.get("sigma", 1.0))

    @property
    def uses_layer_lists(self):
        """Whether the towers are layer lists (``encoder_layers``, ``decoder_layers``)."""
        return self.encoder_layers is not None

    def config(self):
        """The ``model`` metadata dict of this module's shape (layer lists in canonical text)."""
        if self.uses_layer_lists:
            m = {"kind": "vae", "input_size": self.input_size}
            if self.input_shape is not None:
                m["input_shape"] = list(self.input_shape)
            m.update({"encoder": [str(x) for x in self.encoder_layers], "decoder": [str(x) for x in self.decoder_layers],
                      "zdim": self.zdim, "likelihood": self.likelihood})
        else:
            m = {"input_size": self.input_size, "hidden": list(self.hidden),
                 "decoder_hidden": list(self.decoder_hidden), "zdim": self.zdim, "likelihood": self.likelihood}
        if self.likelihood == "gaussian":
            m["sigma"] = self.sigma
        return m

    def extra_repr(self):
        return f"likelihood={self.likelihood}" + (f", sigma={self.sigma}" if self.sigma is not None else "")

    @staticmethod
    def _run(modules, plan, h):
        """A layer-list tower on ``h`` ``[n, *shape]``: each entry, then its activation."""
        for layer, key, act in plan:
            if key is not None:
                h = ACTIVATIONS[act](modules[key](h))
            elif layer.kind == "flatten":
                h = h.flatten(1)
            else:
                h = h.reshape(h.shape[0], *layer.shape)
        return h

    def encode(self, x):
        """``(mu, logvar)`` of q(z|x), each ``[batch, zdim]``."""
        if self.encoder_layers is not None:
            if x.shape[-1] != self.input_size:
                raise ValueError(f"encode: rows of {x.shape[-1]} values; the model takes {self.input_size}")
            lead = x.shape[:-1]
            n = math.prod(lead)
            if self._channels_last and self.encoder_layers[0].kind == "conv":
                c, hh, ww = self._encoder_input  # the rows are [H, W, C] images, as the data file holds them
                x = x.reshape(n, hh, ww, c).permute(0, 3, 1, 2)
            h = self._run(self.encoder, self._encoder_plan, x.reshape(n, *self._encoder_input))
            return (self.encoder["mu"](h).reshape(*lead, self.zdim),
                    self.encoder["logvar"](h).reshape(*lead, self.zdim))
        h = x
        for i in range(len(self.hidden)):
            h = F.relu(self.encoder[str(i)](h))
        return self.encoder["mu"](h), self.encoder["logvar"](h)

    def decode(self, z):
        """Decoder output ``[batch, input_size]``: Bernoulli logits, or the Gaussian mean;
        ``[batch, 2 * input_size]`` (means, then log-variances) when sigma is learned. A layer-list
        decoder's image output is flattened per row (NCHW order: with a learned sigma, the first
        C channels are the means and the next C the log-variances)."""
        if self.decoder_layers is not None:
            lead = z.shape[:-1]
            h = self._run(self.decoder, self._decoder_plan, z.reshape(math.prod(lead), z.shape[-1]))
            if self._channels_last and self.decoder_layers[-1].kind == "deconv":
                h = h.permute(0, 2, 3, 1)  # back to the data's [H, W, C] rows
            return h.reshape(*lead, self.input_size * (2 if self.sigma == "learned" else 1))
        h = z
        for i in range(len(self.decoder_hidden)):
            h = F.relu(self.decoder[str(i)](h))
        return self.decoder["out"](h)

    def reparameterize(self, mu, logvar, eps=None):
        """z = mu + exp(logvar / 2) * eps; eps ~ N(0, I) when None, 0 for the posterior mean."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x, eps=None):
        """``(output, mu, logvar)`` with z from ``reparameterize(mu, logvar, eps)``."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar

    def log_likelihood(self, x, output):
        """log p(x|z) per example from the decoder output. Bernoulli, in the stable form
        ``x*l - max(l, 0) - log1p(exp(-|l|))``; Gaussian N(output, sigma^2 I); with a learned
        sigma, N(mu, diag exp(lv)) where output = [mu | lv]: a density, so it may be positive."""
        if self.likelihood == "bernoulli":
            return (x * output - F.relu(output) - torch.log1p(torch.exp(-output.abs()))).sum(-1)
        if self.sigma == "learned":
            mu, lv = output.split(self.input_size, dim=-1)
            return -0.5 * (math.log(2 * math.pi) + lv + (x - mu) ** 2 * torch.exp(-lv)).sum(-1)
        s2 = self.sigma * self.sigma
        return -0.5 / s2 * ((output - x) ** 2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi * s2)

    @staticmethod
    def kl(mu, logvar):
        """KL(q(z|x) || N(0, I)) per example, closed form."""
        return (-0.5 * (1 + logvar - mu * mu - torch.exp(logvar))).sum(-1)

    def elbo_terms(self, x, eps=None):
        """``(log p(x|z), KL)`` per example, z = mu + sigma * eps (eps ~ N(0, I) when None)."""
        mu, logvar = self.encode(x)
        output = self.decode(self.reparameterize(mu, logvar, eps))
        return self.log_likelihood(x, output), self.kl(mu, logvar)

    def iw_log_weights(self, x, eps):
        """log w_i = log p(x|z_i) + log N(z_i; 0, I) - log N(z_i; mu, sigma^2) per row and sample,
        ``[batch, k]``, with z_i = mu + sigma * eps_i and ``eps`` ``[batch, k, zdim]``: the k·B
        samples go through the decoder as one batch. Their log-mean-exp is the IWAE bound."""
        mu, logvar = self.encode(x)
        z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps
        log_px = self.log_likelihood(x[:, None, :], self.decode(z))
        log_pz = (-0.5 * (z * z + math.log(2 * math.pi))).sum(-1)
        log_qz = (-0.5 * (eps * eps + math.log(2 * math.pi)) - 0.5 * logvar[:, None, :]).sum(-1)
        return log_px + log_pz - log_qz

    def iwae_bound(self, x, eps):
        """log (1/k) Σ_i w_i per row (Burda et al. 2016), ``[batch]``; see ``iw_log_weights``."""
        return torch.logsumexp(self.iw_log_weights(x, eps), dim=1) - math.log(eps.shape[1])

    def elbo(self, x, eps=None):
        """The ELBO per example, ``log p(x|z) - KL``; ``eps=0`` gives vae-dist's ``eval --mean-z``."""
        recon, kl = self.elbo_terms(x, eps)
        return recon - kl


def model_config(metadata, path="checkpoint"):
    """``vae_dist.checkpoint.model_config`` for both model shapes: a layer-list model's
    ``model`` metadata (``encoder`` and ``decoder`` instead of ``hidden`` and ``decoder_hidden``)
    has its kind, input_size, zdim, likelihood and sigma checked there, its input_shape and
    layer lists here (every entry parsed). Raises a one-line ValueError naming ``path``."""
    m = metadata.get("model")
    if not (isinstance(m, dict) and ("encoder" in m or "decoder" in m)):
        return _checkpoint.model_config(metadata, path)
    # The shared fields through the dense check (same messages, sigma as vae-dist's float32).
    out = _checkpoint.model_config({**metadata, "model": {**m, "hidden": [], "decoder_hidden": []}}, path)
    del out["hidden"], out["decoder_hidden"]
    out["kind"] = "vae"
    shape = m.get("input_shape")
    if shape is not None:
        if not isinstance(shape, list) or len(shape) != 3 or not all(
                not isinstance(d, bool) and isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"{path}: metadata field 'model.input_shape': expected [channels, height, width], got {shape!r}")
        if math.prod(shape) != out["input_size"]:
            raise ValueError(f"{path}: metadata field 'model.input_shape': {shape} is not [channels, height, width] "
                             f"of model.input_size {out['input_size']} values")
        out["input_shape"] = list(shape)
    for part in ("encoder", "decoder"):
        entries = m.get(part)
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: metadata field 'model.{part}': expected a non-empty list of layers, got {entries!r}")
        for i, e in enumerate(entries):
            try:
                parse_layer(e)
            except ValueError as err:
                raise ValueError(f"{path}: metadata field 'model.{part}[{i}]': {err}") from None
        out[part] = list(entries)
    return out


def load(path):
    """A ``VAE`` (float32, CPU, eval mode) with the model tensors of the vae-dist checkpoint
    ``path``, loaded strictly; Adam's moments are ignored. Dense and layer-list models alike.
    Raises a one-line ValueError naming ``path`` for a checkpoint whose ``kind`` is not ``vae``
    or whose ``model`` metadata is malformed (a bad layer entry is named)."""
    path = str(path)
    tensors, metadata = _checkpoint.read(path)
    config = model_config(metadata, path)
    try:
        module = VAE.from_config(config)
    except ValueError as e:  # a layer list whose shapes do not fit (the entries parse)
        raise ValueError(f"{path}: {e}") from None
    state = {k: torch.from_numpy(v.copy()) for k, v in _checkpoint.model_tensors(tensors).items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def save_checkpoint(module, path, config_yaml, step, epoch, seed, batch, note=""):
    """Writes ``module``'s weights as a checkpoint that ``vae-dist eval`` reads (no Adam moments;
    resuming from it is not supported: ``data_checksum`` is 0): format ``vae-dist/1``, the ``model`` metadata of
    ``module.config()``, ``config_yaml`` (the run's config, which names the data), the training
    state (``step``, ``epoch``, ``seed``, ``batch``; one process) and a CRC-32 per tensor. ``note``
    goes to the ``trained_by`` field (vae-dist ignores it)."""
    import json
    import zlib

    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    crcs = {k: zlib.crc32(v.numpy().astype("<f4").tobytes()) for k, v in state.items()}
    meta = {"format": "vae-dist/1", "model": json.dumps(module.config()), "config": config_yaml,
            "step": str(step), "epoch": str(epoch), "seed": str(seed), "world_size": "1", "shards": "1",
            "global_batch": str(batch), "adam_step": str(step), "data_checksum": "0",
            "tensor_crc32": json.dumps(crcs, separators=(",", ":")), "window_recon": "0.0", "window_kl": "0.0",
            "window_count": "0", "trained_by": note}
    save_file(state, str(path), metadata=meta)


def save_init(module, path):
    """Writes ``module.state_dict()`` (as contiguous float32 CPU tensors) to ``path`` as a
    weights-only safetensors file: the initialisation ``vae-dist train --init FILE`` reads."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
