"""The example config, rendered from the schema: every key, its default, its help line."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path

from qbt_vpn_watchdog.config.schema import Config


def example_path() -> Path:
    """The shipped example: ``render_example()``'s output (a test keeps it so)."""
    # Beside the package's modules, not in config/: packaging and docs name it there.
    return Path(__file__).parent.parent / "example.toml"


def _doc(cls: type) -> list[str]:
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):  # dataclass's generated signature: no docstring
        return []
    return inspect.cleandoc(doc).splitlines()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the values the schema allows
    if isinstance(value, list):
        return "[" + ", ".join(_toml(x) for x in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _render_table(cls: type, path: str, out: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    scalars = [f for f in fields if not dataclasses.is_dataclass(hints[f.name])]
    defaults = cls()
    if path:
        out.append("")
        out += [f"# {line}".rstrip() for line in _doc(cls)]
        if scalars:
            out.append(f"[{path}]")
    for f in scalars:
        out.append(f"# {f.metadata['help']}")
        if f.metadata.get("instead"):
            out.append(f"# On a new host, replace the line below with: {f.metadata['instead']}")
        out.append(f"{f.name} = {_toml(getattr(defaults, f.name))}")
    for f in fields:
        if dataclasses.is_dataclass(hints[f.name]):
            _render_table(hints[f.name], f"{path}.{f.name}" if path else f.name, out)


def render_example() -> str:
    """The example config, from the schema: every key with its default and its meaning."""
    out = [f"# {line}".rstrip() for line in _doc(Config)]
    _render_table(Config, "", out)
    return "\n".join(out) + "\n"
