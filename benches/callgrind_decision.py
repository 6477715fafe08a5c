"""Instructions per decision on the realistic workload, counted by callgrind: a figure that
does not move with the machine's load (wall time here moves by 2x between runs).

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
      --collect-atstart=no \\
      --toggle-collect='tether_core::py::engine::Engine::__pymethod_is_allowed__' \\
      python benches/callgrind_decision.py is_allowed

prints the decision count; divide callgrind's "Collected" by it. `PYTHONHASHSEED=0` makes the
count repeat exactly (Python's string hashing, so its dict probes, is seeded per process and
moves the count by about 1% otherwise). Use
`...__pymethod_authorize_batch__` with `batch` (a context per request) or `shared` (one context
for the whole batch). Only the native call is counted (not the
Python loop around it); the run decides every request twice, so both passes are warm but
for the first use of each action's plan. With `--warm` a first, uncounted pass through the
other method builds every plan first, so the count is the steady state (plans are built
once per snapshot and action, on first use).
"""

from __future__ import annotations

import sys

from benches import agents
from tether import Engine


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "is_allowed"
    w = agents.build(n_requests=2000)
    eng = Engine(w.policies, entities=w.entities)

    def handle(uid: str) -> object:
        ty, rest = uid.split("::", 1)
        return eng.entity(ty, rest.strip('"'))

    handles = [(handle(p), handle(a), handle(r), c) for p, a, r, c in w.requests]
    if "--warm" in sys.argv:
        # The method not being counted: its calls fall outside callgrind's toggle.
        if mode in ("batch", "shared"):
            for p, a, r, c in w.requests:
                eng.is_allowed(p, a, r, c)
        else:
            eng.authorize_batch(handles)
    for _ in range(2):
        if mode == "batch":
            eng.authorize_batch(handles)
        elif mode == "shared":
            eng.authorize_batch([h[:3] for h in handles], w.requests[0][3])
        else:
            f = eng.is_allowed
            for p, a, r, c in w.requests:
                f(p, a, r, c)
    print(2 * len(w.requests))


if __name__ == "__main__":
    main()
