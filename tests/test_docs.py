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


def _heading_refs() -> list[tuple[str, str, str]]:
    """(where, target file, heading) for every `README "X"` and `docs/NAME.md "X"` in the code, settings and docs."""
    files = [REPO / "README.md", REPO / "dvc.yaml", REPO / "params.yaml", REPO / "pyproject.toml", REPO / "prefect.yaml",
             REPO / "Makefile", *REPO.glob("profiles/*.yaml"), *REPO.glob("docs/*.md"), *REPO.glob("src/**/*.py"),
             *REPO.glob("flows/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("tests/*.py")]
    refs = []
    for f in files:
        for m in re.finditer(r'(README|docs/[\w-]+\.md) "([^"\n]{3,80})"', f.read_text()):
            target = "README.md" if m[1] == "README" else m[1]
            refs.append((f.relative_to(REPO).as_posix(), target, m[2]))
    return refs


def test_every_pointer_to_a_section_names_one_that_exists():
    """Comments and docs that say `README "Some heading"` or `docs/model.md "Some heading"` point at a heading of
    that file (its text, or the start of it); and every docs/NAME.md mentioned anywhere exists."""
    refs = _heading_refs()
    assert len(refs) >= 5
    missing = []
    for where, target, heading in refs:
        if where == "tests/test_docs.py":
            continue
        headings = [h.strip().lower() for h in re.findall(r"^#+ (.+)$", (REPO / target).read_text(), re.M)]
        if not any(h.startswith(heading.lower()) for h in headings):
            missing.append(f"{where}: {target} has no heading {heading!r}")
    assert not missing, "\n".join(missing)
    mentioned = {m for f in [REPO / "README.md", *REPO.glob("src/**/*.py"), *REPO.glob("flows/*.py"),
                             REPO / "dvc.yaml", REPO / "params.yaml", *REPO.glob("docs/*.md")]
                 for m in re.findall(r"docs/[\w-]+\.md", f.read_text())}
    assert all((REPO / m).is_file() for m in mentioned), sorted(m for m in mentioned if not (REPO / m).is_file())
