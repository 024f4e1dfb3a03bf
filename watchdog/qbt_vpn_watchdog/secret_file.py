"""Reading a secret (the WebUI password) from a file, carefully.

- The last component is opened with ``O_NOFOLLOW``: a symlink planted where
  the password file should be cannot point the watchdog (root) at another
  file, whose first line would then be sent to qBittorrent as a password.
  NixOS secret managers (agenix, sops-nix) link ``/run/agenix/x`` to the real
  file: point the config at the target, or use ``LoadCredential=``, which
  copies it (the NixOS module does).
- Regular files only (``O_NONBLOCK`` so that a FIFO cannot hang the open),
  and at most ``MAX_SECRET_BYTES``: a password is not megabytes.
- A warning (once per file and mode) when group or others may read it.

Errors are ``SecretFileError`` with a message that names the path and what is
wrong, never the content. ``FileNotFoundError`` passes through unchanged.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SECRET_BYTES = 4096
_warned: set[tuple[str, int]] = set()


class SecretFileError(ValueError):
    """The file cannot be used as a secret; ``str()`` names the path and why."""


def read_secret_file(path: str | os.PathLike) -> str:
    """The file's text with one trailing newline stripped (see the module doc)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SecretFileError(
                f"{p} is a symbolic link (refused: name the file itself, or pass it with "
                "systemd's LoadCredential=)"
            ) from None
        raise SecretFileError(f"cannot open {p}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{p} is not a regular file")
        if st.st_size > MAX_SECRET_BYTES:
            raise SecretFileError(
                f"{p} is {st.st_size} bytes, more than a password file's {MAX_SECRET_BYTES}"
            )
        _warn_if_readable(p, st.st_mode)
        data = b""
        while len(data) <= MAX_SECRET_BYTES:
            chunk = os.read(fd, MAX_SECRET_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_SECRET_BYTES:
            raise SecretFileError(f"{p} grew past a password file's {MAX_SECRET_BYTES} bytes")
    except OSError as e:
        raise SecretFileError(f"cannot read {p}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{p} is not UTF-8 text") from None
    return text.rstrip("\r\n")


def _warn_if_readable(p: Path, mode: int) -> None:
    if mode & (stat.S_IRGRP | stat.S_IROTH) and (str(p), mode) not in _warned:
        _warned.add((str(p), mode))
        who = " and ".join(
            w
            for w, bit in (("its group", stat.S_IRGRP), ("every user", stat.S_IROTH))
            if mode & bit
        )
        log.warning(
            "%s can be read by %s (mode %04o): a password file should be 0600 or 0400",
            p, who, stat.S_IMODE(mode),
        )  # fmt: skip
