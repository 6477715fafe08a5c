"""Any policy text loads or raises PolicyError; nothing crashes the process.

Cases: hostile shapes (deep nesting, long operator chains, long `has` paths, nested records,
expressions at the depth limit evaluated on a small thread stack) and seeded mutations of
corpus-like policies, run for a fixed time budget (TETHER_FUZZ_SECONDS, default 30). Each case
runs in a worker subprocess (`tests/fuzz_worker.py`) that reports one line per case, so a crash
is a test failure naming the case, not a lost run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.cedar_gen import random_world

REPO = Path(__file__).resolve().parent.parent
BUDGET = float(os.environ.get("TETHER_FUZZ_SECONDS", "30"))
HEAD = "permit (principal, action, resource) when { "


def hostile() -> Iterator[str]:
    """Shapes that crashed or could crash a recursive parser, compiler or evaluator."""
    yield HEAD + "context has " + ".".join(["a"] * 9000) + " };"
    yield HEAD + "context has " + ".".join(["a"] * 990) + " };"
    yield HEAD + "(" * 50_000 + "true" + ")" * 50_000 + " };"
    yield HEAD + "(" * 120 + "true" + ")" * 120 + " };"
    yield HEAD + "{a: " * 40_000 + "1" + "}" * 40_000 + " == context };"
    yield HEAD + "[" * 100 + "1" + "]" * 100 + " == context.x };"
    yield HEAD + " || ".join(["context.x == 2"] * 1_000_000) + " };"
    yield HEAD + " + ".join(["1"] * 1_000_000) + " == 3 };"
    yield HEAD + " || ".join(["context.x == 2"] * 300) + " };"
    yield HEAD + " && ".join(["context.x == 1"] * 900) + " };"
    yield HEAD + " + ".join(["context.x"] * 999) + " > 0 };"
    yield HEAD + "context" + ".a" * 100_000 + " };"
    yield HEAD + "context" + ".a" * 995 + " == 1 };"
    yield HEAD + "if " * 5000 + "true" + " then true else false" * 5000 + " };"
    yield HEAD + "!" * 100_000 + "true };"
    yield HEAD + "-" * 100_000 + "1 == 1 };"
    yield "permit (principal, action, resource);\n" * 20_000
    yield HEAD + '"' + "(" * 100_000 + '" == context.s };'
    yield HEAD + "[" + ", ".join(str(i) for i in range(50_000)) + "].contains(context.x) };"
    yield "@id(" * 1000 + '"x"' + ")" * 1000 + " permit (principal, action, resource);"


def corpus_texts() -> list[str]:
    texts = [random_world(seed, 12).policy_text for seed in range(20)]
    # Cedar's hand-written corpus policies add seeds when the corpus is configured (`.ci/run`
    # sets it); without it the generated policies alone seed the mutations.
    corpus = os.environ.get("TETHER_CEDAR_CORPUS")
    if corpus:
        texts += [p.read_text() for p in sorted((Path(corpus) / "tests").glob("*/*.cedar"))]
    return texts


def mutate(rng: random.Random, text: str) -> str:
    """One random edit that tends to produce deep, long or broken text."""
    if not text:
        return text
    i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    piece = text[i:j][:200]
    op = rng.randrange(6)
    if op == 0:  # repeat a slice many times (long chains, deep nesting when it holds brackets)
        return text[:i] + piece * rng.choice([10, 1000, 20_000]) + text[j:]
    if op == 1:  # wrap a slice in many brackets
        k = rng.choice([50, 200, 5000])
        o, c = rng.choice([("(", ")"), ("[", "]"), ("{a: ", "}")])
        return text[:i] + o * k + piece + c * k + text[j:]
    if op == 2:  # delete a slice
        return text[:i] + text[j:]
    if op == 3:  # insert an operator run
        return (
            text[:i]
            + rng.choice([" || ", " && ", ".a", " has a", " + 1", "!"])
            * rng.choice([5, 500, 50_000])
            + text[i:]
        )
    if op == 4:  # splice two parts of the text
        k = rng.randrange(len(text) + 1)
        return text[:i] + text[k:] + text[:k]
    return text[:i] + rng.choice('(){}[];"\\.|&!=<>+-*,:') + text[i:]


def cases() -> Iterator[str]:
    yield from hostile()
    rng = random.Random(2026)
    texts = corpus_texts()
    while True:
        t = rng.choice(texts)
        for _ in range(rng.randrange(1, 4)):
            t = mutate(rng, t)
        yield t


def test_no_policy_text_crashes_the_process() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fuzz_worker.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert worker.stdin is not None and worker.stdout is not None
    deadline = time.monotonic() + BUDGET
    seen: dict[str, int] = {}
    n_hostile = len(list(hostile()))
    try:
        for n, text in enumerate(cases()):
            if n >= n_hostile and time.monotonic() > deadline:
                break
            worker.stdin.write(json.dumps(text) + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline().strip()
            assert line, (
                f"the worker died (exit {worker.wait()}) on case #{n}: {text[:300]!r}"
                f"... ({len(text)} chars)"
            )
            assert not line.startswith("UNEXPECTED"), f"case #{n} {text[:300]!r}: {line}"
            seen[line] = seen.get(line, 0) + 1
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    # Both outcomes must occur, or the cases test nothing.
    assert seen.get("loaded", 0) > 0 and seen.get("PolicyError", 0) > 0, seen


DEEP_STATE_SCRIPT = """
import json, sys, threading
from tether import Engine
depth = int(sys.argv[1])
chain = " || ".join(["context.x == 1"] * depth)
state = {"labels": {"deep": {"set_when": chain}},
         "budgets": {"b": {"add": "1", "when": chain, "limit": 100}}}
eng = Engine('permit (principal, action, resource);', state=json.dumps(state), validate=False)
task = eng.open_task('User::"u"')
out = []
def run():
    d = eng.authorize_task(task, 'Action::"a"', 'User::"r"', {"x": 2})
    out.append(d.allowed)
threading.stack_size(64 << 10)
t = threading.Thread(target=run)
t.start()
t.join()
print("ok" if out == [True] else f"unexpected {out}")
"""


@pytest.mark.parametrize("depth", [10, 900])
def test_deep_state_expressions_on_a_small_thread_stack(depth: int) -> None:
    """The state file's conditions run under the same stack guard as policies: a condition
    near the depth limit, evaluated on a 64 KiB thread, answers instead of crashing (the
    shallow twin checks the script itself decides)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", DEEP_STATE_SCRIPT, str(depth)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok", done.stdout + done.stderr[-2000:]
