"""GC from the gauge plan's (k classified, l labelled) pairs: does a pair-aware start reach damaging targets?

One-off check behind docs/studies/gradient-canceling.md ("Why the damaging targets are not reached"):

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/gc_reach_pair_start.py TARGET.safetensors 0.155 pair 600 0.05   # TARGET: the GradPC eps_w=0.05 target (gc_reach_schedule.py prints where it saved it)
"""
import tempfile
from pathlib import Path

import sys, time, json, math
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clean_victim
import torch
from poisonlab.attacks.gc import sum_gradient, poison_input_gradient
from poisonlab.attacks.targets import load_target
from poisonlab.autodiff import named_params
from poisonlab.data import PoisonedDataset, Dataset
from poisonlab.protocol import RunSpec
from poisonlab.theory.linear import box_gauge
from poisonlab.training import accuracy, mean_loss, predict_logits
torch.set_num_threads(1)
CACHE = "runs/bench_gc/cache"
path, f, mode, steps, lr = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
prep, clean, victim = clean_victim(RunSpec(dataset="mnist", model="lr", seed=0, cache_dir=CACHE))
data, test = prep.attack_data(), prep.test
train = data.train
target = load_target(path, victim.clean_model())
names, w = named_params(target)
N = len(train); n = round(f * N); eps = n / N
g = sum_gradient(target, names, w, train.x, train.y, 1.0 / N, 8192); gn = float(g.norm())
gauge = box_gauge(target, names, g, data.bounds, train.input_shape)
print(f"tau_gauge {gauge.tau:.4f} eps {eps:.4f} share {gauge.tau/eps:.3f}", flush=True)
gen = torch.Generator().manual_seed(0)
pred = predict_logits(target, train.x).argmax(1)
plan = torch.tensor(gauge.plan)  # [k, l] mass, sums to tau
counts = torch.round(plan / eps * n).long()
xs, ys = [], []
for k in range(plan.shape[0]):
    for l in range(plan.shape[1]):
        c = int(counts[k, l])
        if c == 0: continue
        if mode == "pair":      # x: training points the target classifies as k, label l
            pool = torch.nonzero(pred == k).flatten()
        else:                   # "label": points of class l with label l (today's plan init)
            pool = torch.nonzero(train.y == l).flatten()
        idx = pool[torch.randint(len(pool), (c,), generator=gen)]
        xs.append(train.x[idx]); ys.append(torch.full((c,), l, dtype=torch.long))
rest = n - sum(len(v) for v in ys)  # neutral mass: points the target classifies correctly, own label
if rest > 0:
    pool = torch.nonzero(pred == train.y).flatten()
    idx = pool[torch.randint(len(pool), (rest,), generator=gen)]
    xs.append(train.x[idx]); ys.append(train.y[idx])
x = torch.cat(xs)[:n].clone(); y = torch.cat(ys)[:n]
print(f"poisons {len(y)} (pairs {int(counts.sum())}, neutral {max(rest,0)})", flush=True)
lo, hi = 0.0, 1.0
xv = x.clone().requires_grad_(True); opt = torch.optim.Adam([xv], lr=lr)
best, bx = math.inf, x.clone()
t0 = time.perf_counter()
for s in range(steps + 1):
    r = g + sum_gradient(target, names, w, xv.detach(), y, 1.0 / N, 8192)
    norm = float(r.norm()) / (1 + eps) / gn
    if norm < best: best, bx = norm, xv.detach().clone()
    if s % 100 == 0: print(f"  step {s}: residual {norm:.4f}", flush=True)
    if s == steps: break
    lr_s = 0.5 * lr * (1 + math.cos(math.pi * s / steps))
    opt.param_groups[0]["lr"] = lr_s
    xv.grad = poison_input_gradient(target, names, w, xv.detach(), y, r, 1.0 / N, 8192)
    opt.step()
    with torch.no_grad(): xv.clamp_(lo, hi)
print(f"GC {time.perf_counter()-t0:.1f}s best residual {best:.4f}", flush=True)
mixed = Dataset(torch.cat([train.x, bx]), torch.cat([train.y, y]), train.num_classes)
retr = victim.retrain(mixed)
with torch.no_grad(): ag = float((retr(test.x).argmax(1) == target(test.x).argmax(1)).float().mean() * 100)
print(f"  retrain acc {accuracy(retr, test):.2f} target {accuracy(target, test):.2f} agree {ag:.2f} mixed loss retr {float(mean_loss(retr, mixed)):.4f} target {float(mean_loss(target, mixed)):.4f}", flush=True)
