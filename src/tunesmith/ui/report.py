"""report.md as HTML for the run page. A run directory is data: raw HTML in it is shown as text
(markdown-it's `html: False`), links may only be http(s), relative or anchors (markdown-it already
refuses javascript:, vbscript:, file: and data: other than images), and a relative image is fetched
through /api/run-file, which serves only images inside the run.

markdown-it-py comes with the `ui` extra; without it the report is shown as plain text."""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote, urlparse


def _rewrite(url: str, file_prefix: str) -> str | None:
    """Where a link or image in report.md should point on the page, or None to drop it."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") or url.startswith("#"):
        return url
    if parsed.scheme or parsed.netloc or url.startswith("/"):
        return None
    return file_prefix + quote(parsed.path)


def render_markdown(text: str, file_prefix: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return ('<p class="notice">markdown-it-py is not installed (pip install \'tunesmith[ui]\'); report.md as text:</p>'
                f"<pre>{escape(text)}</pre>")
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            attr = {"image": "src", "link_open": "href"}.get(child.type)
            if attr is None:
                continue
            target = _rewrite(str(child.attrGet(attr) or ""), file_prefix)
            if target is None:
                child.attrs.pop(attr, None)
            else:
                child.attrSet(attr, target)
            if child.type == "link_open" and target and target.startswith("http"):
                child.attrSet("rel", "noopener noreferrer")
    return md.renderer.render(tokens, md.options, {})


def render_report(path: Path, file_prefix: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return render_markdown(text, file_prefix)
