"""Python side of vae-dist: read its checkpoints and held-out data, move weights to and from
PyTorch. ``vae_dist.checkpoint`` and ``vae_dist.data`` need numpy and safetensors;
``vae_dist.torch`` also needs torch (imported only when that module is)."""

from . import checkpoint, data

__version__ = "0.1.0"
__all__ = ["checkpoint", "data"]
