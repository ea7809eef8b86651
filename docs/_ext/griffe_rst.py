"""Griffe extension for the API pages: render poisonlab's reST-flavoured docstrings as Markdown.

The docstrings are Google-style prose with a few reStructuredText habits. Before mkdocstrings
renders them, this extension rewrites (in the loaded docstring only, never in the source):

* roles such as ``:class:`~poisonlab.cache.ArtifactCache``` and ``:func:`filter_scores``` into
  optional cross-references (a link where the target is documented, plain code otherwise);
* ``text::`` followed by an indented literal block into ``text:`` and a fenced code block;
* a top-level doctest (``>>>`` lines and their output) into a fenced ``pycon`` block;
* an Args entry naming several parameters (``data, victim, seed: as in poison``) into one entry
  per parameter, each with that description (Google style has one name per entry).

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const|ref):`(~?)([^`<>]+?)`")


def _resolve(obj: griffe.Object, name: str) -> str:
    if name.startswith("poisonlab."):
        return name
    if name.startswith("."):  # relative to the object's package: ".simclr", "..data.Bounds"
        dots = len(name) - len(name.lstrip("."))
        base = obj.module.path.split(".")
        if not obj.module.is_init_module:
            base = base[:-1]
        base = base[: len(base) - (dots - 1)] if dots > 1 else base
        return ".".join(base + [name[dots:]])
    head, _, rest = name.partition(".")
    try:
        full = obj.resolve(head)
    except Exception:  # noqa: BLE001 - unresolvable: keep the module-relative guess
        full = f"{obj.module.path}.{head}"
    return f"{full}.{rest}" if rest else full


def _roles(obj: griffe.Object, text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        tilde, name = m.group(1), m.group(2).strip()
        name = name.rstrip("()")
        title = name.rsplit(".", 1)[-1] if tilde else name
        return f'<autoref identifier="{_resolve(obj, name)}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(sub, text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if in_fence:
            out.append(line)
            i += 1
            continue
        # reST literal block: "text::" + blank line + indented block
        if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                body: list[str] = []
                k = j
                while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
                    body.append(lines[k])
                    k += 1
                while body and not body[-1].strip():
                    body.pop()
                cut = min(_indent(b) for b in body if b.strip())
                head = line.rstrip()[:-1]  # "text::" -> "text:"; a bare "::" disappears
                if head.strip() != ":":
                    out.append(head)
                pad = " " * base
                out += ["", pad + "```"] + [pad + b[cut:] if b.strip() else "" for b in body] + [pad + "```", ""]
                i = k
                continue
        # top-level doctest
        if line.startswith(">>> "):
            body = []
            k = i
            while k < len(lines) and lines[k].strip():
                body.append(lines[k])
                k += 1
            if out and out[-1].strip():
                out.append("")
            out += ["```pycon"] + body + ["```"]
            i = k
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_MULTI = re.compile(r"^(\s*)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(\s*\([^)]*\))?:(\s.*)?$")


def _split_names(text: str) -> str:
    """``a, b, c: as in f`` in an Args section becomes one entry per name (same description)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        head = len(m.group(1))
        item = None
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > head):
            line = lines[i]
            if item is None and line.strip():
                item = _indent(line)
            mm = _MULTI.match(line) if line.strip() and _indent(line) == item else None
            if not mm:
                out.append(line)
                i += 1
                continue
            cont = []
            k = i + 1
            while k < len(lines) and lines[k].strip() and _indent(lines[k]) > item:
                cont.append(lines[k])
                k += 1
            for name in (n.strip() for n in mm.group(2).split(",")):
                out.append(f"{mm.group(1)}{name}{mm.group(3) or ''}:{mm.group(4) or ''}")
                out += cont
            i = k
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite reST roles, literal blocks and doctests in every loaded docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        doc = obj.docstring
        if doc is None or not doc.value:
            return
        doc.value = _roles(obj, _blocks(_split_names(doc.value)))
