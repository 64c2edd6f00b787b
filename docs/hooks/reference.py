"""MkDocs hook: the config and CLI reference pages, generated from the code so they cannot drift.

A page that holds one of these markers gets it replaced at build time:

- ``<!-- config-reference -->``: every key of the composed Hydra configs ``train``, ``sweep`` and
  ``sft`` with its default and its meaning, taken from the ``Args:`` sections of the dataclasses
  that mirror the tree (``RunConfig`` and the sections nested in it, ``StudyConfig``,
  ``SftConfig``), and the options of each config group (the files of ``configs/<group>/``).
- ``<!-- cli-reference -->``: ``lamina.cli.USAGE`` and ``lamina.cli.command_help(command)`` for
  every command of ``lamina.cli.COMMANDS``.

The build fails (an exception names the keys) when a dataclass field has no ``Args:`` entry, when a
key of a composed config has no dataclass field, or when an ``Args:`` entry names no field.
``PENDING_DOCSTRINGS`` lists the fields still documented here instead of in their docstrings;
each entry is an error once the docstring documents the field, so the list can only shrink.

Run by ``mkdocs build`` (``hooks:`` in ``mkdocs.yml``); nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

CONFIG_MARKER = "<!-- config-reference -->"
CLI_MARKER = "<!-- cli-reference -->"
GROUPS = ("env", "algorithm", "model", "study", "verl")

# Fields whose class docstring has no ``Args:`` entry for them yet: "Class.field" -> meaning.
# Move each text into its class docstring's Args section, then delete the entry here.
PENDING_DOCSTRINGS: dict[str, str] = {}


# -- docstrings ----------------------------------------------------------------------------------
_SECTION = re.compile(r"^\s*(Args|Arguments|Returns|Raises|Yields|Examples?|Notes?|Attributes|See Also):\s*$")
_ENTRY = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_args_section(doc: str | None) -> dict[str, str]:
    """``{field: meaning}`` from a Google-style ``Args:`` section; ``a, b: text`` documents a and b."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() in ("Args:", "Arguments:")), None)
    if start is None:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    entry_indent: int | None = None
    section_indent = len(lines[start]) - len(lines[start].lstrip())
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= section_indent or _SECTION.match(line):
            break
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                out[name] = match.group(2).strip()
        elif names:  # a continuation line of the current entry
            for name in names:
                out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _markdown(text: str) -> str:
    """reST ``code`` to Markdown `code`; outside code spans, escape ``<``, ``>`` and ``|``."""
    text = text.replace("``", "`")
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*").replace("|", "\\|")
    return "`".join(parts)  # Python-Markdown's tables keep a pipe inside a code span as text


# -- dataclass walk ------------------------------------------------------------------------------
@dataclasses.dataclass
class KeyDoc:
    """One documented config key: dotted ``key``, its declared ``type``, ``meaning`` and owner."""

    key: str
    type: str
    meaning: str
    owner: str
    section: bool  # a nested dataclass (its keys follow)


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def walk(cls: type, prefix: str, out: dict[str, KeyDoc], missing: list[str], used: set[str]) -> None:
    """Adds every field of ``cls`` (recursively) to ``out``; undocumented ones go to ``missing``."""
    hints = typing.get_type_hints(cls)
    documented = parse_args_section(cls.__doc__)
    field_names = {f.name for f in dataclasses.fields(cls)}
    for name in documented:
        if name not in field_names:
            missing.append(f"{cls.__name__}: Args entry {name!r} names no field")
    for f in dataclasses.fields(cls):
        owner = f"{cls.__name__}.{f.name}"
        meaning = documented.get(f.name)
        if owner in PENDING_DOCSTRINGS:
            used.add(owner)
            if meaning:
                missing.append(f"{owner}: documented in its docstring now; delete it from PENDING_DOCSTRINGS")
            meaning = PENDING_DOCSTRINGS[owner]
        if not meaning:
            missing.append(owner)
            meaning = ""
        nested = _dataclass_in(hints[f.name])
        key = prefix + f.name
        out[key] = KeyDoc(key, _type_name(hints[f.name]), meaning, owner, nested is not None)
        if nested is not None:
            walk(nested, key + ".", out, missing, used)


