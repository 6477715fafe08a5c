"""What `link`, `unlink` and `reload` cost as the policy set grows.

`python benches/bench_link.py`: N static policies plus one template; each round links one
per-user grant, then unlinks it; median and spread over rounds, with the load and one full
reload for comparison.
"""

from __future__ import annotations

import statistics
import time

from tether import Engine

ROUNDS = 9


def policies(n: int) -> str:
    statics = "\n".join(
        f'@id("p{i}") permit (principal == User::"u{i}", action == Action::"read", resource) '
        f"when {{ resource.level < {i % 7} }};"
        for i in range(n)
    )
    return statics + (
        '\n@id("grant") permit (principal == ?principal, action == Action::"read", '
        "resource in ?resource) unless { principal has banned };"
    )


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.1f} ms ({min(xs) * 1e3:.1f}-{max(xs) * 1e3:.1f})"


def main() -> None:
    for n in (100, 1_000, 10_000):
        text = policies(n)
        t0 = time.perf_counter()
        engine = Engine(text)
        load = time.perf_counter() - t0
        links, unlinks = [], []
        for k in range(ROUNDS):
            t0 = time.perf_counter()
            engine.link("grant", f"g{k}", principal=f'User::"a{k}"', resource='Folder::"f"')
            links.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.unlink(f"g{k}")
            unlinks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.reload(text)
        reload = time.perf_counter() - t0
        print(
            f"{n:>6} policies: load {load * 1e3:.0f} ms, link {ms(links)}, "
            f"unlink {ms(unlinks)}, reload {reload * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
