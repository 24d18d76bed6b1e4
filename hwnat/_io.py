"""File helpers every layer uses: atomic writes and JSON reads whose errors name the file.

Atomic writes (temp file in the same directory + ``os.replace``) mean a reader, a crash or a ``kill -9``
never sees a half-written table, dataset, checkpoint or result.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from hwnat.errors import BadInputError


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``; a file that
    already exists keeps its permissions.

    Raises:
        BadInputError: the file or its folder cannot be written (names the path).
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BadInputError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def read_json(path: str | os.PathLike, what: str = "file"):
    """Parse a JSON file; every failure is a ``BadInputError`` naming the file and what it should be.

    Args:
        path: the file.
        what: what the file should be, for messages (``"latency table"``, ``"model file"``...).

    Example:
        >>> read_json("/nonexistent.json", "latency table")  # doctest: +SKIP
        BadInputError: /nonexistent.json: latency table not found
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a directory, expected a {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read {what}: {e}") from None
    if not text.strip():
        raise BadInputError(f"{path}: not valid JSON: the {what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path}: not valid JSON (truncated or corrupt?) at line {e.lineno} column "
                            f"{e.colno}: {e.msg}") from None
