"""The key tables of config/README.md agree with the schema, and no code repeats a default.

Defaults have one owner, ``workflow/schemas/config.schema.yaml`` (filled in by
``saeprobe.config.validate``). These tests fail when config/README.md documents a key the
schema does not have, gives it a different default, leaves out a key that has a default, or
when library or workflow code falls back to a literal default for a key the schema fills.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from saeprobe import config as sc

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "config" / "README.md"
SCHEMA = sc.load_schema()

# README section heading -> the schema node (a path of property names; "*" = additionalProperties).
SECTIONS = {
    "Top level": (),
    "`datasets.<name>`": ("datasets", "*"),
    "`models.<name>`": ("models", "*"),
    "Image datasets and vision models": ("datasets", "*"),
    "`saes.<name>`": ("saes", "*"),
    "`sae_quality`": ("sae_quality",),
    "`features`": ("features",),
    "`probe`": ("probe",),
    "`bootstrap`": ("bootstrap",),
    "`ksparse`": ("ksparse",),
    "`baselines`": ("baselines",),
    "`tfidf`": ("tfidf",),
    "`behaviour`": ("behaviour", "*"),
    "`transfer`": ("transfer",),
    "`sweep`": ("sweep",),
    "`report`": ("report",),
}
def _node(path: tuple[str, ...]) -> dict[str, Any]:
    node = SCHEMA
    for part in path:
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def _property(section: tuple[str, ...], dotted: str) -> dict[str, Any] | None:
    node = _node(section)
    for part in dotted.split("."):
        props = node.get("properties", {})
        if part not in props:
            return None
        node = props[part]
    return node


def readme_rows() -> list[tuple[str, tuple[str, ...], str, str]]:
    """(section heading, schema path, key, default cell) for every row of a key/default table."""
    rows, section, header = [], None, None
    for line in README.read_text().splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(line) <= set("|-: ") or "key" not in header or "default" not in header:
            continue
        assert section in SECTIONS, f"config/README.md: section '{section}' has a key table but no schema node in SECTIONS"
        default = cells[header.index("default")]
        for key in re.findall(r"`([^`]+)`", cells[header.index("key")]):
            rows.append((section, SECTIONS[section], key, default))
    return rows


ROWS = readme_rows()


def test_readme_has_key_tables():
    assert len(ROWS) > 60, "the parser found too few rows: did config/README.md's tables change shape?"


@pytest.mark.parametrize(("section", "path", "key", "default"), ROWS, ids=[f"{r[0]}:{r[2]}" for r in ROWS])
def test_readme_default_matches_schema(section, path, key, default):
    prop = _property(path, key)
    assert prop is not None, f"config/README.md ({section}) documents '{key}', which the schema does not have"
    literal = re.fullmatch(r"`([^`]*)`", default)
    if literal and re.match(r"[a-z_]+\.", literal.group(1)):
        literal = None  # `features.*`: a reference to other keys, filled in at run time
    if default in ("-", "`null`") and prop.get("default", None) is None:
        return  # optional: absent means none
    if literal:
        documented = yaml.safe_load(literal.group(1)) if literal.group(1) else ""
        assert "default" in prop, f"config/README.md ({section}) gives '{key}' the default {default}; the schema has none"
        assert prop["default"] == documented, (
            f"'{key}' ({section}): config/README.md says {default}, the schema's default is {prop['default']!r}")
    else:
        assert "default" not in prop, (
            f"'{key}' ({section}): config/README.md describes the default as '{default}', "
            f"but the schema fills in {prop['default']!r}: write it as `{prop['default']}`")


def _defaults(node: dict[str, Any], path: tuple[str, ...], prefix: str = "") -> list[tuple[tuple[str, ...], str]]:
    out = []
    for key, sub in node.get("properties", {}).items():
        if not path and not prefix and key in {p[0] for p in SECTIONS.values() if p}:
            continue  # a section of its own
        if "default" in sub:
            out.append((path, prefix + key))
        if sub.get("type") == "object" and "properties" in sub and sub.get("additionalProperties") is False:
            out.extend(_defaults(sub, path, f"{prefix}{key}."))
    return out


SCHEMA_DEFAULTS = [d for section in sorted(set(SECTIONS.values())) for d in _defaults(_node(section), section)]


@pytest.mark.parametrize(("path", "key"), SCHEMA_DEFAULTS, ids=[f"{'.'.join(p)}:{k}" for p, k in SCHEMA_DEFAULTS])
def test_every_schema_default_is_documented(path, key):
    documented = {(p, k) for _, p, k, _ in ROWS}
    assert (path, key) in documented, (
        f"schema key '{'.'.join((*path, key))}' has a default but no row in config/README.md")


# Keys that are also used by non-config dicts in the code (results, metadata); a .get on them is
# not a config default.
NOT_CONFIG = {"test", "validation", "model", "layer", "pooling", "binarize", "source", "split", "text"}


def _schema_keys_with_defaults() -> set[str]:
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "default" in sub:
                    keys.add(key)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    return keys - NOT_CONFIG


def _literal(node: ast.expr) -> bool:
    """A default written out (``0``, ``"text"``, ``[]``, ``DEFAULT_X``), not None or another key's value."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    return isinstance(node, (ast.List, ast.Dict, ast.Tuple, ast.Set)) or (isinstance(node, ast.Name) and node.id.isupper())


CODE = sorted([*(ROOT / "src" / "saeprobe").glob("*.py"), *(ROOT / "workflow" / "scripts").glob("*.py")])


def test_code_repeats_no_schema_default():
    """``spec.get("key", <literal>)`` for a key the schema fills in is a second copy of its default."""
    keys, found = _schema_keys_with_defaults(), []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
                    and _literal(node.args[1])):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .get({node.args[0].value!r}, ...)")
    smk = [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]
    pattern = re.compile(r"""\.get\(\s*["'](\w+)["']\s*,\s*(?!None\b)""")
    for path in smk:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in pattern.finditer(line):
                if m.group(1) in keys:
                    found.append(f"{path.relative_to(ROOT)}:{n}: .get({m.group(1)!r}, ...)")
    assert not found, "defaults belong to the schema alone; read the filled-in key instead:\n" + "\n".join(found)
