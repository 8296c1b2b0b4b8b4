"""Python side of vae-dist: read its checkpoints and held-out data, move weights to and from
PyTorch, and the project's tools that scripts/ run (``python -m vae_dist.<tool>``).

``vae_dist.checkpoint`` and ``vae_dist.data`` need numpy and safetensors; ``vae_dist.torch``
also needs torch; ``vae_dist.plot`` needs matplotlib. The tools ``metrics``, ``launch``,
``bench``, ``stop_latency``, ``zdim_study`` and ``cvae_study`` use the standard library only.
Submodules are imported when first used, so ``import vae_dist`` needs nothing installed.
"""

import importlib

#: The package's version; pyproject.toml reads it from here. It is the vae-dist binary's
#: (``vae-dist --version``), which python/tests/test_version.py checks.
__version__ = "0.2.0"

_SUBMODULES = ("checkpoint", "data", "metrics", "launch")
__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vae_dist' has no attribute '{name}'")
