"""One request head (the request line and headers) parsed; GET and HEAD carry no body."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    version: str
    headers: dict[str, str]


class _BadRequest(Exception):
    pass


def parse_head(raw: bytes) -> _Head:
    """The request line and headers of one request head (without the blank line)."""
    lines = raw.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest("bad header line")
        headers[name.lower()] = value.strip()
    return _Head(parts[0], parts[1], parts[2], headers)
