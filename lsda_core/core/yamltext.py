"""YAML as the study reads it from users (presets, overrides, group files): the safe loader,
except that a key given twice in one mapping is an error (plain YAML keeps the last one
silently, so a preset's second `world:` would hide its first); and errors in one line."""
from __future__ import annotations

from typing import Any

import yaml

YAMLError = yaml.YAMLError


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that rejects a key repeated in one mapping (merge keys `<<` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                again = key in seen
            except TypeError:  # unhashable: the safe loader's own error follows
                continue
            if again:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found key {key!r} twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse YAML text (safe types only, no repeated keys); raises `yaml.YAMLError`."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where it is."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        return e.problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    return " ".join(str(e).split())
