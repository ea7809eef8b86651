"""Every option field is documented: each dataclass field of a config class has an entry in the
``Attributes:`` section (Google style, what ``help()`` and the mkdocstrings API reference show) of
the class's own docstring or of a base class's docstring, and the entry says its default (or that
the field is required)."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from poisonlab.options import group_class as _group_class  # the one rule for what an option group is

from poisonlab.data.types import AttackData, Dataset, ExperimentData, PoisonSet
from poisonlab.defenses import DEFENSES, DefenseConfig
from poisonlab.protocol.config import RunSpec
from poisonlab.training.victim import Victim, VictimSpec

_SECTION = re.compile(r"^(\s*)Attributes:\s*$")
_ENTRY = re.compile(r"^(\s+)(\w+)(?:\s*\([^)]*\))?:(.*)$")


def attribute_entries(doc: str | None) -> dict[str, str]:
    """``{name: description}`` of the entries of a Google-style ``Attributes:`` section."""
    if not doc:
        return {}
    lines = doc.expandtabs().split("\n")
    entries: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        i += 1
        if not m:
            continue
        base = len(m.group(1))
        item: int | None = None  # the indentation of the entries (the first line below the header)
        name: str | None = None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip(" "))
            if line.strip() and indent <= base:
                break  # the section ends at the first line not indented below its header
            if line.strip():
                item = indent if item is None else item
                e = _ENTRY.match(line)
                if indent == item and e:
                    name = e.group(2)
                    entries[name] = e.group(3).strip()
                elif name is not None and indent > item:
                    entries[name] += " " + line.strip()
            i += 1
    return entries


def documented_fields(cls: type) -> dict[str, str]:
    """The Attributes entries of ``cls`` and of its base classes (the class's own entry wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        out.update(attribute_entries(inspect.getdoc(klass)))
    return out


def undocumented(cls: type, *, groups: bool = False, _seen: set[type] | None = None) -> list[str]:
    """Problems of ``cls``: fields without an Attributes entry, entries that name no default.

    With ``groups``, the config class of an option group field (see :mod:`poisonlab.options`) is
    checked too (its fields are options as well).
    """
    seen = _seen if _seen is not None else set()
    if cls in seen:
        return []
    seen.add(cls)
    assert dataclasses.is_dataclass(cls), f"{cls.__qualname__} is not a dataclass"
    docs = documented_fields(cls)
    problems = []
    for f in dataclasses.fields(cls):
        text = docs.get(f.name)
        where = f"{cls.__module__}.{cls.__qualname__}.{f.name}"
        if text is None:
            problems.append(f"{where}: no entry '{f.name}:' in the Attributes section")
        elif not re.search(r"default|required", text, re.IGNORECASE):
            problems.append(f"{where}: the entry does not say its default (or 'Required')")
        group = _group_class(f) if groups else None
        if group is not None:
            problems += undocumented(group, groups=True, _seen=seen)
    return problems


# ------------------------------------------------------------------ the parser itself
def test_parser_reads_google_attributes_entries_and_continuations():
    doc = inspect.cleandoc('''Summary.

        Attributes:
            a: First. Default 1.
            b (int): Second,
                continued. Default 2.

        Example:
            c: not an attribute
        ''')
    assert attribute_entries(doc) == {"a": "First. Default 1.", "b": "Second, continued. Default 2."}
    assert attribute_entries("No section.") == {} and attribute_entries(None) == {}


def test_a_missing_field_and_a_missing_default_are_reported_and_base_docs_count():
    @dataclasses.dataclass
    class Base:
        """Base.

        Attributes:
            x: In the base. Default 0.
        """

        x: int = 0

    @dataclasses.dataclass
    class Child(Base):
        """Child.

        Attributes:
            y: Said, but not what it starts as.
        """

        y: int = 1
        z: int = 2

    problems = undocumented(Child)
    assert len(problems) == 2
    assert "Child.y: the entry does not say its default" in problems[0]
    assert "Child.z: no entry 'z:'" in problems[1]


# ------------------------------------------------------------------ the library's option classes
@pytest.mark.parametrize("cls", [DefenseConfig, RunSpec, VictimSpec, Victim, Dataset, ExperimentData, AttackData,
                                 PoisonSet], ids=lambda c: c.__qualname__)
def test_option_classes_document_every_field(cls):
    assert undocumented(cls) == []


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_registered_defense_config_documents_every_field(name):
    config = DEFENSES.get(name).Config
    assert issubclass(config, DefenseConfig)
    assert undocumented(config, groups=True) == []


def test_every_registered_attack_config_documents_every_field():
    from poisonlab.attacks import ATTACKS

    problems = []
    for name in ATTACKS.names():
        problems += undocumented(ATTACKS.get(name).Config, groups=True)
    assert problems == []
