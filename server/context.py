"""The current call: who is calling, under which request id, until when.

Set by the interceptor for the duration of one RPC (a task-local context variable); handlers read
it through `current()`. Database connections are never kept here.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from server.authz import ANONYMOUS, Principal

_current: contextvars.ContextVar["CallContext"] = contextvars.ContextVar("onestop_call")


@dataclass(slots=True)
class CallContext:
    method: str
    request_id: str
    principal: Principal = ANONYMOUS
    via_gateway: bool = False


def current() -> CallContext:
    """The call being served; outside an RPC (unit tests of rules) an anonymous context."""
    try:
        return _current.get()
    except LookupError:
        return CallContext(method="", request_id="-")


def enter(call: CallContext) -> contextvars.Token:
    return _current.set(call)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)


def request_id() -> str:
    return current().request_id
