"""Counts in good grammar (issue 24 item 7: "1 units", "1 reviews"): every count a template shows next to its
noun goes through the one `plural` helper, none through a hand-made "s" that the next edit may forget."""

import re
from pathlib import Path

from kb.web.templating import noun, plural

TEMPLATES = Path(__file__).resolve().parent.parent / "kb" / "web" / "templates"
HAND_MADE = [
    re.compile(r"""\{\{\s*["']s["']\s+if\b"""),  # word{{ "s" if n != 1 }}
    re.compile(r"""\{\{\s*["']{2}\s+if\b[^}]*\belse\s+["']s["']\s*\}\}"""),  # word{{ '' if n == 1 else 's' }}
]
# a count printed straight before a plural noun: {{ x|length }} units
COUNT_THEN_NOUN = re.compile(
    r"\{\{[^{}]*(?:length|[cC]ount|total|units)[^{}]*\}\}\s+(?:units|reviews|claims|edges|circuits|revisions|layers|"
    r"renders|neurons|inputs|outputs|entries|models|pictures|jobs)\b"
)


def test_the_helper():
    assert plural(1, "unit") == "1 unit" and plural(2, "review") == "2 reviews" and plural(0, "edge") == "0 edges"
    assert plural(1024, "unit") == "1,024 units" and plural(3, "entry", "entries") == "3 entries"
    assert noun(1, "claim") == "claim" and noun(0, "claim") == "claims" and noun(2, "entry", "entries") == "entries"


def test_templates_say_counts_through_plural():
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if any(p.search(line) for p in HAND_MADE) or COUNT_THEN_NOUN.search(line):
                found.append(f"{path.relative_to(TEMPLATES)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
