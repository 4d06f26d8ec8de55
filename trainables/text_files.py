"""Reading a user's text data file as UTF-8 with the one-line errors every family gives: a file
that cannot be read, or bytes that are not UTF-8 (with the line they sit on)."""
from __future__ import annotations

from typing import Any

from smctune.errors import UserError


def read_utf8(path: Any) -> str:
    """The file's text, a leading BOM dropped. ``path`` is a Path or an importlib resources
    Traversable (bundled samples)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read data file {path}: {err.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 ({err.reason} at byte {err.start})") from None
