"""THE execution-backend flags (``--backend``, ``--workers``) of the commands that run a grid of cells
on the sweep runner (:mod:`poisonlab.sweeps`): ``poisonlab sweep`` and ``poisonlab evaluate``."""

from __future__ import annotations

import argparse

#: the backends of the sweep runner
BACKENDS = ("local", "ray")


def add_backend_args(p: argparse.ArgumentParser, *, workers_default: str) -> None:
    """Add ``--backend`` (local processes or Ray) and ``--workers`` to ``p``; ``workers_default``
    says what the command does without ``--workers`` on the local backend."""
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local processes (default) or Ray")
    p.add_argument("--workers", type=int, help=f"local: parallel worker processes ({workers_default}); "
                   "ray: runs at once (default without --address: one per CPU)")
