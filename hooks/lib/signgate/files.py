"""Reading the small files signgate depends on without ever blocking on one.

A plain `open()` of a named pipe (FIFO) waits for a writer that may never come, and a device
can return endless bytes. A hook that hangs answers nobody, so the configuration, key files,
credentials and cache entries are opened with O_NONBLOCK (opening a FIFO then returns at once)
and checked with fstat on the open descriptor: only a regular file is read. Checking the open
descriptor, not the path, leaves no window for the path to be swapped in between.

Standard library only. fastpath.py keeps its own copy of `read_regular` (it must import nothing
new before it answers); keep the two in step.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file. `strerror` says what it is."""


def read_regular(path: str, limit: int, *, follow_symlinks: bool = True) -> bytes:
    """At most `limit` + 1 bytes of the regular file at `path` (one more than the limit, so that
    callers can tell a file that is too large). Raises OSError, NotRegularFile included.

    `follow_symlinks=False` refuses a symbolic link as the last component (ELOOP): for files
    signgate writes itself, such as cache entries. Mounted Secrets and ConfigMaps are symbolic
    links, so configuration and key files are followed.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # what open() would have said
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind_of(mode)})", path)
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a file"
