"""RFC 9420 tree math against the MLS interoperability vectors (tree-math.json).

Every published tree size (1 to 512 leaves) and every node of it: root, left, right, parent
and sibling, with ``null`` where the RFC's function is undefined (our functions raise there).
The position arithmetic the key trees use is checked against the RFC functions it replaces.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmsec.security import treemath

VECTORS = pathlib.Path("/work/shared/vectors/mls/tree-math.json")
if not VECTORS.exists():  # the repository's own copy, if the shared folder is not mounted
    VECTORS = pathlib.Path(__file__).resolve().parent / "mls" / "tree-math.json"


def load() -> list[dict[str, Any]]:
    if not VECTORS.exists():
        pytest.skip("MLS tree-math vectors not available")
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())
    return data


def _or_none(fn: Callable[[], int]) -> int | None:
    try:
        return fn()
    except ValueError:
        return None


@pytest.mark.parametrize("case", load(), ids=lambda c: f"n{c['n_leaves']}")
def test_tree_math_vector(case: dict[str, Any]) -> None:
    n = case["n_leaves"]
    assert treemath.node_width(n) == case["n_nodes"]
    assert treemath.root(n) == case["root"]
    width = case["n_nodes"]
    assert [_or_none(lambda x=x: treemath.left(x)) for x in range(width)] == case["left"]
    assert [_or_none(lambda x=x: treemath.right(x)) for x in range(width)] == case["right"]
    assert [_or_none(lambda x=x: treemath.parent(x, n)) for x in range(width)] == case["parent"]
    assert [_or_none(lambda x=x: treemath.sibling(x, n)) for x in range(width)] == case["sibling"]


def test_vectors_cover_the_published_sizes() -> None:
    assert [c["n_leaves"] for c in load()] == [1 << i for i in range(10)]


def test_non_power_of_two_refused() -> None:
    with pytest.raises(ValueError):
        treemath.root(3)


@given(st.integers(min_value=0, max_value=12), st.data())
def test_position_arithmetic_matches_rfc_functions(log_n: int, data: st.DataObject) -> None:
    n = 1 << log_n
    x = data.draw(st.integers(min_value=0, max_value=treemath.node_width(n) - 1))
    lvl = treemath.level(x)
    assert treemath.node_at(lvl, treemath.position(x)) == x
    # ancestor() agrees with walking parent() up, at every height up to the root
    walk = [x, *treemath.direct_path(x, n)]
    for node in walk:
        assert treemath.ancestor(x, treemath.level(node)) == node
    # direct path and copath are consistent with sibling()
    assert len(treemath.copath(x, n)) == len(treemath.direct_path(x, n))
    for node, sib in zip([x, *treemath.direct_path(x, n)], treemath.copath(x, n), strict=False):
        assert treemath.sibling(node, n) == sib


@given(st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=1023))
def test_index_stable_when_tree_doubles(log_n: int, leaf: int) -> None:
    n = 1 << log_n
    leaf %= n
    small = treemath.direct_path(treemath.leaf_node(leaf), n)
    big = treemath.direct_path(treemath.leaf_node(leaf), 2 * n)
    assert big[: len(small)] == small
    assert big[len(small)] == treemath.root(2 * n)
