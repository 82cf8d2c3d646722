"""Claim bodies as sanitised Markdown.

Bodies are Markdown written by people, or the Distill families' comments, which hold a little HTML
(``<a href='#group_mixed3a_curves'>``, ``<code>``, ``<br>``). That HTML is converted first: a link to another
family becomes a link to that layer's page filtered by the family, an http(s) link a Markdown link, ``<code>``
backticks, any other tag its text. Markdown is then rendered by markdown-it with raw HTML off (any remaining
``<`` is escaped), images off (every picture on a page comes from this server) and its own link check
(no ``javascript:`` or ``data:`` URLs).
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import unescape

from markdown_it import MarkdownIt
from markupsafe import Markup

_A = re.compile(r"""<a\s[^>]*?href\s*=\s*(['"])(.*?)\1[^>]*>(.*?)</a\s*>""", re.I | re.S)
_CODE = re.compile(r"<code>(.*?)</code\s*>", re.I | re.S)
_BR = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_FAMILY = re.compile(r"#group_([a-z0-9]+?)_([a-z0-9_]+)$")


def family_slug(label: str) -> str:
    """'Color Center-Surround' → 'color_center_surround' (the Distill article's anchors)."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _md_text(text: str) -> str:
    return re.sub(r"([\[\]\\])", r"\\\1", unescape(_TAG.sub("", text)).strip())


def from_distill(body: str, model: str) -> str:
    """The families' HTML as Markdown (links to this server's layer pages, or plain text)."""

    def link(m: re.Match) -> str:
        href, text = unescape(m.group(2)).strip(), _md_text(m.group(3))
        family = _FAMILY.match(href)
        if family and model:
            return f"[{text}](/n/{model}/{family.group(1)}?family={family.group(2)})"
        if href.startswith(("https://", "http://")) and " " not in href and ")" not in href:
            return f"[{text}]({href})"
        return text

    body = _A.sub(link, body)
    body = _CODE.sub(lambda m: "`" + unescape(m.group(1)).replace("`", "") + "`", body)
    body = _BR.sub("  \n", body)
    return _TAG.sub("", body)


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")


def render(body: str, model: str = "") -> Markup:
    """Sanitised HTML for a claim body."""
    return Markup(_md().render(from_distill(body or "", model)))
