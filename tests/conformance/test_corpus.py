"""Cedar's conformance data: every case's decision, reasons and errors must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.corpus import CORPUS, Tally, run_case, unpack_generated


def test_corpus_is_present() -> None:
    assert (CORPUS / "corpus-tests.tar.gz").is_file(), f"Cedar corpus not found at {CORPUS}"


def test_hand_written_cases() -> None:
    tally = Tally()
    cases = sorted((CORPUS / "tests").rglob("*.json"))
    assert cases, "no hand-written cases found"
    for c in cases:
        run_case(c, CORPUS, tally)
    print("\nhand-written " + tally.summary())
    assert not tally.failures, "\n".join(tally.failures[:50])
    assert not tally.skipped, f"hand-written cases skipped: {dict(tally.skipped)}"


def test_generated_corpus(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = unpack_generated(tmp_path_factory.mktemp("cedar-corpus"))
    cases = sorted(
        p for p in (root / "corpus-tests").glob("*.json") if not p.name.endswith(".entities.json")
    )
    assert len(cases) > 6000, f"expected ~6,200 generated cases, found {len(cases)}"
    tally = Tally()
    for c in cases:
        run_case(c, root, tally)
    summary = "generated " + tally.summary()
    print("\n" + summary)
    Path(root / "summary.txt").write_text(summary)
    assert not tally.failures, f"{summary}\n" + "\n".join(tally.failures[:50])
    skipped = sum(tally.skipped.values())
    assert skipped < 0.05 * (tally.ran + skipped), summary
