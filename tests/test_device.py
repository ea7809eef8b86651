"""Device mix-ups, caught without a GPU (issue 26, "Ready for a GPU").

Four layers:

1. static: every tensor the library creates names its device (``device=``) and every ``.numpy()``
   reads a CPU tensor — checked on the source (AST), with a short allowlist, one reason each;
2. the device check itself (:func:`poisonlab.devices.resolve_device`) on this CPU-only torch and
   with ``torch.cuda`` mocked to report GPUs; the seeding and determinism helpers;
3. value-free paths on the ``meta`` device (HVPs, bounds, generators, latent shapes, the DDIM
   sampler, MaxUp's noise, SimCLR's views, GradPC's projection): results must stay on the input's
   device — a CPU tensor made on the way (no ``device=``, a host generator's draw not moved) fails;
4. every module an attack or defense builds is sent to the victim's device: the victim trains on
   ``cpu:0`` (a device object distinct from the default ``cpu``), ``nn.Module.to`` records where
   each module goes, and every module with parameters built during the run must have been sent
   there (a negative control checks that the recorder catches one that is not).

On a CUDA machine (``bench/gpu_check.py``) the same tests run with CUDA really available; the
CUDA-only tests at the end run there and are skipped here.
"""

import ast
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import poisonlab
import poisonlab.api as pl
from poisonlab.devices import available_devices, parse_device, resolve_device
from poisonlab.errors import ConfigError
from poisonlab.seeding import apply_determinism, determinism_settings, deterministic, device_generator, seeded_rng

ROOT = Path(poisonlab.__file__).parent
HAS_CUDA = torch.cuda.is_available()

# ----------------------------------------------------------------------------- 1. static
CREATORS = {"zeros", "ones", "empty", "full", "arange", "randn", "rand", "randint", "randperm", "linspace",
            "logspace", "eye", "tensor", "as_tensor", "normal", "empty_strided", "tril_indices", "triu_indices"}

#: files whose tensors are created on the CPU on purpose, or which another part of issue 26 owns
CREATION_ALLOWED = {
    "data/sources.py": "dataset loaders: datasets are CPU tensors by contract (the training loop moves them)",
    "data/splits.py": "the 70/30 split permutes CPU datasets with the CPU split generator",
    "data/arrays.py": "data_from_arrays builds CPU datasets from numpy arrays",
    "data/validate.py": "validation reports on CPU datasets",
    "autodiff/params.py": "flatten() of an empty list; the autodiff engine is item 2's (CG/HVP) code",
    "attacks/bilevel/schedule.py": "round indices drawn on the host generator (bit-identical CPU runs); item 2's "
                                   "code, to move to seeding.device_generator with the TGDA engine",
    "attacks/bilevel/tensors.py": "as bilevel/schedule.py (the poison sources, drawn on the host generator)",
    "attacks/bilevel/checkpoint.py": "as bilevel/schedule.py (optimiser step counts saved as CPU tensors)",
    "attacks/tgda.py": "as bilevel/schedule.py (item 1/2's code)",
    "attacks/gc.py": "GC's start sources drawn on the CPU generator once per run (another helper's code)",
}
#: single functions: (file, function) -> reason
CREATION_ALLOWED_IN = {
    ("models/extractors.py", "add_standardiser"): "module construction (called from __init__): buffers follow torch's "
                                               "default device, like nn.Linear's parameters",
}
#: ``.numpy()`` calls on objects that are not tensors, or that are CPU by contract
NUMPY_ALLOWED = {
    ("interop/art.py", "poison"): "PoisonSet.numpy() (a method that moves every tensor to the CPU itself)",
    ("evaluation/cells.py", "execute"): "defense scores / masks, CPU by Defense.score's contract (evaluation is "
                                        "another helper's code)",
}


def _calls(path: Path):
    """(call node, enclosing function or None, the function's assignments) for every call in ``path``."""
    tree = ast.parse(path.read_text())
    parent = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node
            while f in parent and not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                f = parent[f]
            yield node, (f if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) else None)


def _says_cpu(node: ast.AST) -> bool:
    s = ast.unparse(node)
    return ".cpu()" in s or "'cpu'" in s or '"cpu"' in s


def _base_name(e: ast.AST) -> str | None:
    while isinstance(e, (ast.Attribute, ast.Subscript, ast.Call)):
        e = e.func if isinstance(e, ast.Call) else e.value
    return e.id if isinstance(e, ast.Name) else None


