"""pl.evaluate end to end on digits / LR (few epochs, cheap attacks): the worst case is the minimum of
the per-attack runs it reports, defenses run against the two most damaging, the theory block, the
self-contained HTML, a budgeted evaluation says what it skipped, a second call resumes."""

from __future__ import annotations

import json
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import poisonlab as pl
from poisonlab.errors import ConfigError
from poisonlab.evaluation.plan import Choice, budget_plan
from poisonlab.evaluation.references import THESIS_LR, THESIS_NN, thesis_numbers
from poisonlab.sweeps import ResultsLog

ATTACKS = {"gc": {"steps": 10}, "min_max": {"epochs": 2}, "label_flip": {}}  # cheapest first: the order is not kept
DEFENSES = ["loss", "knn"]
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    ev = pl.evaluate("digits", pl.victim("lr", epochs=3, device="cpu"), 0.05, attacks=ATTACKS, defenses=DEFENSES,
                     seeds=SEEDS, out=out, progress=False)
    return ev, out


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_every_attack_over_every_seed_and_the_worst_case_is_their_minimum(evaluated):
    ev, out = evaluated
    assert sorted(a.name for a in ev.attacks) == sorted(ATTACKS)
    # independently of the Evaluation: the attack rows of results.jsonl
    acc: dict[int, dict[str, float]] = {}
    for r in _rows(out):
        if r["config"]["cell"] == "attack":
            assert r["status"] == "ok", r.get("error")
            acc.setdefault(r["config"]["seed"], {})[r["config"]["name"]] = r["result"]["poisoned_accuracy"]
    assert sorted(acc) == list(SEEDS) and all(sorted(v) == sorted(ATTACKS) for v in acc.values())
    per_seed = {s: min(v.values()) for s, v in acc.items()}
    assert {s: a for s, (a, _) in ev.worst_case.per_seed.items()} == per_seed
    for s, (a, name) in ev.worst_case.per_seed.items():
        assert acc[s][name] == a
    assert ev.worst_case.mean == pytest.approx(statistics.fmean(per_seed.values()))
    assert ev.worst_case.std == pytest.approx(statistics.stdev(per_seed.values()))
    # the rows the report gives agree with the cells
    for a in ev.attacks:
        assert dict(zip(a.seeds, a.poisoned_accuracy)) == {s: acc[s][a.name] for s in SEEDS}
        assert a.accuracy_drop == pytest.approx([c - p for c, p in zip(a.clean_accuracy, a.poisoned_accuracy)])
    md = ev.to_markdown()
    assert f"**{ev.worst_case.mean:.2f} ± {ev.worst_case.std:.2f} %**" in md


def test_defenses_run_against_the_two_most_damaging_attacks(evaluated):
    ev, _ = evaluated
    mean_acc = {a.name: statistics.fmean(a.poisoned_accuracy) for a in ev.attacks}
    top = sorted(mean_acc, key=lambda n: (mean_acc[n], n))[:2]
    assert ev.settings["top_attacks"] == top
    assert sorted((x.defense, x.attack) for x in ev.defenses) == sorted((d, a) for d in DEFENSES for a in top)
    for x in ev.defenses:
        assert x.seeds == list(SEEDS) and not x.failed
        attack = next(a for a in ev.attacks if a.name == x.attack)
        assert x.poisoned_accuracy == attack.poisoned_accuracy  # the same poisoned retrain, seed by seed
        assert all(0.0 <= v <= 1.0 for v in x.roc_auc if v is not None)
        assert set(x.roc) == set(SEEDS)
    after = ev.worst_after_defense
    best = max(DEFENSES, key=lambda d: statistics.fmean(
        min(x.defended_accuracy[x.seeds.index(s)] for x in ev.defenses if x.defense == d) for s in SEEDS))
    assert after.defense == best


def test_theory_block_for_a_linear_softmax_victim(evaluated):
    ev, _ = evaluated
    assert sorted(ev.theory) == list(SEEDS)
    for t in ev.theory.values():
        assert t["tau"] > 0 and math.isfinite(t["tau"])
        assert t["tau_gauge"] is not None and t["tau_box"] <= t["tau_gauge"] + 1e-12
        assert t["fraction"] == 0.05


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])


def test_reports_written_and_the_html_is_self_contained(evaluated):
    ev, out = evaluated
    for name in ("report.md", "report.json", "report.html", "results.jsonl"):
        assert (out / name).is_file()
    data = json.loads((out / "report.json").read_text())
    assert data["worst_case"]["mean"] == pytest.approx(ev.worst_case.mean)
    text = (out / "report.html").read_text()
    p = _Collect()
    p.feed(text)
    p.close()
    assert "table" in p.tags
    # the drop bar chart, the ROC curves and one poison grid per attack (digits are 8x8 images)
    assert len(p.imgs) == 2 + len(ATTACKS) == 2 + len(ev.grids)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in p.imgs)
    assert not [u for u in p.links if u.startswith(("http://", "https://", "//"))]
    assert "http://" not in text and "https://" not in text


