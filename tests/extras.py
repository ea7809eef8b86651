"""Parameters of the registered components, each marked with the optional extra it needs
(``needs_extra``, see conftest.py): the ART detectors need the ``art`` extra."""

from __future__ import annotations

from typing import Any

import pytest

#: registered component name prefix -> the extra it needs
PREFIX_EXTRA = {"art_": "art"}


def extra_of(name: str) -> str | None:
    """The optional extra a registered attack / defense needs, or None."""
    return next((extra for prefix, extra in PREFIX_EXTRA.items() if name.startswith(prefix)), None)


def param(name: str, *values: Any, id: str | None = None) -> Any:
    """``pytest.param(*values or name)`` marked ``needs_extra`` when ``name`` needs one."""
    extra = extra_of(name)
    marks = [pytest.mark.needs_extra(extra)] if extra else []
    return pytest.param(*(values or (name,)), marks=marks, id=id or name)