def _assigned_from_cpu(func: ast.AST, name: str) -> bool:
    """Is ``name`` assigned in ``func`` from an expression that puts it on the CPU?"""
    for a in ast.walk(func):
        if isinstance(a, ast.Assign) and _says_cpu(a.value):
            for t in a.targets:
                names = [t] if isinstance(t, ast.Name) else list(t.elts) if isinstance(t, ast.Tuple) else []
                if any(isinstance(n, ast.Name) and n.id == name for n in names):
                    return True
    return False


def device_findings() -> list[str]:
    """Tensor creations without ``device=`` and ``.numpy()`` on a tensor not shown to be on the CPU."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for call, func in _calls(path):
            fname = func.name if func is not None else "<module>"
            attr, owner = call.func.attr, call.func.value
            if (attr in CREATORS and isinstance(owner, ast.Name) and owner.id == "torch"
                    and not any(k.arg == "device" for k in call.keywords)
                    and rel not in CREATION_ALLOWED and (rel, fname) not in CREATION_ALLOWED_IN
                    and fname != "__init__"):  # module construction follows torch's default device
                out.append(f"{rel}:{call.lineno} torch.{attr}(...) in {fname}() names no device")
            if attr == "numpy" and not call.args and (rel, fname) not in NUMPY_ALLOWED and not _says_cpu(owner):
                base = _base_name(owner)
                if not (func is not None and base and _assigned_from_cpu(func, base)):
                    out.append(f"{rel}:{call.lineno} {ast.unparse(owner)}.numpy() in {fname}() without .cpu()")
    return out


def test_every_tensor_creation_names_its_device_and_numpy_reads_the_cpu():
    findings = device_findings()
    assert not findings, "device mix-ups waiting for a GPU:\n" + "\n".join(findings)


def test_the_static_check_catches_what_it_is_for(tmp_path, monkeypatch):
    """The scanner flags a creation without ``device=`` and a ``.numpy()`` of a maybe-CUDA tensor."""
    pkg = tmp_path / "fake"
    pkg.mkdir()
    (pkg / "m.py").write_text("import torch\n\ndef f(x):\n    y = torch.zeros(3)\n    z = x * 2\n"
                              "    ok = x.cpu()\n    return z.numpy(), ok.numpy(), torch.ones(2, device=x.device)\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    found = device_findings()
    assert len(found) == 2 and "torch.zeros" in found[0] and "z.numpy()" in found[1]


def test_no_global_reseed_outside_seeding():
    """``torch.manual_seed`` reseeds every CUDA device (lazily, even before CUDA starts); the library
    seeds through :func:`poisonlab.seeding.seeded_rng` only."""
    hits = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "seeding.py":
            continue
        for call, _ in _calls(path):
            if call.func.attr in ("manual_seed", "fork_rng") and ast.unparse(call.func.value) in ("torch", "torch.random"):
                hits.append(f"{rel}:{call.lineno}")
    assert not hits, f"global RNG seeded outside seeding.seeded_rng: {hits}"


# ----------------------------------------------------------------------------- 2. the device check
@pytest.mark.skipif(HAS_CUDA, reason="checks a torch without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_an_unavailable_device_is_a_config_error_naming_what_this_torch_can_use(device):
    with pytest.raises(ConfigError) as e:
        resolve_device(device)
    assert repr(device) in str(e.value) and "'auto', 'cpu'" in str(e.value)
    with pytest.raises(ConfigError, match="device="):
        pl.victim("lr", device=device)  # at construction, before any work


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "xla", 3, None, 1.5])
def test_a_malformed_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="device="):
        resolve_device(device)
    with pytest.raises(ConfigError):
        parse_device(device)


def test_cpu_and_auto_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert parse_device("auto") is None and parse_device("cuda:1") == torch.device("cuda:1")  # spelling only


def test_mocked_cuda_auto_picks_it_and_the_index_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert "'cuda:1'" in available_devices().__repr__()
    with pytest.raises(ConfigError, match="only 2 CUDA device"):
        resolve_device("cuda:2")
    assert pl.victim("lr", device="cuda:1").recipe.device == "cuda:1"


def test_run_config_checks_the_spelling_and_the_run_checks_the_machine_first(monkeypatch):
    import importlib

    from poisonlab.protocol import RunSpec

    prep = importlib.import_module("poisonlab.protocol.prepare")

    with pytest.raises(ConfigError, match="device="):
        RunSpec(device="gpu")
    if HAS_CUDA:
        return
    cfg = RunSpec(device="cuda")  # may run on a GPU worker: only the spelling is checked here

    def no_loading(*_a, **_k):
        raise AssertionError("data loaded before the device was checked")

    monkeypatch.setattr(prep, "load_dataset", no_loading)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        prep.prepare(cfg)


def test_cli_device_flags(tmp_path, capsys):
    from poisonlab.cli.main import main

    grid = tmp_path / "g.yaml"
    grid.write_text("base: {dataset: digits, model: lr, epochs: 1}\ngrid: {seed: [0, 1]}\n")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "s"), "--dry-run", "--device", "cpu"]) == 0
    assert "2 runs" in capsys.readouterr().out
    clash = tmp_path / "c.yaml"
    clash.write_text("base: {dataset: digits}\ngrid: {device: [cpu, auto]}\n")
    assert main(["sweep", str(clash), "--out", str(tmp_path / "c"), "--dry-run", "--device", "cpu"]) == 2
    if not HAS_CUDA:
        for argv in (["run", "--device", "cuda:0", "--quiet"], ["vae", "--device", "cuda"],
                     ["sweep", str(grid), "--out", str(tmp_path / "s"), "--dry-run", "--device", "cuda"]):
            assert main(argv) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_seeded_rng_does_not_touch_cuda_and_restores_the_cpu_state():
    tracker = torch.cuda._lazy_seed_tracker  # where torch.manual_seed queues its CUDA reseed
    before_cb, before_state = tracker.manual_seed_all_cb, torch.random.get_rng_state()
    with seeded_rng(5):
        a = torch.rand(3)
    with seeded_rng(5):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before_state)
    if not torch.cuda.is_initialized():
        assert tracker.manual_seed_all_cb is before_cb  # no CUDA reseed queued


def test_victims_built_under_the_seed_are_reproducible():
    spec = pl.victim("nn", device="cpu").for_data((1, 8, 8), 10)
    a, b = spec.build(3), spec.build(3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_device_generator_keeps_the_host_stream_on_the_cpu():
    g = torch.Generator().manual_seed(4)
    assert device_generator(g, "cpu") is g
    assert device_generator(g, torch.device("meta")) is g  # meta tensors take no generator
    if HAS_CUDA:
        d = device_generator(g, "cuda")
        assert d.device.type == "cuda" and torch.randn(2, generator=d, device=d.device).is_cuda


def test_determinism_policy_is_applied_reported_and_restored():
    before = determinism_settings()
    with deterministic("warn") as inside:
        assert inside == determinism_settings()
        assert inside["deterministic_algorithms"] and inside["deterministic_warn_only"]
        assert inside["cudnn_deterministic"] and not inside["cudnn_benchmark"]
        assert not inside["cuda_matmul_allow_tf32"] and not inside["cudnn_allow_tf32"]
        assert inside["float32_matmul_precision"] == "highest"
    assert determinism_settings() == {**before, "cublas_workspace_config": determinism_settings()["cublas_workspace_config"]}
    with pytest.raises(ConfigError, match="determinism mode"):
        apply_determinism("sometimes")


def test_the_determinism_policy_changes_no_number_on_the_cpu():
    from poisonlab.data import load_dataset
    from poisonlab.training import TrainConfig, VictimSpec

    data = load_dataset("digits").train
    spec = VictimSpec("nn", data.input_shape, 10, TrainConfig(epochs=2, batch_size=128, device="cpu"), {"hidden": [32]})
    plain = spec.train(data, seed=0)
    with warnings.catch_warnings(), deterministic("warn"):
        warnings.simplefilter("ignore")
        strict = spec.train(data, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), strict.parameters()))


# ----------------------------------------------------------------------------- 3. meta (value-free)
META = torch.device("meta")


def test_hvp_and_mixed_products_stay_on_the_inputs_device():
    from poisonlab.autodiff import functional_loss, named_params
    from poisonlab.autodiff.hvp import hvp

    m = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to(META)
    names, w = named_params(m)
    f = functional_loss(m, names)
    x, y = torch.empty(5, 4, device=META), torch.zeros(5, dtype=torch.long, device=META)
    for method in ("fwdrev", "double_backward"):
        out = hvp(f, w, tuple(torch.empty_like(p) for p in w), x, y, method=method)
        assert [o.device for o in out] == [META] * len(w) and [o.shape for o in out] == [p.shape for p in w]


def test_bounds_projections_follow_the_input():
    from poisonlab.data.bounds import Bounds

    b = Bounds.of((torch.zeros(3) - 1, torch.ones(3) * 2), (3,))
    x = torch.empty(4, 3, device=META)
    for out in (b.clamp(x), b.project_linf(x, x, 0.1), b.from_unit(x), b.to_unit(x)):
        assert out.device == META
    assert b.on(META, torch.float64)[0] is b.on(META, torch.float64)[0]  # moved once, then cached
    assert b.lower.device.type == "cpu"


@pytest.mark.parametrize("name", ["fc_autoencoder", "conv_autoencoder"])
def test_generators_run_where_they_are(name):
    from poisonlab.data.bounds import Bounds
    from poisonlab.models.generators import build_generator

    g = build_generator(name, (3, 8, 8), 10, bounds=Bounds.of((-1.0, 2.0))).to(META)
    assert g(torch.empty(3, 3, 8, 8, device=META), torch.zeros(3, dtype=torch.long, device=META)).device == META


def test_maxup_noise_simclr_views_and_gradpc_projection_stay_on_the_device():
    from poisonlab.attacks.gradpc import project
    from poisonlab.data.bounds import Bounds
    from poisonlab.defenses.maxup import worst_case_loss
    from poisonlab.pretrain.simclr import augment

    g = device_generator(torch.Generator().manual_seed(0), META)
    model = nn.Linear(6, 3).to(META)
    x, y = torch.empty(4, 6, device=META), torch.zeros(4, dtype=torch.long, device=META)
    assert worst_case_loss(model, x, y, 2, torch.full((6,), 0.1, dtype=torch.float64), g, Bounds.unit()).device == META
    assert augment(torch.empty(2, 3, 8, 8, device=META), g, flip=True).device == META
    for norm in ("l2", "linf"):
        assert project(torch.empty(10, device=META), 0.5, norm, 3).device == META


def test_latent_shapes_and_the_ddim_sampler_run_on_the_models_device():
    pytest.importorskip("diffusers")
    from poisonlab.generative.latent_model import ConditionalLatentDiffusion, LatentDiffusionConfig
    from poisonlab.generative.vae import TinyVAEConfig, build_tiny_vae

    vae = build_tiny_vae(TinyVAEConfig(in_channels=1, block_out_channels=(8, 16), sample_size=8)).to(META)
    assert vae.device == META and vae.latent_shape((1, 8, 8)) == (4, 4, 4)
    cfg = LatentDiffusionConfig(block_out_channels=(16, 32), norm_num_groups=8, num_train_timesteps=10)
    ldm = ConditionalLatentDiffusion((4, 4, 4), 3, cfg).to(META)
    z = ldm.sample(1, 2, torch.Generator().manual_seed(0), steps=3)
    assert z.device == META and z.shape == (2, 4, 4, 4)


def test_the_gauge_direction_lands_on_the_parameters_device():
    from poisonlab.attacks.reachable_target import _gauge_direction

    w = [torch.empty(3, 4, device=META), torch.empty(3, device=META)]
    v = _gauge_direction(torch.randn(3, 5, dtype=torch.float64), ["w", "b"], ("w", "b"), w)
    assert v.device == META and v.shape == (15,) and v.dtype == torch.float32


# ----------------------------------------------------------------------------- 4. modules follow the victim
VICTIM_DEVICE = torch.device("cpu:0")  # a device object no default placement produces


class ModuleRecorder:
    """Records every nn.Module built and every one sent to :data:`VICTIM_DEVICE` by ``.to``."""

    def __init__(self, monkeypatch):
        self.built: list[nn.Module] = []
        self.sent: set[int] = set()
        init, to = nn.Module.__init__, nn.Module.to
        recorder = self

        def recording_init(module, *a, **k):
            init(module, *a, **k)
            recorder.built.append(module)

        def recording_to(module, *a, **k):
            target = k.get("device", a[0] if a else None)
            if isinstance(target, torch.Tensor):
                target = target.device
            if isinstance(target, (str, torch.device)) and torch.device(target) == VICTIM_DEVICE:
                recorder.sent.add(id(module))
            return to(module, *a, **k)

        monkeypatch.setattr(nn.Module, "__init__", recording_init)
        monkeypatch.setattr(nn.Module, "to", recording_to)

    def clear(self) -> None:
        self.built.clear()
        self.sent.clear()

    def left_behind(self) -> list[str]:
        """The modules with parameters, built since :meth:`clear` (outermost only), never sent to the victim's device."""
        inner = {id(s) for m in self.built for s in m.modules() if s is not m}
        placed = {id(p) for m in self.built if id(m) in self.sent for p in m.parameters()}
        # a wrapper whose every parameter is a placed module's (ART's ModelWrapper around the victim) is placed
        return [type(m).__name__ for m in self.built
                if id(m) not in inner and id(m) not in self.sent
                and any(True for _ in m.parameters()) and not all(id(p) in placed for p in m.parameters())]


