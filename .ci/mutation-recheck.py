"""Re-check surviving mutmut mutants against chosen test files, without a new mutmut run.

Run from a mutmut work directory's ``mutants/`` folder (the copy .ci/mutation-python makes):
``PYTHONPATH=$PWD/src python <repo>/.ci/mutation-recheck.py NAMES.txt OUT.txt TEST_FILE...``.
NAMES.txt holds one mutant name a line (as in ``mutmut results``); each is activated through
``MUTANT_UNDER_TEST`` (the variable mutmut's trampolines read) and the test files are run
in this one process with ``-x``. OUT.txt gets ``NAME: killed`` (a test failed),
``NAME: survived`` or ``NAME: rcN`` (pytest could not run: look at it by hand).
"""

from __future__ import annotations

import os
import sys

import pytest


def main() -> None:
    names = [line.strip() for line in open(sys.argv[1]) if line.strip()]
    files = sys.argv[3:]
    with open(sys.argv[2], "w") as out:
        for name in names:
            os.environ["MUTANT_UNDER_TEST"] = name
            rc = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *files]))
            verdict = {0: "survived", 1: "killed"}.get(rc, f"rc{rc}")
            out.write(f"{name}: {verdict}\n")
            out.flush()


if __name__ == "__main__":
    main()
