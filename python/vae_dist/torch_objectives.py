"""PyTorch's gradients of the training objectives, for the engine's tests (TorchObjectiveTests).

On the shared PyTorch fixture's VAE (784-64-32-8, its weights, 16 images and their noise:
../shared/fixtures/torch-vae-step.safetensors), autograd in float64 computes the gradient of
each objective summed over the batch, as the engine's backward does:

- ``beta``: Σ_r (β·KL_r − log p(x_r|z_r)), the KL weight β (also what KL warm-up mid-way is);
- ``free_bits``: −Σ_r log p(x_r|z_r) + B·Σ_j max(λ, K̄_j), K̄_j dimension j's KL averaged over the
  batch (Kingma et al. 2016), λ halfway between the 4th and 5th smallest K̄_j so that half the
  dimensions sit below it;
- ``iwae``: −Σ_r log (1/k) Σ_i w_ri with k samples per row, their noise drawn here (seeded) and
  written out with the gradients;
- ``iwae_dreg``: DReG's estimator of that gradient (Tucker et al. 2019) on the same noise, as
  their surrogate: the encoder's from −Σ sg(w̃)²·log w with q's parameters detached inside
  log q(z|x) (z keeps its path to them), the decoder's from −Σ sg(w̃)·log w.

Writes ``grad.<objective>.<parameter>`` (F64), ``input.eps_iwae`` [16, k·8], ``free_bits.lambda``
and ``free_bits.mean_kl`` [8] to a safetensors file. Exit status 3 when PyTorch is missing.

    python -m vae_dist.torch_objectives FIXTURE OUT [--beta 0.5] [--samples 5] [--seed 7]
"""

import argparse
import sys


def load(fixture):
    from safetensors.numpy import load_file
    return load_file(fixture)


def objectives(t, beta, samples, seed):
    """The gradients of the three objectives: {name: {parameter: ndarray}}, plus their inputs."""
    import numpy as np
    import torch
    from . import torch as vt

    model = vt.VAE(784, [64, 32], [32, 64], 8).double()
    names = [n for n, _ in model.named_parameters()]
    model.load_state_dict({n: torch.from_numpy(t[n].astype(np.float64)) for n in names}, strict=True)
    x = torch.from_numpy(t["input.x"].astype(np.float64))
    eps = torch.from_numpy(t["input.eps"].astype(np.float64))
    batch = x.shape[0]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}

    def terms():
        mu, logvar = model.encode(x)
        out = model.decode(model.reparameterize(mu, logvar, eps))
        kl_dims = -0.5 * (1 + logvar - mu * mu - torch.exp(logvar))  # [B, zdim]
        return model.log_likelihood(x, out), kl_dims

    recon, kl_dims = terms()
    out = {"beta": grads((beta * kl_dims.sum(-1) - recon).sum())}
    recon, kl_dims = terms()
    mean_kl = kl_dims.mean(0)
    ordered = torch.sort(mean_kl.detach()).values
    lam = float((ordered[3] + ordered[4]) / 2)
    out["free_bits"] = grads(-recon.sum() + batch * torch.clamp(mean_kl, min=lam).sum())
    rng = np.random.default_rng(seed)
    eps_k = torch.from_numpy(rng.standard_normal((batch, samples, 8)))
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu[:, None, :] + std[:, None, :] * eps_k  # [B, k, zdim]
    log_px = model.log_likelihood(x[:, None, :].expand(batch, samples, 784), model.decode(z))
    log_pz = (-0.5 * (z * z + np.log(2 * np.pi))).sum(-1)
    log_qz = (-0.5 * (eps_k * eps_k + np.log(2 * np.pi)) - 0.5 * logvar[:, None, :]).sum(-1)
    log_w = log_px + log_pz - log_qz
    bound = torch.logsumexp(log_w, dim=1) - np.log(samples)
    out["iwae"] = grads(-bound.sum())
    out["iwae_dreg"] = dreg_gradients(model, x, eps_k)
    extra = {"input.eps_iwae": eps_k.reshape(batch, samples * 8).numpy(), "free_bits.lambda": np.array([lam]),
             "free_bits.mean_kl": mean_kl.detach().numpy(), "iwae.bound_sum": np.array([float(bound.sum().detach())])}
    return out, extra


def dreg_gradients(model, x, eps_k):
    """DReG's gradient on noise eps_k [B, k, zdim]: {parameter: ndarray}."""
    import numpy as np
    import torch

    batch, samples, zdim = eps_k.shape
    mu, logvar = model.encode(x)
    z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps_k
    log_px = model.log_likelihood(x[:, None, :].expand(batch, samples, x.shape[1]), model.decode(z))
    log_pz = (-0.5 * (z * z + np.log(2 * np.pi))).sum(-1)
    m, lv = mu.detach()[:, None, :], logvar.detach()[:, None, :]
    log_qz = (-0.5 * ((z - m) ** 2 / torch.exp(lv) + lv + np.log(2 * np.pi))).sum(-1)
    log_w = log_px + log_pz - log_qz
    w = torch.softmax(log_w, dim=1).detach()
    named = list(model.named_parameters())
    encoder = [p for n, p in named if n.startswith("encoder.")]
    decoder = [p for n, p in named if not n.startswith("encoder.")]
    g_enc = torch.autograd.grad(-(w * w * log_w).sum(), encoder, retain_graph=True)
    g_dec = torch.autograd.grad(-(w * log_w).sum(), decoder)
    got = dict(zip((id(p) for p in encoder + decoder), g_enc + g_dec))
    return {n: got[id(p)].numpy().copy() for n, p in named}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.torch_objectives", description=__doc__.split("\n\n")[0])
    p.add_argument("fixture")
    p.add_argument("out")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch_objectives: PyTorch is not installed", file=sys.stderr)
        return 3
    import numpy as np
    from safetensors.numpy import save_file
    grads, extra = objectives(load(a.fixture), a.beta, a.samples, a.seed)
    tensors = {f"grad.{o}.{n}": np.ascontiguousarray(g, dtype=np.float64) for o, gs in grads.items() for n, g in gs.items()}
    tensors.update({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in extra.items()})
    save_file(tensors, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