@pytest.fixture(scope="module")
def on_victim_device():
    from poisonlab.data import load_dataset, split_train_val
    from poisonlab.training import TrainConfig, Victim, VictimSpec

    data = split_train_val(load_dataset("digits").train, torch.Generator().manual_seed(0))
    spec = VictimSpec("lr", data.train.input_shape, 10, TrainConfig(epochs=1, batch_size=64, device="cpu:0"))
    model = spec.train(data.train, seed=0)
    return data, Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})


def test_the_recorder_catches_a_module_left_on_the_default_device(monkeypatch):
    rec = ModuleRecorder(monkeypatch)
    nn.Linear(2, 2).to(VICTIM_DEVICE)
    assert rec.left_behind() == []
    nn.Sequential(nn.Linear(2, 2))
    assert rec.left_behind() == ["Sequential"]


def test_every_module_an_attack_builds_goes_to_the_victims_device(on_victim_device, monkeypatch):
    from test_attack_contract import FAST_OPTIONS

    from poisonlab.attacks import ATTACKS, build_attack

    data, victim = on_victim_device
    rec = ModuleRecorder(monkeypatch)
    stray = {}
    for name in ATTACKS.names():
        rec.clear()
        build_attack(name, FAST_OPTIONS[name]).poison(data, victim, 0.03, generator=torch.Generator().manual_seed(1))
        if rec.left_behind():
            stray[name] = rec.left_behind()
    assert not stray, f"modules built off the victim's device: {stray}"


