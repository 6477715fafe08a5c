"""Typed stub of the native module `tether._core` (built from `rust/` by maturin)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self, final

from typing_extensions import disjoint_base

__all__ = [
    "Decision",
    "DenialKind",
    "Engine",
    "Entity",
    "EntityError",
    "PolicyError",
    "RequestError",
    "SchemaError",
    "TaskHandle",
    "TetherError",
    "explain_json",
]

from tether.errors import TetherError as TetherError

class PolicyError(TetherError):
    policy_id: str | None
    file: str | None
    line: int | None
    column: int | None
    feature: str | None

class SchemaError(TetherError): ...
class EntityError(TetherError): ...
class RequestError(TetherError): ...

@final
class Entity:
    @property
    def type(self) -> str: ...
    @property
    def id(self) -> str: ...

EntityArg = str | tuple[str, str] | Entity | Mapping[str, Any]

@final
class DenialKind:
    """Why a decision denied (a PyO3 enum: compare with `==`, no value lookups)."""

    POLICY: ClassVar[DenialKind]
    SCOPE: ClassVar[DenialKind]
    DEADLINE: ClassVar[DenialKind]
    REVOKED: ClassVar[DenialKind]
    BUDGET: ClassVar[DenialKind]
    MONITOR: ClassVar[DenialKind]
    OBLIGATION: ClassVar[DenialKind]
    ERROR: ClassVar[DenialKind]

@final
class Decision:
    @property
    def allowed(self) -> bool: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def errors(self) -> list[str]: ...
    @property
    def error_messages(self) -> list[str]: ...
    @property
    def message(self) -> str | None: ...
    @property
    def obligations(self) -> list[str]: ...
    @property
    def revoked(self) -> str | None: ...
    @property
    def kind(self) -> DenialKind | None: ...
    def __bool__(self) -> bool: ...

@final
class TaskHandle:
    @property
    def id(self) -> int: ...
    @property
    def depth(self) -> int: ...
    @property
    def revoked(self) -> str | None: ...
    def revoke(self, reason: str) -> bool: ...
    def record_denial(self) -> str | None: ...

def explain_json(
    policies: str,
    schema: str | None,
    entities: str,
    principal: str,
    action: str,
    resource: str,
    context: str,
    links: list[tuple[str, str, str | None, str | None]] = ...,
) -> str: ...

# One policy text, or named sources (one per file) whose errors are located per source.
PolicySource = str | bytes | list[tuple[str, str]]

@disjoint_base
class Engine:
    def __new__(
        cls,
        policies: PolicySource,
        schema: str | bytes | None = None,
        entities: str | list[dict[str, Any]] | None = None,
        *,
        state: str | None = None,
        on_error: str = "skip",
        validate: bool = True,
        validate_requests: bool = True,
    ) -> Self: ...
    def authorize(
        self,
        principal: EntityArg,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
        *,
        reasons: bool = False,
    ) -> Decision: ...
    def is_allowed(
        self,
        principal: EntityArg,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
    ) -> bool: ...
    def authorize_batch(
        self, requests: Iterable[tuple[Any, ...]], context: Mapping[str, Any] | None = None
    ) -> list[bool]: ...
    def entity(self, type: str, id: str) -> Entity: ...
    def has_entity(self, type: str, id: str) -> bool: ...
    def upsert_entities(self, entities: str | list[dict[str, Any]]) -> int: ...
    def remove_entities(self, uids: Iterable[EntityArg]) -> int: ...
    def reload(
        self, policies: PolicySource, schema: str | bytes | None = None, *, validate: bool = True
    ) -> None: ...
    def link(
        self,
        template_id: str,
        policy_id: str,
        *,
        principal: str | tuple[str, str] | Entity | None = None,
        resource: str | tuple[str, str] | Entity | None = None,
    ) -> None: ...
    def link_all(
        self,
        links: Iterable[
            tuple[
                str,
                str,
                str | tuple[str, str] | Entity | None,
                str | tuple[str, str] | Entity | None,
            ]
        ],
    ) -> None: ...
    def unlink(self, policy_id: str) -> None: ...
    def templates(self) -> list[str]: ...
    def links(self) -> list[tuple[str, str, str | None, str | None]]: ...
    def policy_ids(self) -> list[str]: ...
    def annotations(self, policy_id: str) -> list[tuple[str, str]]: ...
    def policy_text(self) -> str: ...
    def explain_json(
        self, principal: str, action: str, resource: str, context: str = "{}"
    ) -> str: ...
    def entities_json(self, *, actions: bool = False) -> str: ...
    def entity_ids(self, type: str) -> list[str]: ...
    @property
    def version(self) -> int: ...
    @property
    def entity_count(self) -> int: ...
    @property
    def action_count(self) -> int: ...
    @property
    def policy_count(self) -> int: ...
    def normalize_context(
        self, action: str | tuple[str, str], context_json: str, *, validate: bool = True
    ) -> str: ...
    def warnings(self) -> list[str]: ...
    def open_task(
        self,
        agent: EntityArg,
        *,
        scope: Iterable[EntityArg] | None = None,
        deadline: float | None = None,
        parent: TaskHandle | None = None,
        intent: str = "",
        on_error: str | None = None,
        now: float | None = None,
        max_deny_streak: int = 0,
        max_rate: int = 0,
        rate_window: float = 1.0,
        max_deny_ratio: float = 0.0,
        min_denials: int = 0,
        revoke_on_budget_exhausted: bool = True,
        labels: Sequence[str] | None = None,
    ) -> TaskHandle: ...
    def authorize_task(
        self,
        task: TaskHandle,
        action: EntityArg,
        resource: EntityArg,
        context: Mapping[str, Any] | None = None,
        now: float | None = None,
        *,
        reasons: bool = False,
        approved: list[str] = ...,
    ) -> Decision: ...
    def escalate_task(
        self, task: TaskHandle, actions: Iterable[EntityArg], until: float
    ) -> None: ...
    def task_context(self, task: TaskHandle, *, now: float | None = None) -> str: ...
    def take_task_labels(self, task: TaskHandle) -> list[str]: ...
    def revert_permit(
        self,
        task: TaskHandle,
        spent: Mapping[str, int],
        *,
        message: str,
        kind: DenialKind = ...,
        counts: bool = True,
    ) -> Decision: ...
    @property
    def state_labels(self) -> list[tuple[str, str]]: ...
