"""THE execution-backend flags (``--backend``, ``--workers``) of the commands that run a grid of cells
on the sweep runner (:mod:`poisonlab.sweeps`): ``poisonlab sweep`` and ``poisonlab evaluate``."""

from __future__ import annotations

import argparse

#: the backends of the sweep runner
BACKENDS = ("local", "ray")


def add_backend_args(p: argparse.ArgumentParser, *, workers_default: str, ray_default: str) -> None:
    """Add ``--backend`` (local processes or Ray) and ``--workers`` to ``p``; ``workers_default`` and
    ``ray_default`` say what the command does without ``--workers`` on each backend."""
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local processes (default) or Ray")
    p.add_argument("--workers", type=int, help=f"local: parallel worker processes ({workers_default}); "
                   f"ray: runs at once ({ray_default})")
