"""The docs: README is a landing page, docs/ builds as an mkdocs-material site offline with --strict."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def index_text() -> str:
    """docs/index.md is the README with links made relative to docs/ (and links out of the repo as text)."""
    text = (REPO / "README.md").read_text().replace("](docs/", "](")
    text = re.sub(r"\[([^\]]+)\]\((\.\./[^)]+)\)", r"\1 (`\2`)", text)
    return "<!-- generated from README.md by tests/test_docs.py::index_text; edit the README -->\n" + text


def test_readme_is_a_landing_page_whose_links_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    targets = re.findall(r"\]\((docs/[^)#]+)\)", text)
    assert len(targets) >= 10 and all((REPO / t).is_file() for t in targets), targets
    assert "make repro" in text and "make test" in text  # the two set-up commands


def test_docs_index_is_the_readme():
    assert (REPO / "docs/index.md").read_text() == index_text(), "regenerate docs/index.md from README.md"


def test_the_docs_site_builds_offline_in_strict_mode(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": str(Path(sys.executable).parent), "NO_MKDOCS_2_WARNING": "1",
                              "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    pages = {p.parent.name for p in (tmp_path / "site").rglob("index.html")}
    assert {"experiments", "use", "results", "pipeline"} <= pages
    assert "fonts.googleapis.com" not in (tmp_path / "site/index.html").read_text()  # nothing fetched when read
