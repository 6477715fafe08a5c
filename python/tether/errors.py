"""The one exception tree: every error tether raises derives from `TetherError`.

Pure Python, importable without the native module (whose exceptions subclass it).

```text
TetherError
├── PolicyError          a policy (or the state file's conditions) failed to parse,
│                        validate or compile  (tether._core)
├── SchemaError          a schema failed to parse  (tether._core)
├── EntityError          entity data is malformed or invalid  (tether._core)
├── RequestError         an authorization request is malformed  (tether._core)
├── StateFileError       state.toml is malformed (also a ValueError)  (tether.state)
├── AuthenticationError  a token or credential was refused  (tether.identity)
│   └── InvalidToken ... the identity module's finer errors
├── LeaseError           a credential lease could not be issued, renewed or revoked
│                        (tether.leases)
├── StoreError           a shared-state operation failed  (tether.store.shared_state)
│   └── StoreUnavailable the shared store (named, with the cause) could not be reached:
│                        decisions that need it deny
└── Denied               an action was refused; `.decision.kind` says why  (tether.tasks)
    ├── TaskRevoked      the task or an ancestor is revoked (or its deadline passed)
    ├── ApprovalRefused  an obligation was not approved (refused, timed out, failed,
    │                    no approver, or too many requests)
    └── SharedBudgetDenied  a shared budget did not cover a permit's spending
                         (tether.tasks.shared)
```
"""

from __future__ import annotations


class TetherError(Exception):
    """Base of every tether error."""
