"""Diagnose GC reach on MNIST LR: is the agreement gap the recipe (early stopping) or the residual?

One-off check behind docs/studies/gradient-canceling.md ("Why the damaging targets are not reached"):

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/gc_reach_lbfgs.py 0.05 600   # GC, the recipe's retrain, a 2nd clean seed, then full-batch L-BFGS from the retrain
"""
import tempfile
from pathlib import Path

import sys, time, json, math, copy
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clean_victim
import torch
from poisonlab.attacks import build_attack
from poisonlab.attacks.targets import make_target, load_target
from poisonlab.cache import as_cache
from poisonlab.data import PoisonedDataset
from poisonlab.protocol import RunSpec, save_model
from poisonlab.protocol.reachability import threshold_report
from poisonlab.seeding import torch_generator
from poisonlab.training import accuracy, mean_loss
torch.set_num_threads(1)
CACHE = "runs/bench_gc/cache"
eps_w = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 600
prep, clean, victim = clean_victim(RunSpec(dataset="mnist", model="lr", seed=0, cache_dir=CACHE))
data, test = prep.attack_data(), prep.test
print("recipe", victim.spec.recipe, flush=True)
acc1 = accuracy(clean, test)
target, info = make_target("gradpc", victim.clean_model(), data.val, {"eps_w": eps_w}, False, cache=as_cache(CACHE))
tg = threshold_report(target, prep).tau_gauge
f = math.ceil(tg / 0.8 * 1000) / 1000
path = str(Path(tempfile.mkdtemp()) / f"gradpc_{eps_w}.safetensors")
save_model(path, target, {"model": "lr", "stage": "target"})
print(f"clean {acc1:.2f} target {accuracy(target, test):.2f} tau_gauge {tg:.4f} fraction {f}", flush=True)
attack = build_attack("gc", {"init": "plan", "steps": steps, "lr": 0.05, "target": path})
t = time.perf_counter()
ps = attack.poison(data, victim, f, generator=torch_generator(0, "attack"))
print(f"GC {time.perf_counter()-t:.1f}s residual {ps.info['final_rel_grad_norm']:.4f}", flush=True)
mixed = PoisonedDataset.combine(data.train, ps).dataset
def agree(m):
    with torch.no_grad():
        return float((m(test.x).argmax(1) == target(test.x).argmax(1)).float().mean() * 100)
retrained = victim.retrain(mixed)
print(f"recipe retrain: acc {accuracy(retrained, test):.2f} agree {agree(retrained):.2f} mixed loss retr {float(mean_loss(retrained, mixed)):.5f} target {float(mean_loss(target, mixed)):.5f}", flush=True)
# clean noise floor: the clean recipe retrained with another seed
other = victim.spec.train(data.train, 1)
with torch.no_grad():
    ag = float((other(test.x).argmax(1) == clean(test.x).argmax(1)).float().mean() * 100)
print(f"clean seed0 vs seed1 agreement {ag:.2f}", flush=True)
# longer training: full-batch LBFGS float64 from the retrained model on the mixed set
m = copy.deepcopy(retrained).double()
X, Y = mixed.x.double().flatten(1) if False else mixed.x.double(), mixed.y
opt = torch.optim.LBFGS(m.parameters(), lr=1, max_iter=50, history_size=20, line_search_fn="strong_wolfe")
lossf = torch.nn.CrossEntropyLoss()
tgt = copy.deepcopy(target).double()
for it in range(10):
    def closure():
        opt.zero_grad(); l = lossf(m(X), Y); l.backward(); return l
    opt.step(closure)
    with torch.no_grad():
        l = float(lossf(m(X), Y)); a = float((m(test.x.double()).argmax(1) == tgt(test.x.double()).argmax(1)).float().mean()*100)
        acc = float((m(test.x.double()).argmax(1) == test.y).float().mean()*100)
        d = sum(float((p - q).pow(2).sum()) for p, q in zip(m.parameters(), tgt.parameters())) ** 0.5
    print(f"LBFGS {(it+1)*50}: mixed loss {l:.5f} acc {acc:.2f} agree {a:.2f} dist-to-target {d:.4f}", flush=True)
