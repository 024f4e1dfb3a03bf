"""Set the keys qBittorrent must have before it starts, keeping every other key.

Usage: qbittorrent-settings.py SETTINGS_JSON QBITTORRENT_CONF

SETTINGS_JSON holds {"Section": {"Key\\\\Sub": value}}. The confinement module
enforces the tunnel binding, the forwarded port and the WebUI address this way
at every start; whatever the user changed in the WebUI (save paths,
categories, the password) survives, because qBittorrent rewrites this file
itself and the module must not take it over. Written atomically, mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")


def render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value).replace("\n", "\\n")
    raise SystemExit(f"qbittorrent-settings: unsupported value {value!r}")


def merge(text: str, settings: dict[str, dict[str, object]]) -> str:
    """The file with each settings key replaced in place or appended to its section."""
    lines = text.splitlines()
    pending = {s: dict(keys) for s, keys in settings.items()}
    out: list[str] = []
    section: str | None = None

    def flush(name: str | None) -> None:
        # Keys of the section just left that were not in the file yet, before
        # the blank lines that separate it from the next section.
        if name is None:
            return
        missing = pending.pop(name, {})
        blanks = []
        while out and out[-1].strip() == "":
            blanks.append(out.pop())
        out.extend(f"{key}={render(value)}" for key, value in missing.items())
        out.extend(blanks)

    for line in lines:
        m = SECTION.match(line)
        if m:
            flush(section)
            section = m.group("name")
            out.append(line)
            continue
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if section is not None and key is not None and key in pending.get(section, {}):
            out.append(f"{key}={render(pending[section].pop(key))}")
            continue
        out.append(line)
    flush(section)
    for name, keys in pending.items():
        if keys:
            out.extend(["", f"[{name}]"] + [f"{k}={render(v)}" for k, v in keys.items()])
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        settings = json.load(f)
    path = argv[2]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".qBittorrent.conf.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(merge(text, settings))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
