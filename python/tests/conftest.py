"""Shared fixtures: the repository, the vae-dist binary and MNIST, found as the scripts find them."""

import os
import sys

import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)


def find_binary():
    """$VAE_DIST_BIN, else this checkout's release build, else its debug build (None if none)."""
    env = os.environ.get("VAE_DIST_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    for kind in ("release", "debug"):
        path = os.path.join(REPO, ".build", kind, "vae-dist")
        if os.access(path, os.X_OK):
            return path
    return None


def find_mnist():
    """The first of $VAE_DIST_DATA, <repo>/data and <repo>/../shared/data holding mnist/."""
    for d in (os.environ.get("VAE_DIST_DATA"), os.path.join(REPO, "data"), os.path.join(REPO, "..", "shared", "data")):
        if d and os.path.isdir(os.path.join(d, "mnist")):
            return os.path.abspath(d)
    return None


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def vae_dist_bin():
    path = find_binary()
    if path is None:
        pytest.skip("no vae-dist binary: set VAE_DIST_BIN or build (swift build -c release)")
    return path


@pytest.fixture(scope="session")
def mnist_dir():
    path = find_mnist()
    if path is None:
        pytest.skip("no MNIST: set VAE_DIST_DATA or run scripts/get-data")
    return path


@pytest.fixture(scope="session")
def torch_step_fixture():
    """The shared PyTorch fixture (784-64-32-8 ReLU VAE, its weights, 16 images and their noise:
    ../shared/fixtures/torch-vae-step.safetensors, or $VAE_DIST_FIXTURES), as a dict of arrays."""
    path = os.environ.get("VAE_DIST_FIXTURES", os.path.join(REPO, "..", "shared", "fixtures"))
    if os.path.isdir(path):
        path = os.path.join(path, "torch-vae-step.safetensors")
    if not os.path.exists(path):
        pytest.skip(f"no PyTorch fixture at {path}")
    from safetensors.numpy import load_file
    return load_file(path)
