"""diff's operations are in Operation.key order (it sorts each account's operations as they are
planned, then by priority alone, then puts the group creations in): the same list a full sort by
Operation.key gives, on arbitrary worlds (tests/unit/test_plan_properties.py's)."""

from __future__ import annotations

from hypothesis import given

from jml.model import Operation
from tests.unit.test_plan_properties import SETTINGS, World, worlds


@SETTINGS
@given(worlds())
def test_operations_in_key_order(world: World) -> None:
    ops = world.plan().operations
    assert ops == sorted(ops, key=Operation.key)
    keys = [op.key() for op in ops]
    assert len(set(keys)) == len(keys)  # no ties: the order is the one the full sort gives
