"""The docs cannot point nowhere: every relative link in README.md, CHANGELOG.md and docs/*.md
names a file of the repository, and every #anchor a heading of that file (GitHub's slugs). The
README stays short."""

import os
import re

import pytest

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", f.read(), re.M)}


def pages(repo):
    docs = os.path.join(repo, "docs")
    return [os.path.join(repo, "README.md"), os.path.join(repo, "CHANGELOG.md")] + sorted(
        os.path.join(docs, p) for p in os.listdir(docs) if p.endswith(".md"))


def test_every_relative_link_and_anchor_resolves(repo):
    broken = []
    for page in pages(repo):
        with open(page, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(file):
                broken.append(f"{os.path.relpath(page, repo)}: {target} (no such file)")
            elif anchor and file.endswith(".md") and anchor not in anchors(file):
                broken.append(f"{os.path.relpath(page, repo)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_slug_follows_github():
    assert slug("CVAE vs regressor: the tutorial's Figure 8") == "cvae-vs-regressor-the-tutorials-figure-8"
    assert slug("Your own data: scikit-learn's digits") == "your-own-data-scikit-learns-digits"
    assert slug("Latent codes (`encode`, `decode`)") == "latent-codes-encode-decode"


def test_readme_is_short(repo):
    with open(os.path.join(repo, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 160
