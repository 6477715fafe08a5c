"""Decision receipts: the chain, checkpoints, tamper detection, overflow policies."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.support import FakeClock

import tether
from tether.audit import AuditError, AuditLog, AuditOverflow, JsonlFileSink, verify
from tether.engine import Engine
from tether.tasks import Guard

EXAMPLES = Path(tether.__file__).parent / "examples"
ORCH = 'Agent::"spiffe://example.org/agents/orchestrator"'
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def engine() -> Engine:
    # No schema: these tests send contexts the example schema does not declare.
    return Engine.from_files(
        EXAMPLES / "agents.cedar",
        entities=EXAMPLES / "entities.json",
        state=EXAMPLES / "state.toml",
    )


def plain_engine() -> Engine:
    return Engine.from_files(EXAMPLES / "agents.cedar", entities=EXAMPLES / "entities.json")


def write_log(path: Path, engine: Engine, n: int = 6, **kw: Any) -> AuditLog:
    log = AuditLog(path, clock=FakeClock(T0), **kw)
    audited = plain_engine()
    log.attach(audited)
    with log:
        for i in range(n):
            tool = ["search", "shell"][i % 2]
            audited.authorize(ORCH, 'Action::"call_tool"', f'Tool::"{tool}"', {"i": i})
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_a_clean_log_verifies(tmp_path: Path, engine: Engine) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, engine)
    rep = verify([p])
    assert rep.ok, rep.problems
    assert rep.decisions == 6
    recs = [json.loads(x) for x in lines(p)]
    assert [r.get("kind", "decision") for r in recs] == ["open", *["decision"] * 6, "close"]
    assert recs[1]["decision"] == "allow" and recs[2]["decision"] == "deny"
    assert recs[2]["denial"] == "no-permit"
    assert recs[1]["agent"] == ORCH and recs[1]["resource"] == 'Tool::"search"'
    assert [r["seq"] for r in recs] == list(range(8))


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [
        ("edit", 3, "record edited"),
        ("insert", 4, "inserted or reordered"),
        ("delete", 4, "1 record(s) missing"),
        ("reorder", 3, "1 record(s) missing"),
        ("truncate", 6, "does not end with a close checkpoint"),
        ("cut-head", 1, "does not start with an open checkpoint"),
        ("torn", 9, "incomplete"),
    ],
)
def test_tampering_is_found_and_located(
    tmp_path: Path, engine: Engine, tamper: str, line: int, words: str
) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, engine)
    ls = lines(p)
    if tamper == "edit":
        ls[2] = ls[2].replace(b'"deny"', b'"allow"')
    elif tamper == "insert":
        ls.insert(3, ls[2])
    elif tamper == "delete":
        del ls[3]
    elif tamper == "reorder":
        ls[2], ls[3] = ls[3], ls[2]
    elif tamper == "truncate":
        ls = ls[:6]
    elif tamper == "cut-head":
        ls = ls[1:]
    if tamper == "torn":
        p.write_bytes(b"\n".join(ls) + b"\n" + ls[1][:20])
    else:
        p.write_bytes(b"\n".join(ls) + b"\n")
    rep = verify([p])
    assert not rep.ok
    first = rep.problems[0]
    assert words in first.message, rep.problems
    assert first.line == line, rep.problems


def test_untouched_twin_of_an_edit_passes(tmp_path: Path, engine: Engine) -> None:
    # The same rewrite that is not a change (byte-identical) must not be flagged.
    p = tmp_path / "audit.jsonl"
    write_log(p, engine)
    ls = lines(p)
    p.write_bytes(b"\n".join(ls) + b"\n")
    assert verify([p]).ok


def test_signed_checkpoints_stop_a_rewritten_chain(tmp_path: Path, engine: Engine) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    p = tmp_path / "audit.jsonl"
    write_log(p, engine, signing_key=key, checkpoint_every=2)
    rep = verify([p], public_key=key.public_key())
    assert rep.ok, rep.problems
    assert rep.signed == rep.checkpoints == 5  # open, 3 marks, close
    # Someone re-signs the log with their own key: the chain is intact, signatures are not.
    other = ec.generate_private_key(ec.SECP256R1())
    q = tmp_path / "forged.jsonl"
    write_log(q, engine, signing_key=other, checkpoint_every=2)
    rep = verify([q], public_key=key.public_key())
    assert not rep.ok and "another key" in rep.problems[0].message
    # A recomputed chain with the kid copied over still fails the signature check.
    forged = [json.loads(x) for x in lines(q)]
    for r in forged:
        if "kid" in r:
            r["kid"] = json.loads(lines(p)[0])["kid"]
    from tether.audit.records import DECODER, ENCODER, line_hash

    prev = "0" * 64
    out = []
    for r in forged:
        r["prev"] = prev
        if "head" in r:
            r["head"] = prev
        line = ENCODER.encode(DECODER.decode(json.dumps(r).encode()))
        prev = line_hash(line)
        out.append(line)
    q.write_bytes(b"\n".join(out) + b"\n")
    rep = verify([q], public_key=key.public_key())
    assert not rep.ok and "bad checkpoint signature" in rep.problems[0].message
    assert verify([q]).ok  # without the key, only the chain is checked (and it holds)


def test_rotation_keeps_one_chain_across_files(tmp_path: Path, engine: Engine) -> None:
    p = tmp_path / "audit.jsonl"
    sink = JsonlFileSink(p, max_bytes=600)
    log = AuditLog(sink, clock=FakeClock(T0))
    audited = plain_engine()
    log.attach(audited)
    with log:
        for _ in range(12):
            audited.is_allowed(ORCH, 'Action::"call_tool"', 'Tool::"search"')
            log.flush()
    files = [*sink.rotated(), p]
    assert len(files) > 2
    rep = verify(files)
    assert rep.ok, rep.problems
    assert rep.decisions == 12
    # Dropping a middle file breaks the chain at the next file's first line.
    rep = verify([files[0], *files[2:]])
    assert not rep.ok and rep.problems[0].file == str(files[2])


def test_reopening_continues_the_chain(tmp_path: Path, engine: Engine) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, engine, n=2)
    write_log(p, engine, n=2)
    rep = verify([p])
    assert rep.ok, rep.problems
    assert rep.decisions == 4


@pytest.mark.anyio
async def test_task_decisions_are_receipted_without_secrets(tmp_path: Path, engine: Engine) -> None:
    got: list[bytes] = []
    clock = FakeClock(T0)
    log = AuditLog(got.append, clock=clock, record_requests=True, task_state=True)
    with log:
        async with Guard(engine, clock=clock, audit=log, allow_unauthenticated=True) as guard:
            async with guard.task(ORCH, intent="report") as task:
                token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
                task.authorize("call_tool", 'Tool::"search"')
                task.authorize("read", 'Dataset::"payroll"', {"api_key": "hunter2", "t": token})
                task.authorize("egress", 'Domain::"pastebin.com"')
    text = b"\n".join(got).decode()
    assert "hunter2" not in text and token not in text
    recs = [json.loads(x) for x in got]
    search, read, egress = recs[1], recs[2], recs[3]
    assert read["txn"] == task.txn and read["decision"] == "allow"
    assert read["request"]["context"]["api_key"] == "[redacted]"
    assert egress["decision"] == "deny" and egress["denial"] in ("forbid", "no-permit")
    assert egress["request"]["task"]["labels"] == ["restricted"]
    # `state` is the digest of the task state after the decision committed.
    assert search["request"]["task"]["labels"] == []
    assert read["request"]["task"]["labels"] == ["restricted"]
    assert search["state"] != read["state"]


class StallingSink:
    """A sink whose writes wait until the test releases them."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lines: list[bytes] = []
        self.opened = False

    def write(self, lines: list[bytes]) -> None:
        if self.opened:
            self.entered.set()
            self.release.wait()
        self.opened = True
        self.lines.extend(lines)

    def wants_rotation(self) -> bool:
        return False

    def rotate(self) -> None:
        pass

    def tail(self) -> bytes | None:
        return None

    def close(self) -> None:
        pass


