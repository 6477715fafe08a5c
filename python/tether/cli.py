"""The `tether` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a scripted multi-agent session on the embedded defaults")
    check = sub.add_parser("check", help="parse, validate and compile policies")
    check.add_argument("policies", nargs="+")
    check.add_argument("--schema")
    check.add_argument("--entities")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from tether.demo import run_demo

        return run_demo()
    if args.command == "check":
        return _check(args.policies, args.schema, args.entities)
    return 2


def _check(policies: list[str], schema: str | None, entities: str | None) -> int:
    from tether import Engine, TetherError

    try:
        engine = Engine.from_files(list(policies), schema, entities)
    except TetherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"ok: {engine.policy_count} policies, {engine.entity_count} entities")
    for w in engine.warnings():
        print(f"warning: {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
