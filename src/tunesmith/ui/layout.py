"""One layout for every page: static/layout.html with the nav bar and the page's own fragment
(static/pages/NAME.html) put in. Fragments and the layout are ours; anything from a run directory
reaches the page only as JSON that the scripts insert as text, never as markup."""

from __future__ import annotations

from html import escape
from pathlib import Path

STATIC = Path(__file__).parent / "static"


def nav_html(pages, current) -> str:
    items = []
    for p in pages:
        if p.nav:
            here = ' aria-current="page"' if p is current else ""
            items.append(f'<a href="{escape(p.path)}"{here}>{escape(p.title)}</a>')
    return "\n".join(items)


def render_page(page, pages, settings) -> str:
    layout = (STATIC / "layout.html").read_text(encoding="utf-8")
    body = (STATIC / "pages" / page.template).read_text(encoding="utf-8")
    return (layout.replace("{{title}}", escape(page.title))
                  .replace("{{allow_train}}", "true" if settings.allow_train else "false")
                  .replace("{{nav}}", nav_html(pages, page))
                  .replace("{{body}}", body))
