"""The gateway's live-stream slots: a total, a share per caller, and every slot given back."""

from __future__ import annotations

import pytest

from services.gateway.watches import Full, WatchSlots


def test_slots_per_caller_and_in_all() -> None:
    slots = WatchSlots(total=3, per_caller=2)
    first, second = slots.take("token-a"), slots.take("token-a")
    with pytest.raises(Full, match="you have 2 live streams open"):
        slots.take("token-a")
    other = slots.take("token-b")
    with pytest.raises(Full, match="3 live streams are open"):
        slots.take("token-c")
    slots.give_back(first)
    slots.give_back(other)
    assert len(slots) == 1 and slots.take("token-c") and slots.take("token-a")
    slots.give_back(second)
    assert len(slots) == 2