def test_every_module_a_defense_builds_goes_to_the_victims_device(on_victim_device, monkeypatch):
    from poisonlab.data.types import PoisonedDataset
    from poisonlab.defenses import DEFENSES, build_defense
    from poisonlab.errors import UnsupportedError

    data, victim = on_victim_device
    mixed = PoisonedDataset.mix(data.train, build_poisons(data, victim))
    rec = ModuleRecorder(monkeypatch)
    stray, ran = {}, []
    for name in DEFENSES.names():
        rec.clear()
        try:
            d = build_defense(name, {"rounds": 1} if name == "sever" else None)
        except UnsupportedError:  # an optional extra (ART) is missing
            continue
        g = torch.Generator().manual_seed(0)
        d.defend(mixed, victim, d.score(mixed, victim, generator=g, reference=data.val), generator=g)
        ran.append(name)
        if rec.left_behind():
            stray[name] = rec.left_behind()
    assert len(ran) >= 8 and not stray, f"modules built off the victim's device: {stray}"


def build_poisons(data, victim):
    from poisonlab.attacks import build_attack

    return build_attack("label_flip").poison(data, victim, 0.03, generator=torch.Generator().manual_seed(2))


# ----------------------------------------------------------------------------- CUDA only (bench/gpu_check.py)
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_victim_attack_and_defense_end_to_end():
    from poisonlab.data import load_dataset, split_train_val
    from poisonlab.defenses import build_defense
    from poisonlab.training import TrainConfig, Victim, VictimSpec

    data = split_train_val(load_dataset("digits").train, torch.Generator().manual_seed(0))
    spec = VictimSpec("nn", data.train.input_shape, 10, TrainConfig(epochs=2, batch_size=64, device="cuda"))
    model = spec.train(data.train, seed=0)
    assert next(model.parameters()).is_cuda
    victim = Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})
    from test_attack_contract import FAST_OPTIONS

    from poisonlab.attacks import ATTACKS, build_attack

    for name in ATTACKS.names():
        if name == "feature_targeted":
            continue  # needs a features + head split; nn has one, but its GC stage is slow on digits
        p = build_attack(name, FAST_OPTIONS[name]).poison(data, victim, 0.03, generator=torch.Generator().manual_seed(1))
        assert p.x.device.type == "cpu" and torch.isfinite(p.x).all()
    from poisonlab.data.types import PoisonedDataset

    mixed = PoisonedDataset.mix(data.train, build_poisons(data, victim))
    for name in ("maxup", "spectral", "sever", "knn", "influence"):
        d = build_defense(name)
        s = d.score(mixed, victim, generator=torch.Generator().manual_seed(0), reference=data.val)
        assert torch.isfinite(s.scores).all()
