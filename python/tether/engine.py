"""Loading policies, schema and entities from files; a thin layer over `_core.Engine`."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import _core
from tether.state import load_state

if TYPE_CHECKING:
    from tether.explain import Explanation
    from tether.shadow import Shadow, ShadowStats

StrPath = str | PathLike[str]


class Engine(_core.Engine):
    """The compiled Cedar engine. See `_core.Engine` for the request methods."""

    @classmethod
    def from_files(
        cls,
        policies: StrPath | list[StrPath],
        schema: StrPath | None = None,
        entities: StrPath | None = None,
        *,
        state: StrPath | None = None,
        on_error: str = "skip",
        validate: bool = True,
        validate_requests: bool = True,
    ) -> Engine:
        """Build an engine from `.cedar` file(s), a `.cedarschema` (or JSON schema),
        a Cedar JSON entities file and a task state file (`state.toml`). Several policy
        files form one policy set; errors name the file, line and column."""
        paths = policies if isinstance(policies, list) else [policies]
        sources = [(str(p), Path(p).read_text(encoding="utf-8")) for p in paths]
        schema_text = Path(schema).read_text(encoding="utf-8") if schema is not None else None
        entities_text = Path(entities).read_text(encoding="utf-8") if entities is not None else None
        state_spec = load_state(state) if state is not None else None
        try:
            return cls(
                sources,
                schema_text,
                entities_text,
                state=state_spec,
                on_error=on_error,
                validate=validate,
                validate_requests=validate_requests,
            )
        except _core.SchemaError as e:
            if schema is None:
                raise
            raise _core.SchemaError(f"{schema}: {e}") from None
        except _core.EntityError as e:
            if entities is None:
                raise
            raise _core.EntityError(f"{entities}: {e}") from None

    def explain(
        self,
        principal: Any,
        action: Any,
        resource: Any,
        context: Mapping[str, Any] | None = None,
    ) -> Explanation:
        """Why this request is allowed or denied: every policy's scope and each
        condition's value or error, from Cedar's own evaluator over this engine's
        policies, schema and entities (see `tether.explain`)."""
        from tether.explain import explain

        return explain(self, principal, action, resource, context)

    def shadow(
        self,
        policies: Any,
        schema: Any = None,
        *,
        validate: bool = True,
        capacity: int = 65536,
    ) -> Shadow:
        """Decide every request again with a candidate policy set (text, or a list of
        `(name, text)`), off the hot path, never enforced; `shadow_stats()` counts the
        differences, and an attached `AuditLog` writes them into the receipts. The
        candidate reads this engine's entities (copied now; later upserts and removals
        are applied to both). Replaces any earlier shadow."""
        from tether.shadow import Shadow

        self.unshadow()
        # Without a schema of its own, the candidate also needs the action entities
        # (action groups) that this engine's schema declared.
        ents = self.entities_json(actions=schema is None)
        candidate = Engine(policies, schema, ents, validate=validate)
        s = Shadow(candidate, capacity=capacity)
        self.__dict__["_shadow"] = s
        log = self.__dict__.get("_audit")
        if log is not None:
            log.shadow = s  # the receipt writer compares, and records the difference
        else:
            s.watch(self)
        return s

    def unshadow(self) -> None:
        """Stop comparing with the candidate (queued comparisons finish first)."""
        s = self.__dict__.pop("_shadow", None)
        if s is not None:
            log = self.__dict__.get("_audit")
            if log is not None and log.shadow is s:
                log.shadow = None
            s.close()

    def shadow_stats(self) -> ShadowStats | None:
        """Counts of the shadow comparison so far (None without a shadow). Comparisons
        run in the background: call `shadow_flush()` first for an exact count."""
        s: Shadow | None = self.__dict__.get("_shadow")
        return None if s is None else s.stats()

    def shadow_flush(self) -> None:
        """Wait until every decision made so far has been compared with the shadow."""
        s: Shadow | None = self.__dict__.get("_shadow")
        if s is not None:
            log = self.__dict__.get("_audit")
            if log is not None and log.shadow is s:
                log.flush()
            s.flush()

    def upsert_entities(self, entities: Any) -> int:
        n = super().upsert_entities(entities)
        s: Shadow | None = self.__dict__.get("_shadow")
        if s is not None:
            s.candidate.upsert_entities(entities)
        return n

    def remove_entities(self, uids: Any) -> int:
        uids = list(uids)
        n = super().remove_entities(uids)
        s: Shadow | None = self.__dict__.get("_shadow")
        if s is not None:
            s.candidate.remove_entities(uids)
        return n
