"""Methods whose requests may carry nothing beyond their contract. Every other method drops unknown
fields (never stored, never republished); a `strict` one refuses them, INVALID_ARGUMENT naming where:
in a feed that must stay anonymous (a partner's counter), an extra field is an identifier or free
text someone tried to slip in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import unknown_fields
from google.protobuf.message import Message

from services.common.errors import InvalidArgument

Method = TypeVar("Method", bound=Callable[..., Any])
MARK = "refuses_unknown_fields"


def strict(method: Method) -> Method:
    """On a servicer method (under @allow, which keeps the mark)."""
    setattr(method, MARK, True)
    return method


def is_strict(behavior: Any) -> bool:
    return bool(getattr(behavior, MARK, False))


def _unknown_field(message: Message, path: str = "") -> str | None:
    """Where `message` (or a message inside it) carries a field the contract does not have: a feed
    that adds a MAC address or a licence plate to its counts shows up here."""
    found = unknown_fields.UnknownFieldSet(message)
    if len(found):
        return f"{path or 'the request'} carries field {found[0].field_number}"
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        values = value if descriptor.is_repeated else [value]
        for i, item in enumerate(values):
            where = f"{path}.{descriptor.name}" if path else descriptor.name
            inner = _unknown_field(item, f"{where}[{i}]" if descriptor.is_repeated else where)
            if inner:
                return inner
    return None


def refuse_unknown_fields(request: Message) -> None:
    stray = _unknown_field(request)
    if stray:
        raise InvalidArgument(
            f"{stray} the contract does not have: this method takes nothing beyond its contract "
            "(no identifiers, no free text)"
        )
