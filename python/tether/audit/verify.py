"""`tether audit verify`: check a receipt log's hash chain and checkpoints.

Finds and locates: a line that is not a receipt (torn or edited into invalid JSON), an
edited line (the next line's `prev` does not match), an inserted, deleted or reordered
line (sequence numbers and `prev` break), a log that does not start with an `open`
checkpoint (its beginning was cut), a log that does not end with a `close` checkpoint
(cut at the end, or still being written), bad checkpoint signatures, and drops recorded
by the "drop" overflow policy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from tether.audit.records import (
    CHECKPOINT_KINDS,
    DECODER,
    GENESIS,
    Receipt,
    checkpoint_signature_ok,
    key_id,
    line_hash,
)


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Report:
    decisions: int = 0
    checkpoints: int = 0
    signed: int = 0
    dropped: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    paths: Sequence[str | os.PathLike[str]],
    *,
    public_key: ec.EllipticCurvePublicKey | None = None,
    allow_open: bool = False,
) -> Report:
    """Verify one log, or several files of one log in order (rotated files first)."""
    rep = Report()
    prev: str | None = None  # hash of the previous line, across files
    seq: int | None = None
    last: Receipt | None = None
    last_where = ("", 0)
    kid = key_id(public_key) if public_key is not None else None
    for path in paths:
        name = str(path)
        data = Path(path).read_bytes()
        if data and not data.endswith(b"\n"):
            n = data.count(b"\n") + 1
            rep.problems.append(Problem(name, n, "last line is incomplete (file truncated)"))
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for i, raw in enumerate(lines, start=1):
            try:
                r = DECODER.decode(raw)
            except msgspec.DecodeError as e:
                if not (i == len(lines) and not data.endswith(b"\n")):
                    rep.problems.append(Problem(name, i, f"not a receipt ({e})"))
                prev = None  # cannot chain past an unreadable line
                seq = None
                continue
            where = f"seq {r.seq}"
            if prev is None and seq is None and last is None:
                # First readable line of the log.
                if r.kind != "open":
                    rep.problems.append(
                        Problem(
                            name,
                            i,
                            f"log does not start with an open checkpoint ({where}):"
                            " its beginning was cut",
                        )
                    )
                elif r.prev != GENESIS:
                    rep.notes.append(f"{name}:{i}: continues an earlier log (seq {r.seq})")
            elif prev is not None and r.prev != prev:
                if seq is not None and r.seq == seq + 1:
                    rep.problems.append(
                        Problem(
                            name,
                            i - 1 if i > 1 else i,
                            f"record edited: its hash does not match `prev` of the next line"
                            f" ({where})",
                        )
                    )
                else:
                    rep.problems.append(Problem(name, i, _seq_problem(seq, r.seq)))
            elif seq is not None and r.seq != seq + 1:
                rep.problems.append(Problem(name, i, _seq_problem(seq, r.seq)))
            if r.kind == "open" and last is not None and last.kind != "close":
                rep.problems.append(
                    Problem(
                        name,
                        i,
                        f"log reopened without a close checkpoint before it ({where}):"
                        " the writer crashed or records were cut",
                    )
                )
            if r.kind in CHECKPOINT_KINDS:
                rep.checkpoints += 1
                if r.head != r.prev:
                    rep.problems.append(
                        Problem(name, i, f"checkpoint edited: head does not match prev ({where})")
                    )
                if r.count is not None and r.count < rep.decisions and r.kind != "open":
                    rep.problems.append(
                        Problem(
                            name,
                            i,
                            f"checkpoint counts {r.count} decisions, "
                            f"{rep.decisions} seen ({where})",
                        )
                    )
                rep.dropped = max(rep.dropped, r.dropped or 0)
                if public_key is not None:
                    if r.sig is None:
                        rep.problems.append(Problem(name, i, f"checkpoint not signed ({where})"))
                    elif r.kid is not None and r.kid != kid:
                        rep.problems.append(
                            Problem(name, i, f"checkpoint signed by another key {r.kid}")
                        )
                    elif not checkpoint_signature_ok(public_key, r):
                        rep.problems.append(Problem(name, i, f"bad checkpoint signature ({where})"))
                    else:
                        rep.signed += 1
            elif r.kind == "decision":
                rep.decisions += 1
            else:
                rep.problems.append(Problem(name, i, f"unknown record kind {r.kind!r}"))
            prev = line_hash(raw)
            seq = r.seq
            last = r
            last_where = (name, i)
    if last is None:
        rep.problems.append(Problem(str(paths[-1]) if paths else "-", 0, "no receipts"))
    elif last.kind != "close":
        msg = (
            f"log does not end with a close checkpoint after seq {last.seq}: "
            "truncated, or still being written"
        )
        if allow_open:
            rep.notes.append(f"{last_where[0]}:{last_where[1]}: {msg}")
        else:
            rep.problems.append(Problem(last_where[0], last_where[1], msg))
    if rep.dropped:
        rep.notes.append(f"{rep.dropped} decisions were dropped by the overflow policy")
    return rep


def _seq_problem(before: int | None, now: int) -> str:
    if before is None:
        return f"chain broken before seq {now}"
    if now <= before:
        return f"seq {now} after seq {before}: record inserted or reordered"
    return f"seq {now} after seq {before}: {now - before - 1} record(s) missing (deleted or moved)"
