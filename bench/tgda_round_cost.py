"""Usage: POISONLAB_DATA=... OMP_NUM_THREADS=1 python bench/tgda_round_cost.py lr nn cnn

Time one TGDA round (m=1 leader step with 10 CG its, n=20 follower steps; 1000 clean + 30 poisons,
1000 val) for a victim; an MNIST epoch is 42 rounds."""
import sys, time, torch
from poisonlab.data import load_dataset, split_train_val
from poisonlab.seeding import torch_generator
from poisonlab.attacks import _bilevel as B
from poisonlab.attacks.tgda import leader_gradient
from poisonlab.autodiff import CGOptions
from poisonlab.models import build_victim, build_generator
torch.manual_seed(0)
b = load_dataset("mnist")  # from $POISONLAB_DATA
d = split_train_val(b.train, torch_generator(0, "split"))
for name in sys.argv[1:]:
    fol, w = B.Follower.from_model(build_victim(name, (1,28,28), 10), torch.float32)
    gen = build_generator("fc_autoencoder", (1,28,28), 10)
    xc, yc, x0, y0 = d.train.x[:1000], d.train.y[:1000], d.train.x[1000:1030], d.train.y[1000:1030]
    xv, yv = d.val.x[:1000], d.val.y[:1000]
    for rep in range(2):  # the first round warms up (allocations, autograd caches); time the second
        c0, t0 = time.process_time(), time.perf_counter()
        leader_gradient(fol, gen, w, (xc,yc), (x0,y0), (xv,yv), solver=CGOptions(damping=0.01, tol=1e-30, max_iter=10))
        c1 = time.process_time()
        xp = gen(x0, y0).detach()
        B.sgd_steps(lambda ws: fol.mixed_loss(ws, xc, yc, xp, y0), w, 0.1, 20)
        c2, t2 = time.process_time(), time.perf_counter()
    print(f"{name}: leader {c1-c0:.2f} s CPU, 20 follower steps {c2-c1:.2f} s CPU, round {c2-c0:.2f} s CPU ({t2-t0:.2f} s wall) "
          f"-> {42*(c2-c0):.0f} s CPU per MNIST epoch (42 rounds)", flush=True)
