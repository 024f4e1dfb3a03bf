"""Reading qBittorrent's answers: ``sync/maindata`` increments and torrents/info, shape-checked.

An answer that parsed but has an unexpected shape raises ``_Shape``; the
client sorts it into ``SourceError(kind="bad_response")``.
"""

from __future__ import annotations

from qbt_vpn_watchdog.sources import TorrentBrief


def parse_tags(value: object) -> tuple[str, ...]:
    """qBittorrent's "a, b" tag string as a tuple."""
    if not isinstance(value, str):
        raise _Shape("torrent tags is not a string")
    return tuple(t.strip() for t in value.split(",") if t.strip())


class _Shape(ValueError):
    """An answer that parsed but has an unexpected shape."""


def _get(d: object, key: str, typ: type | tuple[type, ...], what: str):
    if not isinstance(d, dict):
        raise _Shape(f"{what} is not a JSON object")
    if key not in d:
        raise _Shape(f"{what} has no {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise _Shape(f"{what}[{key!r}] is {type(v).__name__}, expected {_tname(typ)}")
    return v


def _tname(typ) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _torrents(raw: object) -> tuple[TorrentBrief, ...]:
    if not isinstance(raw, list):
        raise _Shape("torrents/info is not a JSON list")
    out = []
    for i, t in enumerate(raw):
        what = f"torrents/info[{i}]"
        out.append(
            TorrentBrief(
                hash=_get(t, "hash", str, what),
                name=_get(t, "name", str, what),
                state=_get(t, "state", str, what),
                tags=parse_tags(_get(t, "tags", str, what)),
            )
        )
    return tuple(out)


# What the watchdog keeps of sync/maindata.
_SERVER_FIELDS = {
    "connection_status": str,
    "dht_nodes": int,
    "dl_info_speed": int,
    "up_info_speed": int,
    "dl_info_data": int,
    "up_info_data": int,
}


_TORRENT_FIELDS = ("name", "state", "tags")


class MainData:
    """qBittorrent's ``sync/maindata``, kept up to date from its increments.

    The first answer (and any with ``full_update``) is complete; later ones,
    asked with the last ``rid``, carry only what changed. With 2,000 torrents
    a full torrents/info is about 3.6 MB of JSON per cycle; the increments are
    a few bytes per torrent that changed. Only the server fields above and
    name/state/tags are kept, each torrent as one TorrentBrief rebuilt only
    when one of those changed. An answer that does not fit is an error and
    the next one is asked from scratch (rid 0).
    """

    def __init__(self) -> None:
        self.rid = 0
        self.server: dict[str, object] = {}
        self.torrents: dict[str, TorrentBrief] = {}

    def apply(self, raw: object) -> None:
        try:
            self._apply(raw)
        except _Shape:
            self.__init__()
            raise

    def _apply(self, raw: object) -> None:
        what = "sync/maindata"
        rid = _get(raw, "rid", int, what)
        full = raw.get("full_update") is True  # type: ignore[union-attr]
        server = {} if full else dict(self.server)
        torrents = {} if full else dict(self.torrents)
        state = raw.get("server_state", {})  # type: ignore[union-attr]
        for key, typ in _SERVER_FIELDS.items():
            if isinstance(state, dict) and key in state:
                server[key] = _get(state, key, typ, f"{what} server_state")
        missing = [k for k in _SERVER_FIELDS if k not in server]
        if missing:
            raise _Shape(f"{what} server_state has no {', '.join(missing)}")
        changed = raw.get("torrents", {})  # type: ignore[union-attr]
        if not isinstance(changed, dict):
            raise _Shape(f"{what} torrents is not a JSON object")
        for h, fields in changed.items():
            where = f"{what} torrents[{h[:12]}]"
            if not isinstance(fields, dict):
                raise _Shape(f"{where} is not a JSON object")
            if not any(k in fields for k in _TORRENT_FIELDS):
                continue  # rates and times only: nothing we keep changed
            old = torrents.get(h)
            if old is None and not all(k in fields for k in _TORRENT_FIELDS):
                raise _Shape(f"{where} is new but lacks name, state or tags")
            torrents[h] = TorrentBrief(
                hash=h,
                name=_get(fields, "name", str, where) if "name" in fields else old.name,
                state=_get(fields, "state", str, where) if "state" in fields else old.state,
                tags=parse_tags(_get(fields, "tags", str, where)) if "tags" in fields else old.tags,
            )
        removed = raw.get("torrents_removed", [])  # type: ignore[union-attr]
        if not isinstance(removed, list):
            raise _Shape(f"{what} torrents_removed is not a JSON list")
        for h in removed:
            torrents.pop(h, None)
        self.rid, self.server, self.torrents = rid, server, torrents
