"""tether: authenticate AI agents once, authorize every action with compiled Cedar.

Exit status: 0 success (allowed, all tests passed, log intact); 1 a negative result
(denied, a test failed, a receipt log is damaged, replay found changes with --strict);
2 bad input (missing or unreadable file, invalid policy, schema, entities or state file,
bad arguments), printed as one line `file:line:col: message`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tether.cli_load import InputError, load_engine, parse_json, read_text

OK, NEGATIVE, BAD_INPUT = 0, 1, 2


def version() -> str:
    from tether import __version__

    return __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exits with 2 too; keep it one line
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


def _policy_args(p: argparse.ArgumentParser, *, many: bool = True) -> None:
    p.add_argument(
        "policies",
        nargs="+" if many else 1,
        metavar="POLICIES.cedar",
        help="Cedar policy file(s), concatenated in order",
    )
    p.add_argument("--schema", metavar="FILE", help="Cedar schema (.cedarschema or JSON)")
    p.add_argument("--entities", metavar="FILE", help="Cedar JSON entities file")
    p.add_argument("--state", metavar="FILE", help="task state file (state.toml)")


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--principal", metavar="UID", help='principal uid, e.g. Agent::"a"')
    p.add_argument("--action", metavar="UID", help='action uid or short name ("read")')
    p.add_argument("--resource", metavar="UID", help='resource uid, e.g. Tool::"search"')
    p.add_argument("--context", metavar="JSON", help="request context as a JSON object")
    p.add_argument(
        "--request",
        metavar="FILE",
        help="JSON file with principal, action, resource and context (instead of the flags)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tether", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tether {version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    sub.add_parser("demo", help="run a scripted multi-agent session on the embedded examples")

    for name in ("check", "validate"):
        p = sub.add_parser(
            name,
            help="parse, validate and compile policies, schema, entities and state file"
            + (" (same as check)" if name == "validate" else ""),
        )
        _policy_args(p)

    p = sub.add_parser("eval", help="decide one request; exit 0 if allowed, 1 if denied")
    _policy_args(p)
    _request_args(p)
    p.add_argument("--json", action="store_true", help="print the decision as JSON")

    p = sub.add_parser(
        "explain", help="decide one request and show each candidate policy and condition"
    )
    _policy_args(p)
    _request_args(p)
    p.add_argument(
        "--for-model",
        action="store_true",
        help="print the short denial text meant for the model that made the call",
    )

    p = sub.add_parser(
        "test", help="run a TOML/YAML suite of requests with expected decisions; report coverage"
    )
    p.add_argument("suites", nargs="+", metavar="SUITE", help="suite file(s) (.toml/.yaml)")
    p.add_argument(
        "--policies",
        nargs="+",
        metavar="FILE",
        help="test these policy files instead of the ones the suite names",
    )

    p = sub.add_parser(
        "bench", help="latency percentiles and throughput on your policies and requests"
    )
    _policy_args(p)
    p.add_argument(
        "--requests",
        required=True,
        metavar="FILE",
        help="a test suite (.toml/.yaml) or a JSON file: a list of request objects",
    )
    p.add_argument("-n", "--iterations", type=int, default=20000, help="decisions to time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    audit = sub.add_parser("audit", help="decision receipt logs")
    asub = audit.add_subparsers(
        dest="audit_command", required=True, metavar="SUBCOMMAND", parser_class=_Parser
    )
    p = asub.add_parser(
        "verify", help="check a receipt log's chain and signatures; say where it is damaged"
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="log file(s) of one log, oldest first (rotated files, then the current)",
    )
    p.add_argument("--key", metavar="PEM", help="public key (PEM) that signed the checkpoints")
    p.add_argument(
        "--open",
        action="store_true",
        help="the log is still being written: a missing close checkpoint is fine",
    )

    p = sub.add_parser("replay", help="re-decide recorded requests under other policies")
    p.add_argument("receipts", nargs="+", metavar="RECEIPTS", help="receipt log file(s)")
    p.add_argument(
        "--policies", nargs="+", required=True, metavar="FILE", help="the candidate policy file(s)"
    )
    p.add_argument("--schema", metavar="FILE", help="Cedar schema")
    p.add_argument("--entities", metavar="FILE", help="Cedar JSON entities file")
    p.add_argument("--strict", action="store_true", help="exit 1 if any decision would change")

    p = sub.add_parser("serve", help="serve the AuthZEN 1.0 access evaluation API over HTTP")
    _policy_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8180, help="TCP port")
    p.add_argument(
        "--bundle",
        action="append",
        metavar="TRUST_DOMAIN=FILE",
        help="JWKS trust bundle verifying callers' JWT-SVIDs (repeatable)",
    )
    p.add_argument("--audience", metavar="AUD", help="audience callers' JWT-SVIDs must carry")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept unauthenticated callers (local testing only)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "demo":
        from tether.demo import run_demo

        return run_demo()
    if cmd in ("check", "validate"):
        return _check(args)
    if cmd == "eval":
        return _eval(args)
    if cmd == "explain":
        return _explain(args)
    if cmd == "test":
        return _test(args)
    if cmd == "bench":
        return _bench(args)
    if cmd == "audit":
        return _audit_verify(args)
    if cmd == "replay":
        return _replay(args)
    if cmd == "serve":
        return _serve(args)
    raise AssertionError(cmd)


def _engine(args: argparse.Namespace) -> Any:
    return load_engine(list(args.policies), args.schema, args.entities, args.state)


def _check(args: argparse.Namespace) -> int:
    engine = _engine(args)
    print(f"ok: {engine.policy_count} policies, {engine.entity_count} entities")
    for w in engine.warnings():
        print(f"warning: {w}")
    return OK


def _request(args: argparse.Namespace) -> tuple[str, str, str, dict[str, Any]]:
    if args.request:
        doc = parse_json(read_text(args.request, "request"), args.request)
        where = args.request
    else:
        doc = {"principal": args.principal, "action": args.action, "resource": args.resource}
        if args.context:
            doc["context"] = parse_json(args.context, "--context")
        where = "request"
    if not isinstance(doc, dict):
        raise InputError(f"{where}: a request is a JSON object")
    missing = [k for k in ("principal", "action", "resource") if not doc.get(k)]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)} (use --{missing[0]} or --request)")
    ctx = doc.get("context") or {}
    if not isinstance(ctx, dict):
        raise InputError(f"{where}: context must be a JSON object")
    action = str(doc["action"])
    if "::" not in action:
        action = f'Action::"{action}"'
    return str(doc["principal"]), action, str(doc["resource"]), ctx


def _eval(args: argparse.Namespace) -> int:
    from tether import TetherError

    engine = _engine(args)
    principal, action, resource, ctx = _request(args)
    try:
        d = engine.authorize(principal, action, resource, ctx, reasons=True)
    except TetherError as e:
        raise InputError(f"request: {e}") from None
    if args.json:
        print(
            json.dumps(
                {
                    "decision": "allow" if d.allowed else "deny",
                    "reasons": list(d.reasons),
                    "errors": list(d.error_messages),
                }
            )
        )
    else:
        print(
            ("ALLOW" if d.allowed else "DENY")
            + (f" by {', '.join(d.reasons)}" if d.reasons else "")
        )
        for msg in d.error_messages:
            print(f"error: {msg}")
    return OK if d.allowed else NEGATIVE


def _explain(args: argparse.Namespace) -> int:
    from tether import TetherError
    from tether.explain import render_for_model, render_tree

    engine = _engine(args)
    principal, action, resource, ctx = _request(args)
    try:
        ex = engine.explain(principal, action, resource, ctx)
    except TetherError as e:
        raise InputError(f"request: {e}") from None
    print(render_for_model(ex) if args.for_model else render_tree(ex))
    return OK if ex.allowed else NEGATIVE


def _test(args: argparse.Namespace) -> int:
    from tether.policytest import load_suite, run_suite

    failed = total = 0
    for path in args.suites:
        suite = load_suite(path)
        res = run_suite(suite, suite.engine(args.policies) if args.policies else None)
        for r in res.results:
            total += 1
            if r.passed:
                print(f"PASS {path}: {r.case.name}")
                continue
            failed += 1
            want = "allow" if r.case.expect else "deny"
            got = "error" if r.allowed is None else ("allow" if r.allowed else "deny")
            detail = f"expected {want}, got {got}"
            if r.case.reasons is not None and r.allowed == r.case.expect:
                detail = f"expected reasons {sorted(r.case.reasons)}, got {sorted(r.reasons)}"
            if r.error:
                detail += f" ({r.error})"
            print(f"FAIL {path}: {r.case.name}: {detail}")
        n = len(res.policies)
        covered = n - len(res.never_exercised)
        print(f"coverage {path}: {covered}/{n} policies decided at least one case")
        for pid in res.never_exercised:
            print(f"  never exercised: {pid}")
    print(f"{total - failed} passed, {failed} failed")
    return NEGATIVE if failed else OK


def _bench_requests(path: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    if path.endswith((".toml", ".yaml", ".yml")):
        from tether.policytest import load_suite

        return [(c.principal, c.action, c.resource, c.context) for c in load_suite(path).cases]
    doc = parse_json(read_text(path, "requests"), path)
    if not isinstance(doc, list) or not doc:
        raise InputError(f"{path}: expected a non-empty JSON list of request objects")
    out = []
    for i, r in enumerate(doc, start=1):
        if not isinstance(r, dict) or not all(k in r for k in ("principal", "action", "resource")):
            raise InputError(f"{path}: request {i} needs principal, action and resource")
        a = str(r["action"])
        out.append(
            (
                str(r["principal"]),
                a if "::" in a else f'Action::"{a}"',
                str(r["resource"]),
                dict(r.get("context") or {}),
            )
        )
    return out


def _bench(args: argparse.Namespace) -> int:
    import time

    from rich.progress import Progress

    from tether import TetherError

    engine = _engine(args)
    reqs = _bench_requests(args.requests)
    n = max(1, args.iterations)
    lat = [0] * n
    clock = time.perf_counter_ns
    decide = engine.is_allowed
    try:
        for r in reqs:  # warm-up and input check
            decide(*r)
        with Progress(disable=args.no_progress, transient=True) as bar:
            job = bar.add_task("deciding", total=n)
            start = clock()
            step = max(1, n // 100)
            for i in range(n):
                p, a, res, c = reqs[i % len(reqs)]
                t0 = clock()
                decide(p, a, res, c)
                lat[i] = clock() - t0
                if i % step == 0:
                    bar.update(job, completed=i)
            total = clock() - start
    except TetherError as e:
        raise InputError(f"{args.requests}: {e}") from None
    lat.sort()

    def pct(q: float) -> str:
        return f"{lat[min(n - 1, int(q * n))] / 1000:.1f} µs"

    print(f"{n} decisions over {len(reqs)} distinct requests, {engine.policy_count} policies")
    print(f"p50 {pct(0.50)}  p90 {pct(0.90)}  p99 {pct(0.99)}  max {lat[-1] / 1000:.1f} µs")
    print(f"throughput {n / (total / 1e9):,.0f} decisions/s (one thread, timer included)")
    return OK


def _audit_verify(args: argparse.Namespace) -> int:
    from tether.audit import verify

    key = None
    if args.key:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            loaded = load_pem_public_key(read_text(args.key, "key").encode())
        except ValueError as e:
            raise InputError(f"{args.key}: not a PEM public key ({e})") from None
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise InputError(f"{args.key}: not an EC (ES256) public key")
        key = loaded
    for f in args.files:
        _exists(f)
    rep = verify(list(args.files), public_key=key, allow_open=args.open)
    for p in rep.problems:
        print(f"{p}", file=sys.stderr)
    for note in rep.notes:
        print(f"note: {note}")
    status = "ok" if rep.ok else "DAMAGED"
    signed = f", {rep.signed} signatures verified" if key is not None else ""
    print(f"{status}: {rep.decisions} decisions, {rep.checkpoints} checkpoints{signed}")
    return OK if rep.ok else NEGATIVE


def _exists(path: str) -> None:
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such receipt log file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a receipt log file")


def _replay(args: argparse.Namespace) -> int:
    from tether.audit.replay import replay

    engine = load_engine(list(args.policies), args.schema, args.entities)
    for f in args.receipts:
        _exists(f)
    res = replay(list(args.receipts), engine)
    for e in res.errors:
        print(f"error: {e}", file=sys.stderr)
    for c in res.changes:
        why = f" ({', '.join(c.reasons)})" if c.reasons else ""
        print(f"seq {c.seq}: {c.before} -> {c.after}{why}: {c.agent} {c.action} {c.resource}")
    print(
        f"{res.replayed} replayed: {len(res.changes)} would change, {res.unchanged} unchanged;"
        f" {res.not_replayable} not replayable (request not recorded)"
    )
    if res.errors:
        return BAD_INPUT
    return NEGATIVE if args.strict and res.changes else OK


def _serve(args: argparse.Namespace) -> int:
    from tether.authzen import serve_from_args

    # AuthZEN properties arrive as context.subject/resource/action, which a schema does
    # not declare: the PDP does not reject contexts the schema does not describe.
    engine = load_engine(
        list(args.policies), args.schema, args.entities, args.state, validate_requests=False
    )
    return serve_from_args(args, engine)


if __name__ == "__main__":
    raise SystemExit(main())