def stalled(overflow: str) -> tuple[AuditLog, StallingSink, Engine]:
    sink = StallingSink()
    log = AuditLog(sink, capacity=2, overflow=overflow, flush_interval=0.001)  # type: ignore[arg-type]
    audited = plain_engine()
    log.attach(audited)
    log.start()
    audited.is_allowed(ORCH, 'Action::"call_tool"', 'Tool::"search"')
    assert sink.entered.wait(10)  # the writer is now stuck in the sink with one receipt
    return log, sink, audited


def decide(e: Engine) -> bool:
    return e.is_allowed(ORCH, 'Action::"call_tool"', 'Tool::"search"')


def test_stalled_sink_drop_counts_and_records_the_gap() -> None:
    log, sink, e = stalled("drop")
    for _ in range(5):
        assert decide(e)  # decisions go on; two fit the buffer, three are dropped
    assert log.dropped == 3
    sink.release.set()
    log.close()
    p_lines = sink.lines
    recs = [json.loads(x) for x in p_lines]
    assert recs[-1]["kind"] == "close" and recs[-1]["dropped"] == 3
    assert sum(1 for r in recs if r.get("kind", "decision") == "decision") == 3


def test_stalled_sink_deny_refuses_the_action() -> None:
    log, sink, e = stalled("deny")
    decide(e)
    decide(e)
    with pytest.raises(AuditOverflow):
        decide(e)
    assert log.refused == 1
    sink.release.set()
    log.close()


