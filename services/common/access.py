"""Who may call each RPC: a rule on every servicer method, checked before the method's body runs and
readable back, so the role table (`almere roles`, docs/roles.md) is the code's own. The rule is the
coarse one (which roles may call at all); finer ones (an operator's own facilities, an agency's own
incidents, what a caller sees) stay in each service's logic module."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.common.auth import Identity, Role, current_identity
from services.common.errors import PermissionDenied

# Every role but a service's own (`service:<name>`), the public's and a partner's: who may make the
# reads open to any caller. A service's token calls only what a rule names it for; a partner only
# what its own data and agreements need (its reads of others' data go through their agreements).
ANY_CALLER = frozenset(Role) - {Role.SERVICE, Role.PUBLIC, Role.PARTNER}
# The reads the open-data feeds are made of (facilities, occupancy, incidents and planned events as
# anybody may see them): any caller and the public.
OPEN_DATA = ANY_CALLER | {Role.PUBLIC}

Method = TypeVar("Method", bound=Callable[..., Any])
_RULE = "access_rule"


@dataclass(frozen=True, kw_only=True)
class Rule:
    roles: frozenset[Role]
    # What narrows a role's access inside the method (e.g. an operator: its own facilities).
    notes: Mapping[Role, str] = field(default_factory=dict)

    def check(self, identity: Identity, method: str) -> None:
        if identity.role not in self.roles:
            allowed = ", ".join(r.value for r in Role if r in self.roles)
            raise PermissionDenied(f"role {identity.role_name} may not {method} (allowed: {allowed})")


def allow(*roles: Role | Iterable[Role], notes: Mapping[Role, str] | None = None) -> Callable[[Method], Method]:
    """`@allow(Role.ENGINEER, logic.WRITERS, notes={Role.OPERATOR: "own facilities"})` on a servicer
    method: callers of other roles get PERMISSION_DENIED before the body runs. Unary,
    client-streaming and server-streaming (async generator) methods alike."""
    members: set[Role] = set()
    for group in roles:
        members.update((group,) if isinstance(group, Role) else group)
    stray = set(notes or {}) - members
    if stray:
        raise ValueError(f"notes for roles the rule does not allow: {', '.join(sorted(stray))}")
    rule = Rule(roles=frozenset(members), notes=dict(notes or {}))

    def decorate(method: Method) -> Method:
        name = method.__name__
        wrapped: Callable[..., Any]
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def streaming(self: Any, request: Any, context: Any) -> Any:
                rule.check(current_identity.get(), name)
                async for response in method(self, request, context):
                    yield response

            wrapped = streaming
        else:

            @functools.wraps(method)
            async def unary(self: Any, request: Any, context: Any) -> Any:
                rule.check(current_identity.get(), name)
                return await method(self, request, context)

            wrapped = unary
        setattr(wrapped, _RULE, rule)
        return wrapped  # type: ignore[return-value]

    return decorate


def rule_of(method: object) -> Rule | None:
    """The rule `allow` put on a servicer method, if any."""
    rule = getattr(method, _RULE, None)
    return rule if isinstance(rule, Rule) else None
