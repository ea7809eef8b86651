"""Transferability (thesis §2.6.5, Table 2.9): poisons crafted against a surrogate model, judged by
retraining other target models under the same protocol.

For every surrogate s the attack runs once (``run_protocol`` with model s); for every target t the
saved poisons are re-used (``RunSpec.poisons``) and t is pretrained on D_tr and retrained on
D_tr ∪ D_p. The split of D_tr depends only on the seed, so all runs share D_tr and the test set.
Cell (s, t) is t's accuracy drop acc1 − acc2 in points; the diagonal is the white-box drop.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifacts import write_json
from ..errors import ConfigError
from ..models.victims import VICTIMS
from .config import RunSpec
from .results import RunResult
from .runner import run_protocol


def run_transfer(
    base: RunSpec,
    surrogates: Sequence[str],
    targets: Sequence[str],
    *,
    model_options: dict[str, dict[str, Any]] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run the S×T transfer grid; returns (and writes ``out/transfer.json``) the drop matrix.

    ``model_options[name]`` are the options of model ``name`` (e.g. ``{"nn": {"hidden": [256]}}``).
    """
    if not surrogates or not targets:
        raise ConfigError("transfer needs at least one surrogate and one target model")
    for name in (*surrogates, *targets):
        VICTIMS.get(name)  # unknown model -> error before any work
    if base.defense:
        raise ConfigError("transfer measures undefended drops; run defenses on the saved poisons with `run --poisons`")
    opts = model_options or {}
    root = Path(out or f"runs/transfer-{Path(base.dataset).stem}-{base.attack}-f{base.fraction:g}-s{base.seed}")
    # every target is pretrained on the same D_tr for every surrogate: the clean-victim cache (stage 1,
    # bit-identical to training afresh) makes that one training per model instead of one per pair
    base = replace(base, cache_dir=base.cache_dir or str(root / "cache"))
    runs: dict[str, dict[str, RunResult]] = {}
    for s in surrogates:
        log(f"[transfer] surrogate {s}: crafting {base.attack} poisons")
        src = replace(base, model=s, model_options=dict(opts.get(s, {})), out=str(root / f"surrogate-{s}"), poisons=None)
        white = run_protocol(src, progress=progress, log=log)
        runs[s] = {}
        for t in targets:
            if t == s:
                runs[s][t] = white
                continue
            log(f"[transfer] surrogate {s} -> target {t}")
            cfg = replace(base, model=t, model_options=dict(opts.get(t, {})), out=str(root / f"{s}-to-{t}"),
                          poisons=str(root / f"surrogate-{s}" / "poisons.npz"))
            runs[s][t] = run_protocol(cfg, progress=progress, log=log)
    result = {
        "dataset": base.dataset,
        "attack": base.attack,
        "fraction": base.fraction,
        "seed": base.seed,
        "surrogates": list(surrogates),
        "targets": list(targets),
        "accuracy_drop": {s: {t: runs[s][t].accuracy_drop for t in targets} for s in surrogates},
        "clean_accuracy": {s: {t: runs[s][t].clean_accuracy for t in targets} for s in surrogates},
        "poisoned_accuracy": {s: {t: runs[s][t].poisoned_accuracy for t in targets} for s in surrogates},
        "runs": {s: {t: runs[s][t].out for t in targets} for s in surrogates},
        "config": {**base.to_dict(), "model_options": opts, "out": str(root)},
    }
    write_json(root / "transfer.json", result)
    return result

