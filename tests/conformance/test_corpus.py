"""Cedar's conformance data: every case's decision, reasons and errors must match.

The data is Cedar's public integration-test repository, found only through TETHER_CEDAR_CORPUS
(`.ci/run` sets it and fails when the data is missing). The cases tether refuses and the
validation verdicts that differ only by Cedar's newer warning are listed exactly, case by case,
in `corpus_expected.json`: any change to either list fails the test until the list is updated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.corpus import MISSING, Tally, corpus_root, run_case, unpack_generated

CORPUS = corpus_root()
if CORPUS is None:
    pytest.skip(MISSING, allow_module_level=True)
EXPECTED = json.loads((Path(__file__).parent / "corpus_expected.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def corpus() -> Path:
    assert CORPUS is not None
    assert (CORPUS / "corpus-tests.tar.gz").is_file(), (
        f"TETHER_CEDAR_CORPUS={CORPUS} holds no corpus-tests.tar.gz"
    )
    return CORPUS


def test_hand_written_cases(corpus: Path) -> None:
    tally = Tally()
    cases = sorted((corpus / "tests").rglob("*.json"))
    assert cases, "no hand-written cases found"
    for c in cases:
        run_case(c, corpus, tally)
    print("\nhand-written " + tally.summary())
    assert not tally.failures, "\n".join(tally.failures[:50])
    assert not tally.skipped, f"hand-written cases skipped: {tally.skipped}"
    assert not tally.validator_version_diffs, tally.validator_version_diffs


def test_generated_corpus(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = unpack_generated(corpus, tmp_path_factory.mktemp("cedar-corpus"))
    cases = sorted(
        p for p in (root / "corpus-tests").glob("*.json") if not p.name.endswith(".entities.json")
    )
    assert len(cases) > 6000, f"expected ~6,200 generated cases, found {len(cases)}"
    tally = Tally()
    for c in cases:
        run_case(c, root, tally)
    summary = "generated " + tally.summary()
    print("\n" + summary)
    assert not tally.failures, f"{summary}\n" + "\n".join(tally.failures[:50])
    assert tally.skipped == EXPECTED["skipped"], summary
    assert sorted(tally.validator_version_diffs) == EXPECTED["validator_warning_only"], summary
