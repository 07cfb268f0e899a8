"""The config reference (docs/config.md): every key of the config dataclasses with its type,
default, allowed values and meaning, read from translate/config.py itself so that it cannot drift.

A field's meaning is its trailing ``# comment`` and the comment lines right below it, or, for a
field without one, the comment lines right above it. Allowed values are ``config._CHOICES`` and
what the loader refuses when probed with out-of-range values (its own one-line messages).

    python -m translate.cli.reference                        # print the reference
    python -m translate.cli.reference --write docs/config.md # regenerate the file
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path

from .. import config
from ..config import Config, ConfigError, config_from_dict

COMMAND = "python -m translate.cli.reference --write docs/config.md"


@dataclasses.dataclass(frozen=True)
class Key:
    """One row of the reference."""

    name: str  # dotted, as in overrides and error messages: train.max_steps, data.train[i].path
    kind: str  # int, float, str, bool, list
    default: str  # as written in YAML
    allowed: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Section:
    """One table: the keys of one dataclass, introduced by its docstring."""

    title: str
    intro: str
    keys: list[Key]


def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's comment (see the module docstring), by field name; "" for none."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, alone on its line)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            comments[token.start[0]] = (token.string.lstrip("#").strip(), alone)
    names = {f.name for f in dataclasses.fields(cls)}
    (class_node,) = ast.parse(source).body
    fields = [
        (node.target.id, node.lineno, node.end_lineno)
        for node in class_node.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    ]
    found, taken = {}, set()
    for name, first, last in fields:  # trailing comments and the lines that continue them
        lines = [n for n in range(first, last + 1) if n in comments and not comments[n][1]]
        if lines:
            below = last + 1
            while below in comments and comments[below][1]:
                lines.append(below)
                below += 1
        taken.update(lines)
        found[name] = lines
    for name, first, _ in fields:  # comment lines above a field that has none of its own
        if not found[name]:
            top = first
            while top - 1 in comments and comments[top - 1][1] and top - 1 not in taken:
                top -= 1
            found[name] = list(range(top, first))
    return {
        name: _markdown(" ".join(comments[n][0] for n in lines))
        for name, lines in found.items()
        if name in names
    }


def _markdown(text: str) -> str:
    """reStructuredText roles and literals as markdown; one line, no table-breaking bars."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(text.split()).replace("|", "\\|")


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    if isinstance(value, list):
        return "[]" if not value else repr(value)
    return str(value)


def _kind(hint: object) -> str:
    if typing.get_origin(hint) is list:
        return "list"
    return getattr(hint, "__name__", str(hint))


def _nested(values: dict, dotted: str, value: object) -> dict:
    *sections, name = dotted.split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value
    return values


def refusals(key: str, kind: str) -> list[str]:
    """What the config loader says about ``key`` when it is set to values at the edges of its
    type (its range, or another key it needs), as "must be ..." / "needs ..." phrases."""
    probes = {"int": [-1, 10**9], "float": [-1.0, 1e9], "bool": [True, False]}.get(kind, [])
    found = []
    for value in probes:
        try:
            config_from_dict(_nested({}, key, value))
        except ConfigError as err:
            said = re.match(rf"'{re.escape(key)}' (must be (.+?), got |needs (.+))", str(err))
            phrase = said and (said.group(2) or "needs " + said.group(3).replace("'", "`"))
            if phrase and phrase not in found:
                found.append(phrase)
    return found


def sections(cls: type = Config, prefix: str = "", title: str = "top level") -> Iterator[Section]:
    """The reference's tables, in the order of the dataclasses' fields."""
    hints = typing.get_type_hints(cls)
    meanings = field_comments(cls)
    keys, nested = [], []
    for field in dataclasses.fields(cls):
        hint, name = hints[field.name], prefix + field.name
        if dataclasses.is_dataclass(hint):
            nested.append((hint, name + ".", name))
            continue
        if typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            if dataclasses.is_dataclass(item):
                nested.append((item, name + "[i].", f"each item of {name}"))
        default = field.default_factory() if callable(field.default_factory) else field.default
        choices = config._CHOICES.get(name, ())
        allowed = [", ".join(f"`{c}`" for c in choices)] if choices else []
        allowed += refusals(name, _kind(hint)) if not prefix.endswith("].") else []
        keys.append(
            Key(name, _kind(hint), _yaml(default), "; ".join(allowed), meanings[field.name])
        )
    intro = _markdown(inspect.getdoc(cls) or "").replace("\\|", "|")
    if keys:
        yield Section(title, intro, keys)
    for item, item_prefix, item_title in nested:
        yield from sections(item, item_prefix, item_title)


def reference() -> str:
    """docs/config.md: an introduction, then one markdown table per section."""
    out = [
        "# Config reference",
        "",
        f"Generated from `translate/config.py` by `{COMMAND}`; edit the comments there, not "
        "this file. A config is a YAML file with the sections below (`translate train "
        "CONFIG`); any key can also be set on the command line as `section.key=value`, e.g. "
        "`train.max_steps=1000`, after the config. An unknown key, a wrong type or a value "
        "outside what *allowed* says is refused in one line naming the key.",
    ]
    for section in sections():
        out += ["", f"## {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        out += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key in section.keys:
            default = f"`{key.default}`"
            row = [f"`{key.name}`", key.kind, default, key.allowed, key.meaning]
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or write it with --write PATH."""
    parser = argparse.ArgumentParser(
        prog="python -m translate.cli.reference",
        description="The config reference: every key with its type, default, allowed values "
        "and meaning, from translate/config.py.",
    )
    parser.add_argument("--write", metavar="PATH", help="write it to PATH (docs/config.md)")
    args = parser.parse_args(argv)
    text = reference()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
