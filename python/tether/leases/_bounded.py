"""Provider calls bounded by a deadline, with no timer for calls that finish at once.

A cancel scope with a deadline costs tens of microseconds on a busy machine (it schedules a
timer), which would dominate the cost of issuing a lease from a local provider. So the
coroutine is first stepped by hand: if it finishes without suspending, its result is
returned and no timer was ever set. Only if it suspends is the rest of it run inside a
deadline scope, by forwarding what it yields to the event loop unchanged (exactly what
``await`` does), which works the same on every anyio backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, TypeVar

import anyio

__all__ = ["call_with_deadline"]

T = TypeVar("T")


class _Resume:
    """Awaitable that continues a coroutine already stepped once (it yielded ``pending``)."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: object) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        try:
            while True:
                try:
                    sent = yield pending
                except GeneratorExit:
                    raise
                except BaseException as exc:  # cancellation and errors go to the coroutine
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
        except StopIteration as done:
            return done.value
        finally:
            coro.close()  # no-op once finished; stops it if we are abandoned


async def call_with_deadline(
    deadline: float, fn: Callable[..., Awaitable[T]], *args: object
) -> tuple[bool, T | None]:
    """``(True, result)`` if ``fn(*args)`` finished by ``deadline`` (anyio time), else
    ``(False, None)`` after cancelling it. Errors from ``fn`` propagate."""
    coro = fn(*args)
    if type(coro) is not CoroutineType:  # exact type: an ABC isinstance costs microseconds
        with anyio.CancelScope(deadline=deadline):
            return True, await coro
        return False, None
    try:
        pending = coro.send(None)
    except StopIteration as done:
        return True, done.value
    except BaseException:
        coro.close()
        raise
    with anyio.CancelScope(deadline=deadline):
        result: T = await _Resume(coro, pending)
        return True, result
    return False, None
