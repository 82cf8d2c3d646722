"""A strict ``multipart/form-data`` reader for the one form that posts a file (the layer page's caricature
upload). The body is bounded before it is read (kb.web.body_limit), so it is parsed whole, in memory: only
parts with a ``Content-Disposition: form-data; name="..."`` header, at most ``max_parts`` of them, each name
once; a text field's value at most ``max_field`` bytes of UTF-8. Anything else is refused (Refused, 400), never
guessed at. The client's ``Content-Type`` of a file part is ignored: what the bytes are is decided by reading
them (kb.render.uploads)."""

from __future__ import annotations

import re
from dataclasses import dataclass

BOUNDARY = re.compile(
    r'(?i)^multipart/form-data\s*;(?:.*;)?\s*boundary=(?:"([^"]{1,70})"|([0-9A-Za-z\'()+_,\-./:=?]{1,70}))\s*(?:;.*)?$'
)
NAME = re.compile(r'(?i)(?:^|;)\s*name="([^"\r\n]{1,100})"')
FILENAME = re.compile(r'(?i);\s*filename="([^"\r\n]{0,255})"')


class BadMultipart(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None  # a file part (the client's name for it: shown, never used as a path)


def boundary_of(content_type: str) -> bytes:
    m = BOUNDARY.match(content_type.strip())
    if m is None:
        raise BadMultipart("the post is not multipart/form-data with a boundary")
    return (m.group(1) or m.group(2)).encode("ascii")


def parse(body: bytes, content_type: str, max_parts: int = 8, max_field: int = 4096) -> dict[str, Part]:
    """The parts by name; BadMultipart when the body is not well-formed form data."""
    delimiter = b"--" + boundary_of(content_type)
    if not body.startswith(delimiter):
        raise BadMultipart("the form data does not start with its boundary")
    pieces = body[len(delimiter) :].split(b"\r\n" + delimiter)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise BadMultipart("the form data does not end with its closing boundary")
    if len(pieces) - 1 > max_parts:
        raise BadMultipart(f"the form has more than {max_parts} parts")
    parts: dict[str, Part] = {}
    for piece in pieces[:-1]:
        if not piece.startswith(b"\r\n"):
            raise BadMultipart("a form part does not start on its own line")
        head, sep, data = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise BadMultipart("a form part has no end to its headers")
        disposition = None
        for line in head.split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                raise BadMultipart("a form part's header is not 'Name: value'")
            if key.strip().lower() == b"content-disposition":
                disposition = value.decode("utf-8", "replace").strip()
        if disposition is None or not disposition.lower().startswith("form-data"):
            raise BadMultipart("a form part is not form-data")
        name = NAME.search(disposition)
        if name is None:
            raise BadMultipart("a form part has no name")
        filename = FILENAME.search(disposition)
        if name.group(1) in parts:
            raise BadMultipart(f"the form has two parts named {name.group(1)!r}")
        if filename is None and len(data) > max_field:
            raise BadMultipart(f"the form field {name.group(1)!r} is too long")
        parts[name.group(1)] = Part(name.group(1), data, filename.group(1) if filename else None)
    return parts


def text(parts: dict[str, Part], name: str) -> str:
    """A text field's value ('' when absent); BadMultipart when it is a file or not UTF-8."""
    part = parts.get(name)
    if part is None:
        return ""
    if part.filename is not None:
        raise BadMultipart(f"the form field {name!r} is a file")
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMultipart(f"the form field {name!r} is not UTF-8") from None
