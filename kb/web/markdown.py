"""Claim bodies and circuit descriptions as sanitised Markdown, in time linear in their length, cached.

Bodies are Markdown written by people, or the Distill families' comments, which hold a little HTML
(``<a href='#group_mixed3a_curves'>``, ``<code>``, ``<br>``). That HTML is converted first: a link to another
family becomes a link to that layer's page filtered by the family, an http(s) link a Markdown link, ``<code>``
backticks, any other tag its text. Markdown is then rendered by markdown-it with raw HTML off (any remaining
``<`` is escaped), images off (every picture on a page comes from this server) and its own link check
(no ``javascript:`` or ``data:`` URLs).

Any text an editor can write is hostile input here, and every reader pays for it, so:

- The pre-pass is one scan of the text (``str.find``), and every regular expression it runs sees one tag of at
  most ``MAX_TAG`` characters: its cost is linear in the text (no expression runs over an unbounded span, as the
  old ``<a …>(.*?)</a>`` one did, which took minutes for ``<a href="x">`` repeated). An ``<a>`` or ``<code>``
  that is never closed is its text, found in a second pass at most.
- Texts longer than ``MAX_TEXT`` (beyond any limit the claims and circuits accept) are cut there.
- ``render`` keeps its answers in a bounded LRU by the text's sha256 (revisions never change, so a revision's page
  renders its text once); pages call it off the event loop (kb.web.text_work).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache
from html import unescape

from markdown_it import MarkdownIt
from markupsafe import Markup

from kb.lru import SizedLRU

MAX_TEXT = 200_000  # characters rendered at most (a claim body has at most 100,000, a description 20,000)
MAX_TAG = 1_000  # a longer "<...>" is text, not a tag

_NAME = re.compile(r"(/?)([a-zA-Z][a-zA-Z0-9]*)")
_HREF = re.compile(r"""\shref\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_FAMILY = re.compile(r"#group_([a-z0-9]+?)_([a-z0-9_]+)$")

# Rendered HTML by (sha256 of the text, model): a revision's text never changes.
CACHE: SizedLRU[Markup] = SizedLRU(entries=1024, total=16_000_000, size=len)


def family_slug(label: str) -> str:
    """'Color Center-Surround' → 'color_center_surround' (the Distill article's anchors)."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _tags(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, tag) for each ``<...>`` of at most MAX_TAG characters with no ``<`` inside, in order; linear:
    the next ``>`` is looked for again only once the scan has passed the last one found."""
    gt = -1
    lt = text.find("<")
    while lt != -1:
        nxt = text.find("<", lt + 1)
        if gt <= lt:
            gt = text.find(">", lt + 1)
            if gt == -1:
                return
        if (nxt == -1 or gt < nxt) and gt - lt <= MAX_TAG:
            yield lt, gt + 1, text[lt : gt + 1]
        if nxt == -1:
            return
        lt = nxt


def _parse(tag: str, links: bool) -> tuple[bool, str, str | None]:
    """(closing, lower-case name, href if ``links``) of a tag; name '' when it is not a tag (``<3``, ``< b>``)."""
    m = _NAME.match(tag, 1)
    if m is None:
        return False, "", None
    end = m.end()
    if end < len(tag) - 1 and not (tag[end].isspace() or tag[end] == "/"):
        return False, "", None
    href = None
    if links and m.group(2).lower() == "a" and not m.group(1):
        h = _HREF.search(tag, end)
        if h is not None:
            href = h.group(1) if h.group(1) is not None else h.group(2)
    return bool(m.group(1)), m.group(2).lower(), href


def _md_text(text: str) -> str:
    return unescape(text).strip().replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _link(href: str, text: str, model: str) -> str:
    href, text = unescape(href).strip(), _md_text(text)
    family = _FAMILY.match(href)
    if family and model:
        return f"[{text}](/n/{model}/{family.group(1)}?family={family.group(2)})"
    if href.startswith(("https://", "http://")) and " " not in href and ")" not in href:
        return f"[{text}]({href})"
    return text


def _convert(body: str, model: str, links: bool, codes: bool) -> tuple[str, int, int]:
    """One pass: (Markdown, where an unclosed <a> began or -1, where an unclosed <code> began or -1)."""
    out: list[str] = []
    pos = 0
    inner: list[str] | None = None  # the text of the open <a> or <code>
    opened = ("", 0, "")  # (which, where, href)
    for start, end, tag in _tags(body):
        closing, name, href = _parse(tag, links and inner is None)
        if not name:
            continue  # "<3 >": text
        text = body[pos:start]
        pos = end
        if inner is not None:
            inner.append(text)
            if closing and name == opened[0]:
                content = "".join(inner)
                if name == "a":
                    out.append(_link(opened[2], content, model))
                else:
                    out.append("`" + unescape(content).replace("`", "") + "`")
                inner = None
            continue  # any other tag inside a link or code is dropped (its text is kept)
        out.append(text)
        if closing:
            continue
        if name == "a" and href is not None and links:
            inner, opened = [], ("a", start, href)
        elif name == "code" and codes and tag.lower() == "<code>":
            inner, opened = [], ("code", start, "")
        elif name == "br":
            out.append("  \n")
    if inner is not None:  # never closed: the text from there on is read again as if that tag were not there
        where = opened[1]
        return "".join(out), (where if opened[0] == "a" else -1), (where if opened[0] == "code" else -1)
    out.append(body[pos:])
    return "".join(out), -1, -1


def from_distill(body: str, model: str) -> str:
    """The families' HTML as Markdown (links to this server's layer pages, or plain text); linear in the body."""
    body = body[:MAX_TEXT]
    links = codes = True
    head: list[str] = []
    while True:  # at most three passes: an unclosed <a> means no </a> follows, likewise <code>
        text, open_a, open_code = _convert(body, model, links, codes)
        if open_a < 0 and open_code < 0:
            return "".join(head) + text
        head.append(text)
        cut = max(open_a, open_code)
        end = body.find(">", cut) + 1
        body = body[end:]
        links = links and open_a < 0
        codes = codes and open_code < 0


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")


def render_uncached(body: str, model: str = "") -> Markup:
    return Markup(_md().render(from_distill(body or "", model)))


def render(body: str, model: str = "") -> Markup:
    """Sanitised HTML for a claim body or a circuit description (from the cache when it was rendered before)."""
    key = (hashlib.sha256((body or "").encode("utf-8", "surrogatepass")).digest(), model)
    html = CACHE.get(key)
    if html is None:
        html = render_uncached(body, model)
        CACHE.put(key, html)
    return html