def test_stalled_sink_block_waits_for_room() -> None:
    log, sink, e = stalled("block")
    decide(e)
    decide(e)
    done = threading.Event()

    def third() -> None:
        decide(e)
        done.set()

    t = threading.Thread(target=third)
    t.start()
    # The third decision cannot return while the sink is stuck: it is waiting for room.
    assert not done.wait(0.2)
    sink.release.set()
    assert done.wait(10)
    t.join()
    log.close()
    assert log.blocked >= 1 and log.written == 4 and log.dropped == 0


def test_a_failing_sink_surfaces() -> None:
    def broken(line: bytes) -> None:
        if b'"decision"' in line:
            raise OSError("disk full")

    log = AuditLog(broken, capacity=1, flush_interval=0.001)
    e = plain_engine()
    log.attach(e)
    log.start()
    with pytest.raises(AuditError):
        for _ in range(1000):
            decide(e)
            log.flush()
    with pytest.raises(AuditError, match="disk full"):
        log.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overflow"):
        AuditLog(lambda b: None, overflow="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="P-256"):
        AuditLog(lambda b: None, signing_key=ec.generate_private_key(ec.SECP384R1()))


def test_shadow_policies_are_compared_and_recorded_never_enforced() -> None:
    text = (EXAMPLES / "agents.cedar").read_text()
    stricter = Engine(
        text + '\n@id("no-payroll")\nforbid(principal, action, resource == Dataset::"payroll");\n',
        None,
        (EXAMPLES / "entities.json").read_text(),
    )
    got: list[bytes] = []
    log = AuditLog(got.append, shadow=stricter)
    live = Engine.from_files(EXAMPLES / "agents.cedar", entities=EXAMPLES / "entities.json")
    log.attach(live)
    with log:
        payroll = live.authorize(ORCH, 'Action::"read"', 'Dataset::"payroll"')
        wiki = live.authorize(ORCH, 'Action::"read"', 'Dataset::"wiki"')
    assert payroll.allowed and wiki.allowed  # the live set decides; the shadow never enforces
    recs = [json.loads(x) for x in got if b'"kind"' not in x]
    assert recs[0]["shadow"] == "deny" and "shadow" not in recs[1]
    assert log.shadow_checked == 2 and log.shadow_diffs == 1


@pytest.mark.anyio
async def test_shadow_of_task_decisions_needs_the_exact_task_state(engine: Engine) -> None:
    got: list[bytes] = []
    clock = FakeClock(T0)
    for task_state, checked in ((True, 2), (False, 0)):
        log = AuditLog(got.append, clock=clock, task_state=task_state, shadow=engine)
        with log:
            async with Guard(engine, clock=clock, audit=log, allow_unauthenticated=True) as guard:
                async with guard.task(ORCH, intent="report") as task:
                    task.authorize("read", 'Dataset::"payroll"')
                    task.authorize("egress", 'Domain::"pastebin.com"')
        # The same policies in the shadow: with the task state, no difference is found.
        assert log.shadow_checked == checked and log.shadow_diffs == 0
        assert log.shadow_skipped == 2 - checked


def decisions(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines if b'"kind"' not in x]


@pytest.mark.anyio
async def test_lease_ids_are_those_usable_at_decision_time(engine: Engine) -> None:
    from tests.tasks.conftest import RecordingSource

    from tether.leases import CredentialBroker
    from tether.store import MemoryLeaseStore

    clock = FakeClock(T0)
    broker = CredentialBroker(MemoryLeaseStore(), {"db": RecordingSource().provider()}, clock=clock)
    # The writer is held back (a long flush interval: nothing drains until close), so
    # every receipt is built after everything below has happened.
    sink: list[bytes] = []
    log = AuditLog(sink.append, clock=clock, flush_interval=3600)
    with log:
        async with Guard(
            engine, broker=broker, clock=clock, audit=log, allow_unauthenticated=True
        ) as guard:
            async with guard.task(ORCH, intent="report") as task:
                task.authorize("call_tool", 'Tool::"search"')  # no lease yet
                lease = await task.lease("db")
                task.authorize("call_tool", 'Tool::"search"')  # the lease is usable
                await broker.revoke(lease.lease_id)
                task.authorize("call_tool", 'Tool::"search"')  # revoked before this one
                assert len(sink) == 1  # only the opening checkpoint: nothing drained
    before, holding, after = decisions(sink)
    # Receipts are written after the revocation, yet each names what held when decided.
    assert before.get("leases", []) == []
    assert holding["leases"] == [lease.lease_id]
    assert after.get("leases", []) == []


@pytest.mark.anyio
async def test_state_and_time_are_taken_at_decision_time(engine: Engine) -> None:
    clock = FakeClock(T0)
    sink: list[bytes] = []
    log = AuditLog(sink.append, clock=clock, flush_interval=3600, task_state=True)
    with log:
        async with Guard(engine, clock=clock, audit=log, allow_unauthenticated=True) as guard:
            async with guard.task(ORCH, intent="report") as task:
                task.authorize("call_tool", 'Tool::"search"')
                clock.advance(5)
                task.authorize("read", 'Dataset::"payroll"')  # taints the task
                untainted = json.loads(guard.engine.task_context(task.handle, now=T0))
                clock.advance(100)  # the writer builds every receipt after this
    first, second = decisions(sink)
    assert (first["time"], second["time"]) == (T0, T0 + 5)
    assert first["state"] != second["state"]
    assert untainted["labels"] == ["restricted"]  # the state now; the receipt kept the old


def test_batch_decisions_are_receipted() -> None:
    got: list[bytes] = []
    e = plain_engine()
    log = AuditLog(got.append)
    log.attach(e)
    read = 'Action::"read"'
    with log:
        shared = e.authorize_batch(
            [(ORCH, read, 'Dataset::"payroll"'), (ORCH, 'Action::"call_tool"', 'Tool::"shell"')],
            {"i": 1},
        )
        own = e.authorize_batch(iter([(ORCH, read, 'Dataset::"wiki"', {"i": 2})]))
    assert shared == [True, False] and own == [True]
    recs = [json.loads(x) for x in got if b'"kind"' not in x]
    assert [(r["resource"], r["decision"]) for r in recs] == [
        ('Dataset::"payroll"', "allow"),
        ('Tool::"shell"', "deny"),
        ('Dataset::"wiki"', "allow"),
    ]
    assert recs[0]["context"] == recs[1]["context"] != recs[2]["context"]
    assert all(r["policies"] == e.version for r in recs)


@pytest.mark.anyio
async def test_task_decisions_follow_the_overflow_policy(engine: Engine) -> None:
    # The task path queues inline; a full buffer must still reach the overflow policy.
    for overflow in ("deny", "drop"):
        log, sink, _ = stalled(overflow)
        async with Guard(engine, audit=log, allow_unauthenticated=True) as guard:
            async with guard.task(ORCH, intent="report") as task:
                assert task.authorize("call_tool", 'Tool::"search"').allowed
                assert task.authorize("call_tool", 'Tool::"search"').allowed  # buffer full
                if overflow == "deny":
                    with pytest.raises(AuditOverflow):
                        task.authorize("call_tool", 'Tool::"search"')
                    assert log.refused == 1 and log.dropped == 0
                else:
                    assert task.authorize("call_tool", 'Tool::"search"').allowed
                    assert log.dropped == 1 and log.refused == 0
                sink.release.set()
        log.close()
