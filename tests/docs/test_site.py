"""The documentation site (issue 37): ``mkdocs build --strict`` passes (a broken link, a missing API object or a
docstring mkdocstrings cannot read fails it), and the built home and API pages render in headless Chromium."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, headless_chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def render(page: Path, shot: Path) -> str:
    """The page's DOM after its scripts ran, and a 1200x900 screenshot of it."""
    headless_chromium(page, f"--screenshot={shot}")
    done = headless_chromium(page, "--dump-dom")
    assert shot.exists(), done.stderr[-2000:]
    return done.stdout


def test_the_site_builds_strict_with_every_page(site):
    assert (site / "index.html").is_file()
    notebook = Path("notebooks/compare_networks.ipynb").with_suffix("")  # a notebook's page
    for page in ("getting-started", "configs", "priors", "extractors", "samplers", "results", "clusters", "api",
                 "benchmarks", "troubleshooting", "method", notebook):
        assert (site / page / "index.html").is_file(), page


@pytest.mark.parametrize("page, shows", [("index.html", "feature decoder"),
                                         ("api/index.html", "lit_featinv.module.FeatureInversion")])
def test_a_built_page_renders_in_a_browser(site, tmp_path, page, shows):
    dom = render(site / page, tmp_path / "shot.png")
    assert shows in dom and 'class="md-content"' in dom and 'class="md-nav' in dom  # the theme laid it out
    if page.startswith("api"):
        assert dom.count('class="doc doc-object doc-class"') >= 30  # every class of the reference was collected
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert (shot < 250).any(axis=2).mean() > 0.05  # not a blank page


def test_the_readme_is_a_front_page_that_links_every_page():
    """README.md stays a front page (at most 250 lines) and links each page of the site."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"(docs/{page.name})" in text, f"the README does not link docs/{page.name}"
