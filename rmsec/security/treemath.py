"""Array-based binary trees: the left-balanced tree indexing of RFC 9420 (MLS), appendix C.

Why this indexing: node ``x`` of a tree with ``n`` leaves lives at array position ``x``, leaves
at the even positions (leaf ``i`` is node ``2 i``) and the parents in between, so a key tree of
a million members is one flat ``bytearray`` addressed by arithmetic, with no Python object per
node.  A node keeps its index when the tree doubles (the old root becomes the new root's left
child), so growing a tree moves nothing.

RFC 9420 trees are always *full*: ``n`` is a power of two.  The functions named as in the RFC
(:func:`level`, :func:`left`, :func:`right`, :func:`parent`, :func:`sibling`, :func:`root`,
:func:`direct_path`, :func:`copath`) are checked against the published vectors
(``tests/vectors/test_treemath.py``); the others are the position arithmetic the key-management
schemes use (a node at level ``l`` and position ``m`` is ``(m << (l + 1)) | (2**l - 1)``), which
also lets a tree of degree ``2**k`` be laid over the binary one by using every ``k``-th level.
"""

from __future__ import annotations


def log2(x: int) -> int:
    """Floor of log2 of ``x`` (0 for ``x`` of 0)."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Height of node ``x`` above the leaves: the number of trailing one bits of ``x``."""
    y = x + 1
    return (y & -y).bit_length() - 1


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def node_width(n: int) -> int:
    """Number of array slots of a tree with ``n`` leaves."""
    return 0 if n == 0 else 2 * (n - 1) + 1


def _check_leaves(n: int) -> None:
    if n < 1 or n & (n - 1):
        raise ValueError(f"an RFC 9420 tree has a power-of-two number of leaves, not {n}")


def root(n: int) -> int:
    """Index of the root of a tree with ``n`` leaves."""
    _check_leaves(n)
    return (1 << log2(node_width(n))) - 1


def left(x: int) -> int:
    """Left child of the parent node ``x``."""
    k = level(x)
    if k == 0:
        raise ValueError("a leaf has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    """Right child of the parent node ``x``."""
    k = level(x)
    if k == 0:
        raise ValueError("a leaf has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n: int) -> int:
    """Parent of node ``x`` in a tree with ``n`` leaves."""
    if x == root(n):
        raise ValueError("the root has no parent")
    if x >= node_width(n):
        raise ValueError("node outside the tree")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n: int) -> int:
    """The other child of ``x``'s parent."""
    p = parent(x, n)
    return right(p) if x < p else left(p)


def direct_path(x: int, n: int) -> list[int]:
    """Ancestors of ``x`` from its parent up to the root (empty for the root)."""
    r = root(n)
    path = []
    while x != r:
        x = parent(x, n)
        path.append(x)
    return path


def copath(x: int, n: int) -> list[int]:
    """Siblings of ``x`` and of each of its ancestors below the root."""
    if x == root(n):
        return []
    nodes = [x, *direct_path(x, n)]
    nodes.pop()
    return [sibling(y, n) for y in nodes]


# ------------------------------------------------------------------ position arithmetic


def leaf_node(i: int) -> int:
    """Node index of leaf ``i``."""
    return 2 * i


def node_at(lvl: int, position: int) -> int:
    """The node at height ``lvl`` that is the ``position``-th from the left on its level."""
    return (position << (lvl + 1)) | ((1 << lvl) - 1)


def position(x: int) -> int:
    """How many nodes of the same level lie left of ``x``."""
    return x >> (level(x) + 1)


def ancestor(x: int, lvl: int) -> int:
    """The ancestor of ``x`` at height ``lvl`` (``x`` itself at its own level)."""
    if lvl < level(x):
        raise ValueError("an ancestor is not below its descendant")
    return node_at(lvl, x >> (lvl + 1))
