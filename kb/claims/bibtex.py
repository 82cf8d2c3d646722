"""BibTeX for the citations of neurons, claims and circuits: entry keys and TeX-escaped text (the GraphQL
citations in kb.schema and the application layer's in kb.app.graph_reads write their entries with these)."""

from __future__ import annotations


def bib_key(text: str) -> str:
    """A BibTeX entry key: the text with every non-alphanumeric character as '_'."""
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


# every character TeX gives a meaning: escaped, \ ^ ~ by name (``\input^^7b...`` must not reach a LaTeX build)
_TEX = {
    **{ch: "\\" + ch for ch in "{}&%$#_"},
    "\\": "\\textbackslash{}",
    "^": "\\textasciicircum{}",
    "~": "\\textasciitilde{}",
}


def bib_escape(text: str) -> str:
    """Text with every TeX special character escaped: {}&%$#_ with a backslash, \\ ^ ~ as their names."""
    return "".join(_TEX.get(ch, ch) for ch in text)
