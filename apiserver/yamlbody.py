"""YAML request bodies, decoded without letting aliases multiply them (CVE-2019-11253, "billion laughs").

An alias is a reference: PyYAML builds a graph whose shared nodes cost nothing while they are only
referenced, but every later step (validation, defaulting, JSON encoding for storage, a watch event)
walks the expanded tree, and 218 bytes of nested aliases expand to megabytes at 6 levels and terabytes
at 9. So the composed node graph is measured before any Python object is built, in time linear in the
graph (each node's expanded size is computed once), and refused when:
- an anchor contains an alias of itself (the expansion would be infinite);
- it nests deeper than `codec.MAX_DEPTH` once expanded (the handlers recurse on bodies);
- its expansion, encoded as JSON, would be larger than the body limit (what could not be sent as JSON
  may not arrive as YAML);
- aliases make up too much of it: go-yaml's rule since the fix kube-apiserver took, more than 100 nodes
  decoded through aliases, more than 1000 in all, and a share of alias decodes above 99% for documents up
  to 400,000 nodes, falling to 10% at 4,000,000.

Pure: bytes in, a value or `DecodeError` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from podnet.apiserver.codec import MAX_DEPTH, DecodeError

_RATIO_RANGE_LOW = 400_000
_RATIO_RANGE_HIGH = 4_000_000


def allowed_alias_ratio(decoded: int) -> float:
    """The share of a document's decoded nodes that may come from alias expansion, as go-yaml allows it."""
    if decoded <= _RATIO_RANGE_LOW:
        return 0.99
    if decoded >= _RATIO_RANGE_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _RATIO_RANGE_LOW) / (_RATIO_RANGE_HIGH - _RATIO_RANGE_LOW)


def excessive_aliasing(decoded: int, through_aliases: int) -> bool:
    return through_aliases > 100 and decoded > 1000 and through_aliases / decoded > allowed_alias_ratio(decoded)


class TooLarge(DecodeError):
    """A body whose aliases expand it past the body limit (HTTP 413, as a body that large would get)."""


@dataclass(frozen=True, slots=True)
class _Expansion:
    """What a node becomes once its aliases are expanded."""

    nodes: int  # nodes decoded, itself included
    json_bytes: int  # a lower bound of its compact JSON encoding
    depth: int  # levels, itself included, a scalar being one (as codec.check_depth counts them)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class _Measure:
    def __init__(self) -> None:
        self.expansions: dict[int, _Expansion] = {}
        self.decoded = 0
        self.through_aliases = 0

    def expansion(self, root: yaml.Node) -> _Expansion:
        """The expansion of every node under root, computed once per node and without recursion."""
        in_progress: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            key = id(node)
            if key in self.expansions:
                continue
            children = _children(node)
            if not children_done:
                in_progress.add(key)
                stack.append((node, True))
                for child in children:
                    if id(child) in in_progress:
                        raise DecodeError("yaml: an anchor's value contains an alias of itself")
                    stack.append((child, False))
                continue
            in_progress.discard(key)
            parts = [self.expansions[id(child)] for child in children]
            if isinstance(node, yaml.ScalarNode):
                self.expansions[key] = _Expansion(1, max(len(node.value), 1), 1)
            else:
                self.expansions[key] = _Expansion(
                    1 + sum(p.nodes for p in parts),
                    2 + sum(p.json_bytes + 1 for p in parts),
                    1 + max((p.depth for p in parts), default=0),
                )
        return self.expansions[id(root)]

    def count_decodes(self, root: yaml.Node) -> None:
        """Counts decodes in document order as go-yaml does: a node met again is an alias, and all its
        expansion is decoded through it. Checked after every alias: the share only grows inside one."""
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                nodes = self.expansions[id(node)].nodes
                self.decoded += nodes
                self.through_aliases += nodes
                if excessive_aliasing(self.decoded, self.through_aliases):
                    raise DecodeError("yaml: document contains excessive aliasing")
                continue
            seen.add(id(node))
            self.decoded += 1
            stack.extend(reversed(_children(node)))


def load(body: bytes, max_bytes: int) -> object:
    """The single YAML document in body, or DecodeError when it is malformed or its aliases would
    expand it past what a JSON body may carry."""
    loader = yaml.SafeLoader(body)
    try:
        try:
            root = loader.get_single_node()
        except (yaml.YAMLError, RecursionError) as e:
            raise DecodeError(f"couldn't decode the body as YAML: {e}") from None
        if root is None:
            return None
        measure = _Measure()
        expansion = measure.expansion(root)
        if expansion.depth > MAX_DEPTH:
            raise DecodeError(f"the body nests deeper than {MAX_DEPTH} levels")
        measure.count_decodes(root)
        if expansion.json_bytes > max_bytes:
            raise TooLarge(f"the body expands past the limit of {max_bytes} bytes")
        try:
            return loader.construct_document(root)
        except (yaml.YAMLError, RecursionError) as e:
            raise DecodeError(f"couldn't decode the body as YAML: {e}") from None
    finally:
        loader.dispose()
