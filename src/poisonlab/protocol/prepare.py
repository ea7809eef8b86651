"""Stage 0 of a run config: load the named dataset, split it 70 / 30 with the run's seed, build the
victim spec (validated) — shared by the runner, the defend stage and the target/threshold commands."""

from __future__ import annotations

from ..data import from_bundle, load_dataset
from ..data.types import ExperimentData
from ..devices import resolve_device
from ..models.victims import resolve_victim
from ..training import VictimSpec, check_victim
from .config import RunSpec


def prepare(cfg: RunSpec) -> tuple[ExperimentData, VictimSpec]:
    """Load the data, split it 70/30 with the run's seed and build the victim spec (validated):
    (D_tr, D_v and the test set, with ``split_seed`` the run's seed; the spec bound to that data,
    its recipe :meth:`RunSpec.recipe` with the dataset's batch size). The device is checked
    against this machine first (an impossible one fails before any loading)."""
    resolve_device(cfg.device)
    bundle = load_dataset(cfg.dataset, cfg.data_dir)
    exp = from_bundle(bundle, cfg.seed)
    resolve_victim(cfg.model)  # unknown model -> clear error before any work
    spec = VictimSpec(cfg.model, exp.input_shape, exp.num_classes, cfg.recipe(bundle.default_batch_size),
                      dict(cfg.model_options))
    check_victim(spec, exp.train.x, cfg.seed)  # model options, and one forward pass on the data, before any work
    return exp, spec


