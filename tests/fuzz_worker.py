"""Subprocess side of `test_policy_fuzz.py`: load each policy text it is sent, then evaluate.

Reads one JSON-encoded policy text per stdin line; for each, prints one line: `loaded`,
`PolicyError`, or `UNEXPECTED <type>: <message>`. A crash ends the process, which the parent
sees as a missing line, so the case that crashed is known. Evaluation runs on a thread with a
256 KiB stack, the smallest a caller is likely to give.
"""

from __future__ import annotations

import json
import sys
import threading

from tether import Engine, PolicyError

CONTEXT = {"a": {"a": {"a": 1}}, "x": 1, "s": "v", "flag": True}


def evaluate(eng: Engine, out: list[object]) -> None:
    req = ('User::"u"', 'Action::"a"', 'User::"r"', CONTEXT)
    try:
        # Each entry point: they check the stack each in their own way (a batch once
        # for all its requests).
        out.append(eng.authorize(*req, reasons=True))
        out.append(eng.is_allowed(*req))
        out.append(eng.authorize_batch([req, req]))
    except Exception as e:  # reported to the parent, which fails the test
        out.append(e)


def main() -> None:
    threading.stack_size(256 << 10)
    for line in sys.stdin:
        text = json.loads(line)
        try:
            eng = Engine(text, validate=False)
        except PolicyError:
            print("PolicyError", flush=True)
            continue
        except Exception as e:
            print(f"UNEXPECTED {type(e).__name__}: {e}"[:300], flush=True)
            continue
        out: list[object] = []
        t = threading.Thread(target=evaluate, args=(eng, out))
        t.start()
        t.join()
        err = next((x for x in out if isinstance(x, BaseException)), None)
        if err is not None:
            print(f"UNEXPECTED evaluation {type(err).__name__}: {err}"[:300], flush=True)
        else:
            print("loaded", flush=True)


if __name__ == "__main__":
    main()