# -- composed configs ----------------------------------------------------------------------------
def config_dir() -> Path:
    import lamina.configs

    return Path(lamina.configs.__file__).parent


def compose(config_name: str) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        raw = hydra_compose(config_name=config_name)
    return OmegaConf.to_container(raw, resolve=False)


def flatten(node: dict[str, Any], docs: dict[str, KeyDoc], prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}``, descending into dicts only where the key is a dataclass section."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = prefix + str(key)
        if isinstance(value, dict) and dotted in docs and docs[dotted].section:
            out.update(flatten(value, docs, dotted + "."))
        else:
            out[dotted] = value
    return out


def dataclass_defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """The dataclass's own defaults as ``{dotted key: value}`` (what a key absent from YAML gets)."""
    out: dict[str, Any] = {}
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            out.update(dataclass_defaults(type(value), prefix + f.name + "."))
        else:
            out[prefix + f.name] = value
    return out


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _cell(value: Any) -> str:
    text = _value(value)
    return f"`{text}`" if "`" not in text else _markdown(text)


@cache
def config_models() -> dict[str, tuple[type, dict[str, type]]]:
    """``{config name: (root dataclass, {section key: dataclass})}``; imported lazily, by module path
    only for the three roots (the nested sections come from the field types)."""
    from lamina.study.config import StudyConfig
    from lamina.trainer.config import RunConfig, SftConfig

    return {
        "train": (RunConfig, {}),
        "sweep": (RunConfig, {"study": StudyConfig}),
        "sft": (RunConfig, {"sft": SftConfig}),
    }


