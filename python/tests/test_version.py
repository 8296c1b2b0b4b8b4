"""The package's version is defined once (vae_dist.__version__, read by pyproject.toml) and is
the vae-dist binary's."""

import os
import re
import subprocess

import vae_dist


def test_pyproject_takes_the_version_from_the_package(repo):
    text = open(os.path.join(repo, "python", "pyproject.toml")).read()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "vae_dist.__version__"}' in text
    assert not re.search(r'(?m)^version\s*=\s*"', text), "a second, literal version in pyproject.toml"


def test_the_swift_sources_say_the_same_version(repo):
    text = open(os.path.join(repo, "Sources", "VAEDist", "ReplicaCheck.swift")).read()
    m = re.search(r'vaeDistVersion = "vae-dist ([0-9][^ "]*)', text)
    assert m, "vaeDistVersion not found in ReplicaCheck.swift"
    assert m.group(1) == vae_dist.__version__


def test_the_binary_says_the_same_version(vae_dist_bin):
    out = subprocess.run([vae_dist_bin, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["vae-dist", vae_dist.__version__], out