def test_a_second_call_resumes_from_results_jsonl(evaluated):
    ev, out = evaluated
    before = (out / "results.jsonl").read_bytes()
    again = pl.evaluate("digits", pl.victim("lr", epochs=3, device="cpu"), 0.05, attacks=ATTACKS, defenses=DEFENSES,
                        seeds=SEEDS, out=out, progress=False)
    assert (out / "results.jsonl").read_bytes() == before  # nothing re-run
    assert again.to_markdown() == ev.to_markdown()


def test_a_budget_too_small_skips_and_says_so(tmp_path, capsys):
    # with progress on: the sweep's per-cell line also has to handle the price and probe cells, whose
    # records hold times, not accuracies
    ev = pl.evaluate("digits", pl.victim("lr", epochs=3, device="cpu"), 0.05, attacks=ATTACKS, defenses=None,
                     seeds=(0,), time_budget=1e-3, out=tmp_path, progress=True)
    assert "train_seconds" in capsys.readouterr().out
    skipped = {d.subject: d for d in ev.decisions if d.action == "skip"}
    assert sorted(skipped) == sorted(ATTACKS) and not ev.attacks
    assert all("budget" in d.reason for d in skipped.values())
    md = ev.to_markdown()
    assert "## Shortened, skipped, not applicable" in md and md.count("| skip |") == len(ATTACKS)
    assert "## Prices (time budget)" in md
    rows = _rows(tmp_path)
    # priced, no attack run; the theory cell (one target per seed) is not budgeted
    assert sorted(r["config"]["cell"] for r in rows) == ["price"] + ["probe"] * len(ATTACKS) + ["theory"]


def test_budget_plan_cheapest_first_shortens_then_skips():
    priced = [(Choice("big", "gc", {}), 100.0), (Choice("cheap", "label_flip", {}), 1.0),
              (Choice("mid", "min_max", {}), 10.0), (Choice("last", "i_min_max", {}), 200.0)]
    plan = budget_plan(priced, train_seconds=0.5, n_seeds=2, budget=40.0, spent=2.0)
    assert [(d.subject, d.action) for d in plan] == [("cheap", "run"), ("mid", "run"), ("big", "shorten"),
                                                    ("last", "skip")]
    # 40 - 2 - 2·0.5 = 37 left; cheap 3, mid 21 -> 13 left: gc gets (13/2 - 0.5)/100 of its 300 steps
    assert plan[2].options == {"steps": 18} and "steps 300 → 18" in plan[2].reason
    assert "no iteration count" in plan[3].reason


