"""GX Data Docs that open offline: every CDN script and stylesheet replaced by a local copy.

    dfd validate ...   # builds reports/validation/data_docs/ and calls make_offline on it

GX 1.x pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs; offline they
render unstyled and the index table stays empty. The same files, vendored from npm with their
licences, live in `assets/gx_docs/`; Vega comes from vl-convert-python (as for `dvc plots`).
A CDN URL this module does not know raises, so a GX upgrade that adds one fails the tests
(`tests/test_validate.py`) instead of shipping a page that needs the network.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..core.stable import source_date, stable_ids

ASSETS = Path(__file__).parent / "assets" / "gx_docs"
VENDOR = "static/vendor"
# URL file name -> vendored file (relative to VENDOR); None drops the tag.
LOCAL = {
    "bootstrap.min.css": "bootstrap.min.css",
    "bootstrap.min.js": "bootstrap.min.js",
    "jquery-3.7.1.min.js": "jquery.min.js",
    "popper.min.js": "popper.min.js",
    "bootstrap-table.min.css": "bootstrap-table.min.css",
    "bootstrap-table.min.js": "bootstrap-table.min.js",
    "bootstrap-table-filter-control.css": "bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control.min.css",
    "bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control.min.js",
    "bootstrap-datepicker.min.css": "bootstrap-datepicker.min.css",
    "bootstrap-datepicker.min.js": "bootstrap-datepicker.min.js",
    "all.min.css": "fontawesome/css/all.min.css",
    "vega@5": "vega-bundle.js",  # vl-convert's bundle holds vega, vega-lite and vega-embed
    "vega-lite@5": None,
    "vega-embed@6": None,
    "bootstrap-prefers-dark.css": None,  # dark-mode theme only (150 KB); pages use the light theme offline
}
_TAG = re.compile(r"""<(?:script|link)\b[^>]*?(?:src|href)=["'](https?://[^"']+)["'][^>]*>(?:\s*</script>)?""")
_REMOTE_LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"')]*?\.png(?:\?d=[0-9TZ.]+)?")
_LOAD_TIME = re.compile(r"(ge_load_time</span>.{0,400}?>)(\d{8}T\d{6}\.\d{6}Z)(<)", re.S)


def _vendor(docs_dir: Path) -> None:
    import vl_convert

    dest = docs_dir / VENDOR
    shutil.copytree(ASSETS, dest, dirs_exist_ok=True)
    (dest / "vega-bundle.js").write_text(vl_convert.javascript_bundle())


def _localise(html: str, prefix: str) -> str:
    def tag(m: re.Match) -> str:
        name = m.group(1).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if name not in LOCAL:
            raise ValueError(f"GX Data Docs load {m.group(1)!r}, which has no local copy: add it to "
                             f"{ASSETS} and to datadocs.LOCAL")
        local = LOCAL[name]
        if local is None:
            return ""
        if m.group(0).startswith("<script"):
            return f'<script src="{prefix}{VENDOR}/{local}"></script>'
        return f'<link rel="stylesheet" href="{prefix}{VENDOR}/{local}">'

    html = _TAG.sub(tag, html)
    return _REMOTE_LOGO.sub(f"{prefix}static/images/logo-long.png", html)


def _stabilise(html: str) -> str:
    """Replace what GX makes up per run (random element ids, the batch load time) by stable values."""
    html = stable_ids(html)
    return _LOAD_TIME.sub(lambda m: m.group(1) + source_date().strftime("%Y%m%dT%H%M%S.%fZ") + m.group(3), html)


def make_offline(docs_dir: str | Path) -> list[Path]:
    """Rewrite every page under docs_dir to load only local files and to be the same on a re-run."""
    docs_dir = Path(docs_dir)
    _vendor(docs_dir)
    pages = sorted(docs_dir.rglob("*.html"))
    for page in pages:
        depth = len(page.relative_to(docs_dir).parts) - 1
        html = _stabilise(_localise(page.read_text(encoding="utf-8"), "../" * depth))
        page.write_text(html, encoding="utf-8")
    return pages


def remote_refs(html: str) -> list[str]:
    """http(s) URLs that a page loads as a script, stylesheet, image or CSS url() (links are fine)."""
    refs = [m.group(1) for m in _TAG.finditer(html)]
    refs += re.findall(r"""<img\b[^>]*\bsrc=["'](https?://[^"']+)""", html)
    refs += re.findall(r"""url\(\s*["']?(https?://[^"')]+)""", html)
    return refs