@cache
def key_docs() -> tuple[dict[str, dict[str, KeyDoc]], dict[str, dict[str, Any]]]:
    """Per config name: the documented keys and every composed key's default. Raises on a gap."""
    docs: dict[str, dict[str, KeyDoc]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    used: set[str] = set()
    for name, (root, extra) in config_models().items():
        found: dict[str, KeyDoc] = {}
        walk(root, "", found, missing, used)
        values = dataclass_defaults(root)
        for section, cls in extra.items():
            summary = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
            found[section] = KeyDoc(section, cls.__name__, summary, cls.__name__, True)
            walk(cls, section + ".", found, missing, used)
            values.update(dataclass_defaults(cls, section + "."))
        composed = flatten(compose(name), found)
        unknown = sorted(k for k in composed if k not in found)
        if unknown:
            missing.extend(f"configs/{name}.yaml: key {k!r} has no dataclass field" for k in unknown)
        values.update(composed)
        docs[name] = found
        defaults[name] = values
    stale = sorted(set(PENDING_DOCSTRINGS) - used)
    missing.extend(f"PENDING_DOCSTRINGS: {k!r} is no field any more; delete it" for k in stale)
    if missing:
        raise RuntimeError(
            "config reference: undocumented or stale keys:\n  " + "\n  ".join(sorted(set(missing)))
        )
    return docs, defaults


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | default | type | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {d} | `{t}` | {m} |" for k, d, t, m in rows]
    return lines


def _rows(
    keys: list[str], docs: dict[str, KeyDoc], values: dict[str, Any]
) -> list[tuple[str, str, str, str]]:
    rows = []
    for key in keys:
        doc = docs[key]
        default = "(section)" if doc.section else _cell(values.get(key))
        rows.append((key, default, doc.type, _markdown(doc.meaning)))
    return rows


def _group_option_lines(group: str) -> list[str]:
    from omegaconf import OmegaConf

    folder = config_dir() / group
    lines = [f"### `{group}=`", ""]
    if group == "verl":
        lines += ["Added with `+verl=<option>` (the tree has no default for it).", ""]
    lines += ["| option | what it is | what it sets |", "| --- | --- | --- |"]
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        comments = []  # the file's first comment paragraph, up to a usage example or a colon
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            body = line[1:]
            if body.strip().startswith("@package"):
                continue
            if not body.strip() or body.startswith("   "):
                if comments:
                    break
                continue
            comments.append(body.strip())
            if body.rstrip().endswith(":"):
                break
        about = " ".join(comments).rstrip(":").rstrip(".")
        content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        sets = []
        for key, value in _flat_plain(content).items():
            sets.append(f"`{key}={_value(value)}`")
        lines.append(f"| `{path.stem}` | {_markdown(about)} | {', '.join(sets)} |")
    return lines + [""]


def _flat_plain(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "defaults" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    for k, v in item.items():
                        out[str(k).replace("override /", "")] = v
            continue
        if isinstance(value, dict) and value and key not in ("kwargs", "eval_kwargs", "lr_multipliers"):
            out.update(_flat_plain(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_reference() -> str:
    docs, defaults = key_docs()
    train_docs, train_values = docs["train"], defaults["train"]
    out = [
        "## `train`: `lamina train` and `lamina eval`",
        "",
        "`configs/train.yaml` with its defaults list (`env: textworld`, `algorithm: grpo`, "
        "`model: smollm2-135m`) composed, merged over the dataclass `RunConfig`; a key the YAML "
        "leaves out gets the dataclass default. `env.*`, `algorithm.*` and `model.*` show the default "
        "option's values; the other options set theirs (below).",
        "",
    ]
    top = [k for k in train_docs if "." not in k]
    for section in top:
        keys = [k for k in train_docs if k == section or k.startswith(section + ".")]
        if train_docs[section].section:
            out += [f"### `{section}`", "", _markdown(train_docs[section].meaning), ""]
            out += _table(_rows([k for k in keys if k != section], train_docs, train_values)) + [""]
    plain = [k for k in top if not train_docs[k].section]
    out += ["### Top-level keys", ""] + _table(_rows(plain, train_docs, train_values)) + [""]

    for name, what in (("sweep", "lamina sweep"), ("sft", "lamina sft")):
        own = [k for k in docs[name] if k not in train_docs]
        changed = [
            k
            for k in train_docs
            if not train_docs[k].section and defaults[name].get(k) != train_values.get(k)
        ]
        out += [f"## `{name}`: `{what}`", ""]
        if changed:
            out += [
                f"`configs/{name}.yaml` composes `train`: every key above applies, "
                "with these defaults changed:",
                "",
                f"| key | `train` default | `{name}` default |",
                "| --- | --- | --- |",
            ]
            out += [
                f"| `{k}` | {_cell(train_values.get(k))} | {_cell(defaults[name].get(k))} |" for k in changed
            ]
        else:
            out += [
                f"`configs/{name}.yaml` composes `train`: every key above applies, with the same defaults,"
            ]
        out += ["", "and its own section:", ""]
        out += _table(_rows([k for k in own if not docs[name][k].section], docs[name], defaults[name])) + [""]

    out += [
        "## Config groups",
        "",
        "Each option is a file of `configs/<group>/`; the first comment of the file says what it is.",
        "",
    ]
    for group in GROUPS:
        if (config_dir() / group).is_dir():
            out += _group_option_lines(group)
    return "\n".join(out)


def cli_reference() -> str:
    from lamina import cli

    out = ["## `lamina`", "", "```text", cli.USAGE.rstrip(), "```", ""]
    for command in cli.COMMANDS:
        out += [f"## `lamina {command}`", "", "```text", cli.command_help(command).rstrip(), "```", ""]
    return "\n".join(out)


# -- MkDocs events -------------------------------------------------------------------------------
def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    try:
        if CONFIG_MARKER in markdown:
            markdown = markdown.replace(CONFIG_MARKER, config_reference())
        if CLI_MARKER in markdown:
            markdown = markdown.replace(CLI_MARKER, cli_reference())
    except RuntimeError as err:  # a gap in the docstrings: stop the build with the keys named
        raise PluginError(str(err)) from None
    return markdown