@pytest.mark.parametrize("kwargs, name", [
    ({"fraction": 1.5}, "fraction"), ({"seeds": ()}, "seeds"), ({"seeds": (0, 0)}, "seeds"), ({"seeds": (-1,)}, "seeds"),
    ({"time_budget": 0}, "time_budget"), ({"backend": "slurm"}, "backend"), ({"workers": -1}, "workers"),
    ({"attacks": ["nope"]}, "attacks"), ({"defenses": ["nope"]}, "defenses"), ({"attacks": []}, "attacks"),
    ({"progress": "yes"}, "progress"), ({"reference": "table-9"}, "reference"), ({"cache": 3}, "cache"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs, name):
    args = {"fraction": 0.05, "progress": False, **kwargs}
    fraction = args.pop("fraction")
    with pytest.raises(ConfigError, match=name):
        pl.evaluate("digits", pl.victim("lr", epochs=1), fraction, out=tmp_path, **args)
    assert not (tmp_path / "results.jsonl").exists()


def test_bad_data_and_unpicklable_factories(tmp_path):
    with pytest.raises(ConfigError, match="data"):
        pl.evaluate(123, "lr", out=tmp_path)
    with pytest.raises(ConfigError, match="cannot be sent"):
        pl.evaluate("digits", lambda: torch.nn.Linear(64, 10), workers=2, out=tmp_path)
    assert not (tmp_path / "results.jsonl").exists()


def test_a_users_module_on_in_memory_data_in_this_process(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised tabular features
    data = pl.data_from_arrays(x, y, bounds=(float(x.min()), float(x.max())), name="digits-tabular")
    ev = pl.evaluate(data, pl.victim(lambda: torch.nn.Sequential(torch.nn.Linear(64, 10)), epochs=2, lr=0.05),
                     0.05, attacks=["label_flip"], defenses=["loss"], out=tmp_path, progress=False)
    (a,) = ev.attacks
    assert a.seeds == [0] and not ev.grids  # tabular: no image grid
    assert ev.worst_case.per_seed[0] == (a.poisoned_accuracy[0], "label_flip")
    assert [x.defense for x in ev.defenses] == ["loss"]
    assert "digits-tabular" in ev.to_markdown()


def test_the_embedded_table_is_the_thesis_text(data_dir):
    text = Path(data_dir).parent / "thesis.txt"
    if not text.is_file():
        pytest.skip("thesis text not available")
    assert thesis_numbers(text, "lr")[0] == THESIS_LR
    assert thesis_numbers(text, "nn")[0] == THESIS_NN


def test_a_budget_counts_the_cells_that_run_at_once(tmp_path, monkeypatch):
    """With 2 local workers the cells' recorded seconds are worker-seconds: the plan gets twice the
    wall budget of them (and says so in the report)."""
    from poisonlab.evaluation import run as run_module

    seen = []
    real = run_module.budget_plan
    monkeypatch.setattr(run_module, "budget_plan", lambda *a, **k: seen.append(k["budget"]) or real(*a, **k))
    ev = pl.evaluate("digits", pl.victim("lr", epochs=2, device="cpu"), 0.05, attacks=["label_flip"], defenses=None,
                     seeds=(0,), time_budget=50, workers=2, out=tmp_path, progress=False)
    assert seen == [100.0]
    assert "2 cells at once: 100 worker-seconds" in ev.to_markdown()


def test_makespan_counts_a_lane_left_idle():
    """Three equal cells on two lanes take two cells' time, not 1.5: what the defenses' share of a
    budget is left with after the attacks."""
    from poisonlab.evaluation.plan import makespan

    assert makespan([3.0, 3.0, 3.0], 2) == 6.0
    assert makespan([3.0, 3.0, 3.0], 1) == 9.0
    assert makespan([5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert makespan([], 2) == 0.0


def test_defenses_are_priced_in_trainings_and_budgeted_cheapest_first(tmp_path):
    """Under a budget the defenses are decided cheapest first by their cost in trainings (MaxUp's
    grows with its copies m, Sever's with its rounds), each decision saying its price."""
    from poisonlab.evaluation.plan import DEFAULT_DEFENSE_TRAININGS, defense_trainings

    assert defense_trainings("maxup", {"m": 8}) > defense_trainings("maxup", {}) > defense_trainings("knn", {}) \
        > defense_trainings("loss", {})
    per_round = defense_trainings("sever", {"rounds": 3}) - defense_trainings("sever", {"rounds": 2})
    assert per_round > 0 and defense_trainings("sever", {"rounds": 4}) == defense_trainings("sever", {}) + 2 * per_round
    assert defense_trainings("not-in-the-table", {}) == DEFAULT_DEFENSE_TRAININGS
    ev = pl.evaluate("digits", pl.victim("lr", epochs=2, device="cpu"), 0.05, attacks=["label_flip", "min_max"],
                     defenses=["maxup", "sever", "loss"], seeds=(0,), time_budget=3600, out=tmp_path, progress=False)
    decided = [d for d in ev.decisions if d.kind == "defense"]
    assert [d.subject for d in decided] == ["loss", "sever", "maxup"]
    assert all(d.action == "run" and d.expected_seconds is not None for d in decided)
    costs = [d.expected_seconds for d in decided]
    assert costs == sorted(costs) and costs[0] < costs[2]
    # ... and run longest first, attacks and defenses alike (in this process: one after the other)
    rows = [r["result"] for r in ResultsLog(tmp_path / "results.jsonl").rows() if r["status"] == "ok"]
    ran_defenses = [r["defense"] for r in rows if "defended_accuracy" in r]
    assert ran_defenses == ["maxup"] * 2 + ["sever"] * 2 + ["loss"] * 2  # against each of the two attacks
    attacks = [d for d in ev.decisions if d.kind == "attack" and d.action == "run"]
    assert len(attacks) == 2 and attacks[0].expected_seconds <= attacks[1].expected_seconds  # decided cheapest first
    ran_attacks = [r["attack"] for r in rows if "poisoned_accuracy" in r and "defended_accuracy" not in r]
    assert ran_attacks == [attacks[1].subject, attacks[0].subject]


def test_without_a_budget_cells_run_dearest_first_by_their_cost_prior(evaluated):
    """No budget, no probes: the attack cells are ordered by :func:`attack_trainings` (the table's
    prior scaled by the iterations asked for) and the defense cells by their trainings, dearest first,
    so that parallel lanes finish together; in this process the rows come in that order."""
    from poisonlab.evaluation.plan import attack_trainings, defense_trainings

    assert attack_trainings("tgda", {}) > attack_trainings("back_gradient", {}) > attack_trainings("min_max", {})
    assert attack_trainings("min_max", {"epochs": 2}) * 2 == pytest.approx(attack_trainings("min_max", {"epochs": 4}))
    _, out = evaluated
    rows = [r for r in _rows(out) if r["status"] == "ok"]
    ran_attacks = list(dict.fromkeys(r["config"]["name"] for r in rows if r["config"].get("cell") == "attack"))
    prior = {name: attack_trainings(name, opts) for name, opts in ATTACKS.items()}
    assert ran_attacks == sorted(prior, key=lambda n: -prior[n]) and len(set(prior.values())) == len(prior)
    ran_defenses = list(dict.fromkeys(r["result"]["defense"] for r in rows if "defended_accuracy" in r["result"]))
    assert ran_defenses == sorted(DEFENSES, key=lambda d: -defense_trainings(d, {})) == ["knn", "loss"]
