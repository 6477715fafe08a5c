"""Where receipt lines go: a rotating JSONL file (default) or a callable."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class Sink(Protocol):
    """Receives encoded receipt lines (no trailing newline), in order, from one thread."""

    def write(self, lines: list[bytes]) -> None: ...

    def wants_rotation(self) -> bool: ...

    def rotate(self) -> None: ...

    def tail(self) -> bytes | None:
        """The last complete line already in the sink (to continue its chain), if any."""
        ...

    def close(self) -> None: ...


class JsonlFileSink:
    """Appends lines to `path`; past `max_bytes` the file is renamed `path.N` (N counting
    up from 1) and a new one started. At most `max_files` rotated files are kept (0: all).
    Each write is flushed to the OS; `fsync=True` also forces it to disk."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_files: int = 0,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        self._size = self._file.tell()

    def write(self, lines: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        self._file.write(data)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._size += len(data)

    def wants_rotation(self) -> bool:
        return self._size >= self.max_bytes

    def rotated(self) -> list[Path]:
        """Rotated files, oldest first."""
        found = []
        for p in self.path.parent.glob(self.path.name + ".*"):
            suffix = p.name[len(self.path.name) + 1 :]
            if suffix.isdigit():
                found.append((int(suffix), p))
        return [p for _, p in sorted(found)]

    def rotate(self) -> None:
        self._file.close()
        old = self.rotated()
        n = int(old[-1].name.rsplit(".", 1)[1]) + 1 if old else 1
        self.path.rename(self.path.with_name(f"{self.path.name}.{n}"))
        old = self.rotated()
        if self.max_files > 0:
            for p in old[: max(0, len(old) - self.max_files)]:
                p.unlink()
        self._file = open(self.path, "ab")
        self._size = 0

    def tail(self) -> bytes | None:
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            pos = max(0, end - 65536)
            f.seek(pos)
            chunk = f.read()
        lines = [line for line in chunk.split(b"\n") if line]
        if not lines or not chunk.endswith(b"\n"):
            # An unterminated last line is a torn write: do not chain onto it.
            return None if not lines else _torn(self.path)
        return lines[-1]

    def close(self) -> None:
        self._file.close()


def _torn(path: Path) -> bytes:
    from tether.audit.errors import AuditError

    raise AuditError(f"{path}: last line is incomplete (torn write); run `tether audit verify`")


class CallableSink:
    """Calls `fn(line)` for each encoded line, from the writer thread."""

    def __init__(self, fn: Callable[[bytes], object]) -> None:
        self.fn = fn

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            self.fn(line)

    def wants_rotation(self) -> bool:
        return False

    def rotate(self) -> None:
        pass

    def tail(self) -> bytes | None:
        return None

    def close(self) -> None:
        pass
