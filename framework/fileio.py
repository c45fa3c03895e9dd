"""Writing the files a command produces without losing what was there.

``write_atomic`` replaces a regular file whole or not at all (a temporary file beside it,
renamed), writes through a symbolic link to the file it names (the link stays a link), and writes
to a special file (``/dev/stdout``, a FIFO) the ordinary way: a rename would replace the device
node itself. ``publish_dir`` gives a folder made by ``tempfile.mkdtemp`` (mode 0700) the
permissions of an ordinary ``mkdir`` before it is renamed into place, so a shared model is
readable by whoever may read its parent.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` (see the module docstring); the path written (the link's
    target for a symbolic link)."""
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        st = os.stat(path)  # of what a symbolic link points at
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):  # a device, a FIFO: write into it
        with open(path, mode) as f:
            f.write(data)
        return Path(path)
    target = Path(os.path.realpath(path))
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            f.write(data)
        if st is not None:  # the replaced file's permissions, not the temporary file's
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def publish_dir(folder: Path) -> None:
    """Give ``folder`` the mode ``mkdir`` would (0777 less the umask), and its files 0666 less
    the umask: ``tempfile.mkdtemp`` makes a folder only its owner can read, and safetensors
    writes its files 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, once both are resolved (symbolic links
    and ``..`` followed)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def checksum(path: str | Path) -> str:
    """A checksum of the bytes of ``path`` (BLAKE2b, 128 bits, hex): read in blocks, never
    whole; about 1 GB/s."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def json_checksum(value: object) -> str:
    """A checksum of ``value`` as canonical JSON (keys sorted)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
