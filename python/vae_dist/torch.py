"""vae-dist checkpoints as PyTorch modules, and PyTorch weights as vae-dist initialisations.

``load(path)`` builds a ``VAE`` module from a checkpoint's ``model`` metadata and loads its
tensors strictly; ``save_init(module, path)`` writes a weights-only safetensors file that
``vae-dist train --init FILE`` reads.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import checkpoint as _checkpoint


class VAE(nn.Module):
    """The vae-dist network. Encoder: input -> hidden... (ReLU) -> (mu, logvar) heads of size
    ``zdim``; decoder: zdim -> decoder_hidden... (ReLU) -> input-sized output, Bernoulli logits
    or the Gaussian mean; with ``sigma="learned"`` the output is twice as wide, the means and
    then one log-variance per dimension. Parameter names match vae-dist's tensors (``encoder.0.weight``,
    ``encoder.mu.bias``, ``decoder.out.weight``, ...), so ``state_dict()`` is a checkpoint's
    model part, name for name and in the same order."""

    def __init__(self, input_size=784, hidden=(500, 500), decoder_hidden=None, zdim=20,
                 likelihood="bernoulli", sigma=1.0):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood: expected 'bernoulli' or 'gaussian', got {likelihood!r}")
        hidden = [int(h) for h in hidden]
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else [int(h) for h in decoder_hidden]
        self.input_size, self.hidden, self.decoder_hidden = int(input_size), hidden, decoder_hidden
        self.zdim, self.likelihood = int(zdim), likelihood
        self.sigma = None if likelihood != "gaussian" else "learned" if sigma == "learned" else float(sigma)
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

    @classmethod
    def from_config(cls, model):
        """From a checkpoint's ``model`` metadata dict."""
        return cls(model["input_size"], model["hidden"], model["decoder_hidden"], model["zdim"],
                   model.get("likelihood", "bernoulli"), model.get("sigma", 1.0))

    def config(self):
        """The ``model`` metadata dict of this module's shape."""
        m = {"input_size": self.input_size, "hidden": list(self.hidden),
             "decoder_hidden": list(self.decoder_hidden), "zdim": self.zdim, "likelihood": self.likelihood}
        if self.likelihood == "gaussian":
            m["sigma"] = self.sigma
        return m

    def extra_repr(self):
        return f"likelihood={self.likelihood}" + (f", sigma={self.sigma}" if self.sigma is not None else "")

    def encode(self, x):
        """``(mu, logvar)`` of q(z|x), each ``[batch, zdim]``."""
        h = x
        for i in range(len(self.hidden)):
            h = F.relu(self.encoder[str(i)](h))
        return self.encoder["mu"](h), self.encoder["logvar"](h)

    def decode(self, z):
        """Decoder output ``[batch, input_size]``: Bernoulli logits, or the Gaussian mean;
        ``[batch, 2 * input_size]`` (means, then log-variances) when sigma is learned."""
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

    def elbo(self, x, eps=None):
        """The ELBO per example, ``log p(x|z) - KL``; ``eps=0`` gives vae-dist's ``eval --mean-z``."""
        recon, kl = self.elbo_terms(x, eps)
        return recon - kl


def load(path):
    """A ``VAE`` (float32, CPU, eval mode) with the model tensors of the vae-dist checkpoint
    ``path``, loaded strictly; Adam's moments are ignored. Raises ValueError for a checkpoint
    whose ``kind`` is not ``vae``."""
    path = str(path)
    tensors, metadata = _checkpoint.read(path)
    module = VAE.from_config(_checkpoint.model_config(metadata, path))
    state = {k: torch.from_numpy(v.copy()) for k, v in _checkpoint.model_tensors(tensors).items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def save_init(module, path):
    """Writes ``module.state_dict()`` (as contiguous float32 CPU tensors) to ``path`` as a
    weights-only safetensors file: the initialisation ``vae-dist train --init FILE`` reads."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
