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
