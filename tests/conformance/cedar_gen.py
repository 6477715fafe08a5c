"""Hypothesis strategies for random, well-formed Cedar worlds (policies, entities, requests).

A *world* is a policy set (Cedar text; ids `policy0`, `policy1`, ... in file order), an entity
store (Cedar JSON entity list) and a batch of requests over one small vocabulary, so policies,
entities and requests actually meet. Generation is type-sensible most of the time and
deliberately type-wrong now and then (evaluation errors are part of what gets compared):
missing attributes, absent entities, i64 overflow, bad extension literals, wrong operand types.

Every random choice goes through a `Src`. Small policy sets are drawn choice-by-choice from
Hypothesis (so failures shrink); large sets (hundreds of policies) are drawn from a `random.Random`
seeded by Hypothesis, which keeps them reproducible without overrunning Hypothesis' choice budget.

Public surface: `worlds()`, `World`, `Request`, `cedar_uid`, `cedarpy_inputs`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")
Uid = tuple[str, str]

# ---------------------------------------------------------------------------------------------
# Randomness sources


class Src(Protocol):
    def int(self, lo: int, hi: int) -> int: ...
    def choice(self, seq: Sequence[T]) -> T: ...
    def chance(self, p: float) -> bool: ...


class HypSrc:
    """Choices drawn from Hypothesis: shrinkable. `chance` shrinks towards False."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        return int(self.draw(st.integers(lo, hi)))

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, p: float) -> bool:
        # Hypothesis favours small integers in wide ranges, so build a percentile from two
        # near-uniform decimal digits; a zero (the shrink target) means False.
        pct = self.int(0, 9) * 10 + self.int(0, 9)
        return pct >= round((1.0 - p) * 100)


class RandSrc:
    """Choices drawn from a seeded `random.Random`: cheap, reproducible, not shrinkable."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


# ---------------------------------------------------------------------------------------------
# Vocabulary

USERS = ["alice", "bob", "carol", "dave", "zoë q", 'o"neil']
GROUPS = ["admins", "eng", "staff", "all"]
DOCS = ["d1", "d2", "d3", "d4"]
FOLDERS = ["f1", "f2", "root"]
ACTIONS = ["view", "edit", "delete", "share", "read", "write", "any"]
# Referenced by policies and requests, never put in the store.
GHOSTS: list[Uid] = [("User", "ghost"), ("Doc", "d9"), ("Robot", "r2"), ("Action", "fly")]

# Topological order: an entity's parents always come later in this list (the graph is a DAG).
UNIVERSE: list[Uid] = (
    [("User", u) for u in USERS]
    + [("Doc", d) for d in DOCS]
    + [("Group", g) for g in GROUPS]
    + [("Folder", f) for f in FOLDERS]
    + [("Action", a) for a in ACTIONS]
)
ALL_UIDS: list[Uid] = UNIVERSE + GHOSTS
ENTITY_TYPES = ["User", "Group", "Doc", "Folder", "Robot"]
PARENT_TYPES = {
    "User": {"Group"},
    "Group": {"Group"},
    "Doc": {"Folder"},
    "Folder": {"Folder"},
    "Action": {"Action"},
}

# Value types.
LONG, STR, BOOL, DEC, IP, ENT, REC = "long", "str", "bool", "decimal", "ip", "entity", "record"
SET_LONG, SET_STR, SET_ENT = "set<long>", "set<str>", "set<entity>"
TYPES = [LONG, STR, BOOL, DEC, IP, ENT, REC, SET_LONG, SET_STR, SET_ENT]
SET_ELEM = {SET_LONG: LONG, SET_STR: STR, SET_ENT: ENT}

# Entity attributes (any entity may carry any of them) and context keys, by intended type.
ATTRS = {
    "age": LONG,
    "name": STR,
    "active": BOOL,
    "tags": SET_STR,
    "scores": SET_LONG,
    "meta": REC,
    "owner": ENT,
    "readers": SET_ENT,
    "limit": DEC,
    "addr": IP,
    "x y": STR,  # needs `has "x y"` / `e["x y"]`
}
CTX = {
    "n": LONG,
    "s": STR,
    "flag": BOOL,
    "list": SET_LONG,
    "who": ENT,
    "amount": DEC,
    "ip": IP,
    "rec": REC,
}
REC_FIELDS = {"level": LONG, "label": STR}  # fields of `meta` / `rec` records
TAG_KEYS = ["k1", "k2", "k3"]

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
LONGS_SMALL = [-3, -1, 0, 1, 2, 3, 5, 7, 10, 18, 21, 42, 100]
LONGS_BIG = [I64_MAX, I64_MIN, I64_MAX - 1, I64_MIN + 1, 2**62, -(2**62), 3037000500, 2**32]
STRINGS = ["", "a", "ab", "abc", "alice", "b", "ba", "a*b", "héllo", "x y", "zoë", "\\", 'q"t']
LIKE_PIECES = ["a", "b", "c", "*", "*", "\\*", "é", " ", "l"]
DECIMALS_OK = ["0.0", "1.0", "1.5", "-2.25", "10.0001", "922337203685477.5807", "-0.5"]
DECIMALS_BAD = ["1.23456", "abc", "1", ".5", "922337203685478.0"]
IPS_OK = [
    "127.0.0.1",
    "10.0.0.1",
    "10.0.0.0/8",
    "192.168.1.7",
    "192.168.0.0/16",
    "224.0.0.1",
    "::1",
    "ff02::1",
    "2001:db8::/32",
    "2001:db8::5",
]
IPS_BAD = ["300.1.1.1", "zzz", "10.0.0.0/33", "::g"]
DATETIMES = ["2024-01-01", "2024-06-01T12:00:00Z", "2023-12-31T23:59:59.999+0100"]
DURATIONS = ["1h", "-2d3h", "90m", "1s500ms"]


# ---------------------------------------------------------------------------------------------
# Rendering helpers


def cedar_str(s: str) -> str:
    """A Cedar string literal (also used for entity ids)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cedar_uid(uid: Uid) -> str:
    return f"{uid[0]}::{cedar_str(uid[1])}"


