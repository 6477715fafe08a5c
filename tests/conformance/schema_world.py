"""A Cedar schema for `cedar_gen`'s vocabulary, and the conversion of a generated world into one
that conforms to it (so decisions can be compared with the schema on both sides).

Every attribute and context key is optional, every action applies to every entity type, and
entities carry String tags. Conforming a world drops what the schema cannot hold (attributes of
the wrong type, parents of the wrong type, action entities, replaced by the schema's) and the
requests for undeclared actions; policies are kept or dropped by the validators themselves.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.cedar_gen import (
    ATTRS,
    BOOL,
    CTX,
    DEC,
    ENT,
    IP,
    LONG,
    PARENT_TYPES,
    REC,
    REC_FIELDS,
    SET_ELEM,
    STR,
    Request,
    World,
)

SCHEMA_TYPES = {
    LONG: "Long",
    STR: "String",
    BOOL: "Bool",
    DEC: "decimal",
    IP: "ipaddr",
    ENT: "User",
    REC: "Rec",
    "set<long>": "Set<Long>",
    "set<str>": "Set<String>",
    "set<entity>": "Set<User>",
}
ENTITY_TYPES = ["User", "Group", "Doc", "Folder", "Robot"]
DECLARED_ACTIONS = ["any", "view", "edit", "delete", "share", "read", "write"]


def _record(fields: dict[str, str]) -> str:
    return "{ " + ", ".join(f'"{k}"?: {SCHEMA_TYPES[t]}' for k, t in fields.items()) + " }"


def _schema() -> str:
    attrs = _record(ATTRS)
    rec = _record(REC_FIELDS)[:-2] + ', "inner"?: { "flag": Bool } }'
    applies = f"[{', '.join(ENTITY_TYPES)}]"
    lines = [f"type Rec = {rec};", f"type Ctx = {_record(CTX)};"]
    for t in ENTITY_TYPES:
        parents = sorted(PARENT_TYPES.get(t, set()))
        member = f" in [{', '.join(parents)}]" if parents else ""
        lines.append(f"entity {t}{member} = {attrs} tags String;")
    body = f"appliesTo {{ principal: {applies}, resource: {applies}, context: Ctx }};"
    lines.append(f'action "any" {body}')
    others = ", ".join(f'"{a}"' for a in DECLARED_ACTIONS[1:])
    lines.append(f'action {others} in ["any"] {body}')
    return "\n".join(lines) + "\n"


SCHEMA = _schema()


def conforms(ty: str, value: Any) -> bool:
    """Whether Cedar JSON `value` has the schema type declared for generator type `ty`."""
    if ty == LONG:
        return isinstance(value, int) and not isinstance(value, bool)
    if ty == STR:
        return isinstance(value, str)
    if ty == BOOL:
        return isinstance(value, bool)
    if ty in (DEC, IP):
        fn = "decimal" if ty == DEC else "ip"
        return isinstance(value, dict) and value.get("__extn", {}).get("fn") == fn
    if ty == ENT:
        return isinstance(value, dict) and value.get("__entity", {}).get("type") == "User"
    if ty in SET_ELEM:
        return isinstance(value, list) and all(conforms(SET_ELEM[ty], v) for v in value)
    if ty == REC:
        if not isinstance(value, dict) or "__extn" in value or "__entity" in value:
            return False
        inner = value.get("inner", {"flag": True})
        return (
            set(value) <= {*REC_FIELDS, "inner"}
            and all(conforms(t, value[k]) for k, t in REC_FIELDS.items() if k in value)
            and isinstance(inner, dict)
            and set(inner) == {"flag"}
            and isinstance(inner["flag"], bool)
        )
    raise AssertionError(ty)


def _conforming(record: dict[str, Any], declared: dict[str, str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in declared and conforms(declared[k], v)}


def action_entities() -> list[dict[str, Any]]:
    """The schema's action hierarchy as entities (cedarpy does not add it from the schema)."""
    return [
        {
            "uid": {"type": "Action", "id": a},
            "attrs": {},
            "parents": [] if a == "any" else [{"type": "Action", "id": "any"}],
        }
        for a in DECLARED_ACTIONS
    ]


def conform_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = action_entities()
    for e in entities:
        ty = e["uid"]["type"]
        if ty == "Action":
            continue
        allowed = PARENT_TYPES.get(ty, set())
        out.append(
            {
                "uid": e["uid"],
                "attrs": _conforming(e["attrs"], ATTRS),
                "parents": [p for p in e["parents"] if p["type"] in allowed],
                "tags": e.get("tags", {}),
            }
        )
    return out


def conform_request(req: Request) -> Request | None:
    if req.action[1] not in DECLARED_ACTIONS:
        return None
    return Request(req.principal, req.action, req.resource, _conforming(req.context, CTX))


def conform_world(world: World, policies: list[str]) -> World:
    """`world` with the given (validated) policies, its entities and requests made to fit."""
    requests = [r for r in map(conform_request, world.requests) if r is not None]
    return World(policies, conform_entities(world.entities), requests, world.seed)
