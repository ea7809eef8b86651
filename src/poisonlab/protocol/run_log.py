"""The protocol's stage messages in words, for the callers that show them.

:func:`.runner.run_experiment` and :func:`.defend.run_defense` report what they are doing as events
— a name and its values, a :data:`Report` — and leave where, and whether, they are shown to their
caller: :func:`run_messages` turns them into the lines ``poisonlab run`` prints, a sweep shows only
the stages in its progress display, :func:`silent` drops them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

#: receives each event of a run: its name (a key of :data:`MESSAGES`) and its values
Report = Callable[[str, Mapping[str, Any]], None]


def _start(v: Mapping[str, Any]) -> str:
    return (f"[poisonlab] {v['dataset']}: |D_tr|={v['n_train']} |D_v|={v['n_val']} |test|={v['n_test']}; "
            f"model {v['model']}, {v['epochs']} epochs, batch {v['batch_size']}; "
            f"attack {v['attack']}, fraction {v['fraction']:g} -> {v['n_poison']} poisons")


def _defense(v: Mapping[str, Any]) -> str:
    if not v["removes"]:
        return f"[+] defense: {v['defense']} (training-time, nothing removed)"
    return f"[+] defense: {v['defense']} scoring {v['n_points']} points, removing fraction {v['fraction']:g}"


#: each event's line
MESSAGES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "start": _start,
    "pretrain": lambda v: "[1/3] pretrain: training the victim on D_tr",
    "clean_cached": lambda v: f"      clean victim loaded from the cache in {v['cache']}",
    "clean_accuracy": lambda v: f"      clean test accuracy acc1 = {v['accuracy']:.2f} %",
    "reuse": lambda v: f"[2/3] attack: re-using {v['n_poison']} poisons" + (f" from {v['source']}" if v["source"] else ""),
    "attack": lambda v: f"[2/3] attack: {v['attack']} crafting {v['n_poison']} poisons",
    "retrain": lambda v: f"[3/3] test: retraining the victim from scratch on {v['where']}",
    "poisoned_accuracy": lambda v: f"      poisoned test accuracy acc2 = {v['accuracy']:.2f} %",
    "defense": _defense,
    "defended": lambda v: (f"      defended test accuracy = {v['accuracy']:.2f} %; removed {v['n_removed']} "
                           f"({v['n_poison_removed']} poisons), ROC-AUC {v['roc_auc']}"),
}


def run_messages(log: Callable[[str], None]) -> Report:
    """A :data:`Report` that sends each event's line (:data:`MESSAGES`) to ``log``."""

    def report(event: str, values: Mapping[str, Any]) -> None:
        log(MESSAGES[event](values))

    return report


def silent(event: str, values: Mapping[str, Any]) -> None:
    """A :data:`Report` that shows nothing."""
