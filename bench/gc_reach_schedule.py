"""GC on a GradPC target at ε = τ_gauge / share with any GC options (JSON), then the recipe's retrain.

One-off check behind docs/studies/gradient-canceling.md ("Why the damaging targets are not reached"):

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/gc_reach_schedule.py 0.05 '{"steps": 2400, "lr": 0.05, "schedule": "cosine"}'
"""
import tempfile
from pathlib import Path

import sys, time, json, math
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clean_victim
import torch
from poisonlab.attacks import build_attack
from poisonlab.attacks.targets import make_target
from poisonlab.cache import as_cache
from poisonlab.data import PoisonedDataset
from poisonlab.protocol import RunSpec
from poisonlab.protocol.reachability import threshold_report
from poisonlab.seeding import torch_generator
from poisonlab.training import accuracy, mean_loss
torch.set_num_threads(1)
CACHE = "runs/bench_gc/cache"
eps_w = float(sys.argv[1]); opts = json.loads(sys.argv[2]); share = float(sys.argv[3]) if len(sys.argv) > 3 else 0.8
prep, clean, victim = clean_victim(RunSpec(dataset="mnist", model="lr", seed=0, cache_dir=CACHE))
data, test = prep.attack_data(), prep.test
target, info = make_target("gradpc", victim.clean_model(), data.val, {"eps_w": eps_w}, False, cache=as_cache(CACHE))
tg = threshold_report(target, prep).tau_gauge
f = math.ceil(tg / share * 1000) / 1000
path = str(Path(tempfile.mkdtemp()) / f"gradpc_{eps_w}.safetensors")
from poisonlab.protocol import save_model
save_model(path, target, {"model": "lr", "stage": "target"})
print(f"target saved to {path}", flush=True)
attack = build_attack("gc", {"init": "plan", **opts, "target": path})
t = time.perf_counter()
ps = attack.poison(data, victim, f, generator=torch_generator(0, "attack"))
tr = ps.info.get("trace") or ps.info.get("rel_grad_norm_trace")
print(f"eps_w {eps_w} f {f} opts {opts}: GC {time.perf_counter()-t:.1f}s residual {ps.info['final_rel_grad_norm']:.5f}", flush=True)
if tr: print("trace", [round(v,4) for v in (tr[::max(1,len(tr)//15)] if isinstance(tr, list) else [])], flush=True)
mixed = PoisonedDataset.combine(data.train, ps).dataset
retrained = victim.retrain(mixed)
with torch.no_grad():
    ag = float((retrained(test.x).argmax(1) == target(test.x).argmax(1)).float().mean() * 100)
print(f"  retrain acc {accuracy(retrained, test):.2f} target acc {accuracy(target, test):.2f} agree {ag:.2f} mixed loss retr {float(mean_loss(retrained, mixed)):.5f} target {float(mean_loss(target, mixed)):.5f}", flush=True)
