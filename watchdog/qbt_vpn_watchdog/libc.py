"""The C library, for the two calls Python 3.11 has no wrapper for: setns(2), malloc_trim(3).

One handle, opened on first use (not at import: a command that never enters a
namespace or trims never loads it) and shared by both. ``ctypes.CDLL(None)``
is the libraries the interpreter is already linked with, libc among them: no
file name to guess, and no ``ldconfig`` subprocess (``ctypes.util.find_library``
runs one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any

_lock = threading.Lock()
_handle: Any = None  # the ctypes.CDLL, once opened
_functions: dict[str, Any] = {}  # name -> typed C function, or None where there is none


def _function(name: str, argtypes: tuple, restype: type) -> Any:
    """The C library's ``name`` with its types set, or None where it has none."""
    fn = _functions.get(name, _lock)  # _lock: not looked up yet
    if fn is not _lock:
        return fn
    global _handle
    with _lock:
        if name not in _functions:
            try:
                if _handle is None:
                    _handle = ctypes.CDLL(None, use_errno=True)
                fn = getattr(_handle, name)
            except (OSError, AttributeError):
                fn = None
            else:
                fn.argtypes, fn.restype = argtypes, restype
            _functions[name] = fn
        return _functions[name]


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace ``fd`` refers to.

    ``OSError`` with the call's errno when it fails (ENOSYS where the C library
    has no setns).
    """
    fn = _function("setns", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    if fn is None:
        raise OSError(errno.ENOSYS, "the C library has no setns")
    if fn(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def malloc_trim() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim(0)``).

    False, and nothing done, where the C library has none (musl): it saves
    memory, nothing depends on it, so its absence is no error.
    """
    fn = _function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if fn is None:
        return False
    fn(0)
    return True
