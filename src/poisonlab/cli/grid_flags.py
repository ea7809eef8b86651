"""THE flags shared by the commands that run a grid of cells on the sweep runner
(:mod:`poisonlab.sweeps`), ``poisonlab sweep`` and ``poisonlab evaluate``: the execution backend
(``--backend``, ``--workers``), the device, the artifact cache, the progress bar and the victim's
recipe (:mod:`.recipe_flags`), added by :func:`add_grid_args` in each command's words."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .recipe_flags import add_recipe_args

#: the backends of the sweep runner
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class GridHelp:
    """What a grid command does where a shared flag is not given, in its own words."""

    workers: str  #: without --workers on the local backend
    ray: str  #: without --workers on Ray
    cache: str  #: where the artifacts go without --cache-dir
    device: str  #: what --device sets
    recipe: str = ""  #: appended to each recipe flag's help


def add_grid_args(p: argparse.ArgumentParser, defaults: GridHelp) -> None:
    """Add the shared flags to grid command parser ``p``, their help in ``defaults``' words."""
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local processes (default) or Ray")
    p.add_argument("--workers", type=int, help=f"local: parallel worker processes ({defaults.workers}); "
                   f"ray: runs at once ({defaults.ray})")
    p.add_argument("--device", help=defaults.device)
    p.add_argument("--cache-dir", help=defaults.cache)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_recipe_args(p, note=defaults.recipe)