def json_uid(uid: Uid) -> dict[str, str]:
    return {"type": uid[0], "id": uid[1]}


def long_lit(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


# Cedar JSON value (entity attrs, context) <-> Cedar text literal.
def value_json(ty: str, v: Any) -> Any:
    if ty == ENT:
        return {"__entity": json_uid(v)}
    if ty in (DEC, IP):
        return {"__extn": {"fn": "decimal" if ty == DEC else "ip", "arg": v}}
    if ty in SET_ELEM:
        return [value_json(SET_ELEM[ty], x) for x in v]
    if ty == REC:
        return {k: value_json(t, v[k]) for k, t in REC_FIELDS.items() if k in v} | (
            {"inner": {"flag": v["inner"]}} if "inner" in v else {}
        )
    return v


# ---------------------------------------------------------------------------------------------
# Values


def gen_long(src: Src) -> int:
    return src.choice(LONGS_BIG) if src.chance(0.2) else src.choice(LONGS_SMALL)


def gen_value(src: Src, ty: str) -> Any:
    """A well-formed value of `ty` (valid inside entity JSON and context)."""
    if ty == LONG:
        return gen_long(src)
    if ty == STR:
        return src.choice(STRINGS)
    if ty == BOOL:
        return src.chance(0.5)
    if ty == DEC:
        return src.choice(DECIMALS_OK)
    if ty == IP:
        return src.choice(IPS_OK)
    if ty == ENT:
        return src.choice(ALL_UIDS)
    if ty in SET_ELEM:
        return [gen_value(src, SET_ELEM[ty]) for _ in range(src.int(0, 3))]
    if ty == REC:
        rec: dict[str, Any] = {}
        for k, t in REC_FIELDS.items():
            if src.chance(0.75):
                rec[k] = gen_value(src, t)
        if src.chance(0.3):
            rec["inner"] = src.chance(0.5)
        return rec
    raise AssertionError(ty)


def gen_typed_json(src: Src, ty: str, wrong: float) -> Any:
    """JSON for a value of `ty`, or (with probability `wrong`) of some other type."""
    if src.chance(wrong):
        ty = src.choice(TYPES)
    return value_json(ty, gen_value(src, ty))


# ---------------------------------------------------------------------------------------------
# Entities


def gen_entities(src: Src) -> list[dict[str, Any]]:
    present = [uid for uid in UNIVERSE if src.chance(0.9 if uid[0] == "Action" else 0.8)]
    out = []
    for uid in present:
        idx = UNIVERSE.index(uid)
        later = UNIVERSE[idx + 1 :]
        same = [p for p in later if p[0] in PARENT_TYPES.get(uid[0], set())]
        parents: list[Uid] = []
        for _ in range(src.int(0, 2)):
            pool = later if (src.chance(0.05) or not same) else same
            if pool:
                p = src.choice(pool)
                if p not in parents:
                    parents.append(p)
        attrs: dict[str, Any] = {}
        if uid[0] != "Action" or src.chance(0.1):
            for name, ty in ATTRS.items():
                if src.chance(0.7):
                    attrs[name] = gen_typed_json(src, ty, 0.05)
        ent: dict[str, Any] = {
            "uid": json_uid(uid),
            "attrs": attrs,
            "parents": [json_uid(p) for p in parents],
        }
        if src.chance(0.3):
            ent["tags"] = {k: src.choice(STRINGS) for k in TAG_KEYS if src.chance(0.5)}
        out.append(ent)
    return out


# ---------------------------------------------------------------------------------------------
# Expressions (Cedar text, fully parenthesized so precedence never matters)


class ExprGen:
    def __init__(self, src: Src, wrong: float = 0.04) -> None:
        self.src = src
        self.wrong = wrong

    # -- leaves -------------------------------------------------------------------------------
    def entity_base(self) -> str:
        """An entity-valued expression whose attributes we read."""
        return self.src.choice(
            [
                "principal",
                "principal",
                "resource",
                "resource",
                "action",
                "context.who",
                "resource.owner",
                "principal.owner",
                cedar_uid(self.src.choice(ALL_UIDS)),
            ]
        )

    def attr_of(self, ty: str) -> str | None:
        names = [n for n, t in ATTRS.items() if t == ty]
        if self.src.chance(0.05):
            names = ["missing"]
        if not names:
            return None
        return self.src.choice(names)

    def access(self, base: str, name: str) -> str:
        if name.isidentifier() and not self.src.chance(0.1):
            return f"{base}.{name}"
        return f"{base}[{cedar_str(name)}]"

    def leaf(self, ty: str) -> str:
        src = self.src
        k = src.int(0, 9)
        if k <= 3 or (ty in (DEC, IP) and k <= 5):
            return self.literal(ty)
        if k <= 6:  # attribute of an entity
            name = self.attr_of(ty)
            if name is not None:
                return self.access(self.entity_base(), name)
        if k == 7:  # context key
            keys = [n for n, t in CTX.items() if t == ty] or ["nope"]
            return self.access("context", src.choice(keys))
        if k == 8 and ty in (LONG, STR):  # record field
            rec = src.choice(["principal.meta", "resource.meta", "context.rec"])
            field_ = next(n for n, t in REC_FIELDS.items() if t == ty)
            return self.access(rec, field_)
        if ty == ENT:
            return src.choice(["principal", "action", "resource"])
        if ty == REC:
            return src.choice(["context", "principal.meta", "context.rec"])
        if ty == BOOL and src.chance(0.3):
            return "principal.meta.inner.flag"
        return self.literal(ty)

    def literal(self, ty: str) -> str:
        src = self.src
        if ty == LONG:
            return long_lit(gen_long(src))
        if ty == STR:
            return cedar_str(src.choice(STRINGS))
        if ty == BOOL:
            return src.choice(["true", "false"])
        if ty == DEC:
            lit = src.choice(DECIMALS_BAD) if src.chance(0.05) else src.choice(DECIMALS_OK)
            return f"decimal({cedar_str(lit)})"
        if ty == IP:
            lit = src.choice(IPS_BAD) if src.chance(0.05) else src.choice(IPS_OK)
            return f"ip({cedar_str(lit)})"
        if ty == ENT:
            return cedar_uid(src.choice(ALL_UIDS))
        if ty in SET_ELEM:
            return "[" + ", ".join(self.literal(SET_ELEM[ty]) for _ in range(src.int(0, 3))) + "]"
        if ty == REC:
            keys = [k for k in REC_FIELDS if src.chance(0.7)]
            return "{" + ", ".join(f"{k}: {self.literal(REC_FIELDS[k])}" for k in keys) + "}"
        raise AssertionError(ty)

    # -- compound -----------------------------------------------------------------------------
    def expr(self, ty: str, depth: int) -> str:
        src = self.src
        if src.chance(self.wrong):
            ty = src.choice(TYPES)
        if depth <= 0 or src.chance(0.25):
            return self.leaf(ty)
        d = depth - 1
        if ty != BOOL and src.chance(0.08):
            return f"(if {self.expr(BOOL, d)} then {self.expr(ty, d)} else {self.expr(ty, d)})"
        if ty == BOOL:
            return self.bool_expr(d)
        if ty == LONG:
            k = src.int(0, 4)
            if k == 0:
                return f"(-({self.expr(LONG, d)}))"
            op = src.choice(["+", "-", "*"])
            lhs = self.expr(LONG, d)
            # a big operand now and then, so overflow errors are common enough to matter
            rhs = long_lit(src.choice(LONGS_BIG)) if src.chance(0.4) else self.expr(LONG, d)
            return f"({lhs} {op} {rhs})"
        if ty == STR and src.chance(0.3):
            return f"{self.entity_base()}.getTag({cedar_str(src.choice([*TAG_KEYS, 'k9']))})"
        if ty in SET_ELEM:
            n = src.int(0, 3)
            return "[" + ", ".join(self.expr(SET_ELEM[ty], d) for _ in range(n)) + "]"
        if ty == REC:
            keys = [k for k in REC_FIELDS if src.chance(0.7)]
            return "{" + ", ".join(f"{k}: {self.expr(REC_FIELDS[k], d)}" for k in keys) + "}"
        return self.leaf(ty)

    def bool_expr(self, d: int) -> str:
        src = self.src
        e = self.expr
        k = src.int(0, 21)
        if k == 0:
            t = src.choice(TYPES)
            return f"({e(t, d)} {src.choice(['==', '!='])} {e(t, d)})"
        if k in (1, 2):
            op = src.choice(["<", "<=", ">", ">="])
            lhs = e(LONG, d)
            if src.chance(0.3):  # arithmetic right here, where overflow decides the policy
                big = long_lit(src.choice(LONGS_BIG))
                lhs = f"({lhs} {src.choice(['+', '-', '*'])} {big})"
            return f"({lhs} {op} {e(LONG, d)})"
        if k in (3, 4):
            return f"({e(BOOL, d)} {src.choice(['&&', '||'])} {e(BOOL, d)})"
        if k == 5:
            return f"(!({e(BOOL, d)}))"
        if k == 6:
            return f"(if {e(BOOL, d)} then {e(BOOL, d)} else {e(BOOL, d)})"
        if k == 7:  # has
            base = src.choice([self.entity_base(), "context", "principal.meta", "context.rec"])
            name = src.choice([*ATTRS, *CTX, *REC_FIELDS, "missing"])
            rhs = name if name.isidentifier() and src.chance(0.8) else cedar_str(name)
            return f"({base} has {rhs})"
        if k == 8:  # guarded attribute access: the common, error-free idiom
            base = self.entity_base()
            ty = src.choice([LONG, STR, BOOL])
            name = self.attr_of(ty) or "age"
            acc = self.access(base, name)
            if ty == LONG:
                rhs = f"{src.choice(['<', '>=', '=='])} {e(LONG, d)}"
            elif ty == STR:
                rhs = f"== {e(STR, d)}"
            else:
                rhs = "== true"
            return f"({base} has {cedar_str(name)} && {acc} {rhs})"
        if k in (9, 10):  # in
            lhs = e(ENT, d)
            rhs = e(SET_ENT, d) if src.chance(0.3) else e(ENT, d)
            return f"({lhs} in {rhs})"
        if k == 11:  # is / is ... in
            t = src.choice([*ENTITY_TYPES, "Action"])
            if src.chance(0.4):
                return f"({e(ENT, d)} is {t} in {e(ENT, d)})"
            return f"({e(ENT, d)} is {t})"
        if k == 12:  # like
            pat = "".join(src.choice(LIKE_PIECES) for _ in range(src.int(0, 4)))
            return f'({e(STR, d)} like "{pat}")'
        if k in (13, 14):  # set methods
            st_ = src.choice([SET_LONG, SET_STR, SET_ENT])
            m = src.int(0, 3)
            if m == 0:
                return f"{e(st_, d)}.contains({e(SET_ELEM[st_], d)})"
            if m == 3:
                return f"{e(st_, d)}.isEmpty()"
            meth = "containsAll" if m == 1 else "containsAny"
            return f"{e(st_, d)}.{meth}({e(st_, d)})"
        if k == 15:  # decimal
            meth = src.choice(["lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"])
            return f"{e(DEC, d)}.{meth}({e(DEC, d)})"
        if k == 16:  # ip
            if src.chance(0.4):
                return f"{e(IP, d)}.isInRange({e(IP, d)})"
            meth = src.choice(["isLoopback", "isIpv4", "isIpv6", "isMulticast"])
            return f"{e(IP, d)}.{meth}()"
        if k == 17:  # tags
            key = cedar_str(src.choice([*TAG_KEYS, "k9"]))
            return f"{self.entity_base()}.hasTag({key})"
        if k == 18:  # datetime / duration (Cedar 4 extension), rarely
            a, b = cedar_str(src.choice(DATETIMES)), cedar_str(src.choice(DATETIMES))
            if src.chance(0.5):
                return f"(datetime({a}) {src.choice(['<', '==', '>='])} datetime({b}))"
            dur = cedar_str(src.choice(DURATIONS))
            return f"(datetime({a}).offset(duration({dur})) > datetime({b}))"
        return self.leaf(BOOL)


# ---------------------------------------------------------------------------------------------
# Policies


def gen_scope_entity(src: Src, var: str) -> str:
    """One scope constraint. Unconstrained half the time and biased towards the types requests
    use, so that most policies apply to a fair share of requests and their conditions run."""
    if var == "action":
        k = src.int(0, 9)
        if k <= 3:
            return "action"
        acts = [("Action", a) for a in ACTIONS] + [("Action", "fly")]
        if k <= 5:
            return f"action == {cedar_uid(src.choice(acts))}"
        if k <= 7:
            return f"action in {cedar_uid(src.choice(acts))}"
        n = src.int(1, 3)
        return "action in [" + ", ".join(cedar_uid(src.choice(acts)) for _ in range(n)) + "]"
    k = src.int(0, 9)
    if k <= 4:
        return var
    usual = "User" if var == "principal" else src.choice(["Doc", "Folder"])
    t = usual if src.chance(0.7) else src.choice(ENTITY_TYPES)
    if k <= 6:
        return f"{var} is {t}"
    if k == 7:
        return f"{var} == {cedar_uid(src.choice(ALL_UIDS))}"
    groups = [u for u in ALL_UIDS if u[0] in ("Group", "Folder")]
    uid = cedar_uid(src.choice(groups) if src.chance(0.7) else src.choice(ALL_UIDS))
    if k == 8:
        return f"{var} in {uid}"
    return f"{var} is {t} in {uid}"


def gen_policy(src: Src, max_depth: int = 3) -> str:
    parts = []
    if src.chance(0.05):
        parts.append(f"// note {src.int(0, 99)}\n")
    if src.chance(0.08):
        parts.append(src.choice(['@id("p")\n', '@advice("x y")\n', "@shadow\n"]))
    effect = "forbid" if src.chance(0.3) else "permit"
    scope = ", ".join(gen_scope_entity(src, v) for v in ("principal", "action", "resource"))
    parts.append(f"{effect}({scope})")
    eg = ExprGen(src)
    for _ in range(src.int(0, 2)):
        kw = "unless" if src.chance(0.25) else "when"
        parts.append(f"\n  {kw} {{ {eg.expr(BOOL, src.int(0, max_depth))} }}")
    parts.append(";")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Request:
    principal: Uid
    action: Uid
    resource: Uid
    context: dict[str, Any] = field(default_factory=dict)

    def cedarpy(self) -> dict[str, Any]:
        return {
            "principal": json_uid(self.principal),
            "action": json_uid(self.action),
            "resource": json_uid(self.resource),
            "context": self.context,
        }


def gen_request(src: Src) -> Request:
    users = [u for u in ALL_UIDS if u[0] == "User"]
    res = [u for u in ALL_UIDS if u[0] in ("Doc", "Folder")]
    nonact = [u for u in ALL_UIDS if u[0] != "Action"]
    principal = src.choice(users) if src.chance(0.75) else src.choice(nonact)
    resource = src.choice(res) if src.chance(0.8) else src.choice(nonact)
    action = ("Action", src.choice([*ACTIONS, "fly"]))
    ctx: dict[str, Any] = {}
    for key, ty in CTX.items():
        if src.chance(0.7):
            ctx[key] = gen_typed_json(src, ty, 0.05)
    return Request(principal, action, resource, ctx)


# ---------------------------------------------------------------------------------------------
# Worlds


@dataclass
class World:
    policies: list[str]
    entities: list[dict[str, Any]]
    requests: list[Request]
    seed: int | None = None  # set when the policies came from a RandSrc

    @property
    def policy_text(self) -> str:
        return "\n".join(self.policies) + "\n"

    @property
    def entities_json(self) -> str:
        return json.dumps(self.entities)

    def __repr__(self) -> str:  # what Hypothesis prints for a falsifying example
        return (
            f"World(seed={self.seed}, n_policies={len(self.policies)})\n"
            f"--- policies ---\n{self.policy_text}"
            f"--- entities ---\n{json.dumps(self.entities, indent=1, ensure_ascii=False)}\n"
            f"--- requests ---\n" + "\n".join(repr(r) for r in self.requests)
        )


def build_world(src: Src, n_policies: int, n_requests: int, max_depth: int = 3) -> World:
    # `@id` names must be unique in tether (they name reasons); make each one so.
    policies = [
        gen_policy(src, max_depth).replace('@id("p")', f'@id("p{i}")') for i in range(n_policies)
    ]
    entities = gen_entities(src)
    requests = [gen_request(src) for _ in range(n_requests)]
    return World(policies, entities, requests)


@st.composite
def worlds(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    min_requests: int = 12,
    max_requests: int = 16,
    max_policies: int = 200,
    shrinkable_max: int = 24,
) -> World:
    """A random world. Up to `shrinkable_max` policies are drawn from Hypothesis directly;
    bigger policy sets come from a Hypothesis-drawn seed."""
    src = HypSrc(draw)
    size = src.int(0, 9)
    if size <= 6 or max_policies <= shrinkable_max:
        n = src.int(1, min(12, max_policies))
    elif size <= 8:
        n = src.int(min(13, max_policies), min(shrinkable_max, max_policies))
    else:
        n = src.int(shrinkable_max + 1, max_policies)
    n_req = src.int(min_requests, max_requests)
    if n <= shrinkable_max:
        return build_world(src, n, n_req)
    seed = src.int(0, 2**32 - 1)
    w = build_world(RandSrc(seed), n, 0)
    w.seed = seed
    w.requests = [gen_request(src) for _ in range(n_req)]
    return w


def random_world(seed: int, n_policies: int, n_requests: int = 12) -> World:
    """A world from a plain seed (no Hypothesis), e.g. for quick generator checks."""
    w = build_world(RandSrc(seed), n_policies, n_requests)
    w.seed = seed
    return w


def cedarpy_inputs(world: World) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(policy text, entity list, request dicts) as cedarpy.is_authorized_batch takes them."""
    return world.policy_text, world.entities, [r.cedarpy() for r in world.requests]
