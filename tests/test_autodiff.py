"""Second-order engine checked against dense Hessians and finite differences in float64."""

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian

from poisonlab.autodiff import (
    CGOptions,
    conjugate_gradient,
    dataset_hvp,
    directional,
    flatten,
    functional_loss,
    functional_model,
    hvp,
    inverse_hvp,
    mixed_vjp,
    named_params,
    total_gradient,
    unflatten,
    value_and_grad,
)
from poisonlab.errors import ConfigError


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _tiny_mlp():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(20, 1, 2, 3)
    y = torch.randint(0, 3, (20,))
    return m, x, y


def _dense_hessian(f, params, *args):
    flat = flatten(params)
    return hessian(lambda v: f(unflatten(v, params), *args), flat)


def test_functional_loss_is_the_models_cross_entropy_with_params_replaced():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    loss = functional_loss(m, names)
    torch.testing.assert_close(loss(params, x, y), torch.nn.functional.cross_entropy(m(x), y), rtol=0, atol=0)
    other = tuple(p + 0.1 for p in params)
    with torch.no_grad():
        ref = [p.clone() for p in m.parameters()]
        for p in m.parameters():
            p.add_(0.1)
        expected = torch.nn.functional.cross_entropy(m(x), y, reduction="none")
        for p, r in zip(m.parameters(), ref):
            p.copy_(r)
    torch.testing.assert_close(functional_loss(m, names, reduction="none")(other, x, y), expected)
    torch.testing.assert_close(functional_loss(m, names, reduction="sum")(params, x, y), len(x) * loss(params, x, y))
    # a subset of the parameters: the others keep the model's values
    head = ["3.weight", "3.bias"]
    _, hp = named_params(m, head)
    torch.testing.assert_close(functional_model(m, head)(hp, x), m(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="reduction"):
        functional_loss(m, names, reduction="max")


def test_value_and_grad_and_directional_match_autograd():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    loss = functional_loss(m, names)
    value, grads = value_and_grad(loss, params, x, y)
    ps = tuple(p.clone().requires_grad_(True) for p in params)
    expected = torch.autograd.grad(loss(ps, x, y), ps)
    assert value.item() == loss(params, x, y).item()
    torch.testing.assert_close(flatten(grads), flatten(expected), rtol=0, atol=0)
    v = tuple(torch.randn_like(p) for p in params)
    per_point = directional(functional_loss(m, names, reduction="none"), params, v, x, y)  # (N,)
    assert per_point.shape == (len(x),)
    torch.testing.assert_close(per_point.mean(), torch.dot(flatten(grads), flatten(v)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["fwdrev", "double_backward"])
def test_hvp_matches_dense_hessian(method):
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)
    H = _dense_hessian(f, params, x, y)
    v = torch.randn(H.shape[0])
    got = flatten(hvp(f, params, unflatten(v, params), x, y, method=method))
    torch.testing.assert_close(got, H @ v, rtol=1e-9, atol=1e-11)


def test_hvp_matches_central_finite_differences():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)

    def grad_at(flat):
        ps = tuple(p.clone().requires_grad_(True) for p in unflatten(flat, params))
        return flatten(torch.autograd.grad(f(ps, x, y), ps))

    w = flatten(params)
    v = torch.randn_like(w)
    h = 1e-5
    fd = (grad_at(w + h * v) - grad_at(w - h * v)) / (2 * h)
    got = flatten(hvp(f, params, unflatten(v, params), x, y))
    torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-8)


def test_hvp_symmetry():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)
    u, v = torch.randn(flatten(params).shape[0]), torch.randn(flatten(params).shape[0])
    hu = flatten(hvp(f, params, unflatten(u, params), x, y))
    hv = flatten(hvp(f, params, unflatten(v, params), x, y))
    assert torch.dot(u, hv).item() == pytest.approx(torch.dot(v, hu).item(), rel=1e-10)


def test_dataset_hvp_chunks_equal_full_batch_and_dense_hessian():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)
    v = tuple(torch.randn_like(p) for p in params)
    full = hvp(f, params, v, x, y)
    chunked = dataset_hvp(f, params, v, x, y, chunk_size=7)
    torch.testing.assert_close(flatten(chunked), flatten(full), rtol=1e-10, atol=1e-12)
    H = _dense_hessian(f, params, x, y)
    torch.testing.assert_close(flatten(chunked), H @ flatten(v), rtol=1e-9, atol=1e-11)


def test_mixed_vjp_matches_finite_differences_in_inputs():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    v = tuple(torch.randn_like(p) for p in params)
    f = functional_loss(m, names)

    def phi(xx):  # <∇_w f(w, xx, y), v>
        ps = tuple(p.clone().requires_grad_(True) for p in params)
        gw = torch.autograd.grad(f(ps, xx, y), ps)
        return sum((a * b).sum() for a, b in zip(gw, v)).item()

    got = mixed_vjp(f, params, v, x, y)  # argnums=0: with respect to x
    assert got.shape == x.shape
    d = torch.randn_like(x)
    h = 1e-5
    fd = (phi(x + h * d) - phi(x - h * d)) / (2 * h)
    assert (got * d).sum().item() == pytest.approx(fd, rel=1e-6)


def test_mixed_vjp_with_several_arguments_matches_dense_cross_hessian():
    """∇²_{xw} f · v for two differentiated arguments at once (argnums a tuple) = the dense mixed
    Hessian's transpose times v, for each argument."""
    torch.manual_seed(4)
    w = (torch.randn(3),)
    a, b = torch.randn(4, 3), torch.randn(3)

    def f(ws, a_, b_):
        return torch.tanh(a_ @ ws[0]).pow(2).sum() + (b_ * ws[0]).pow(3).sum()

    v = (torch.randn(3),)
    ga, gb = mixed_vjp(f, w, v, a, b, argnums=(0, 1))

    def grad_w(a_, b_):
        return torch.func.grad(lambda z: f((z,), a_, b_))(w[0])

    ja, jb = torch.autograd.functional.jacobian(grad_w, (a, b))  # (3, 4, 3), (3, 3)
    torch.testing.assert_close(ga, torch.einsum("i,ijk->jk", v[0], ja), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb, v[0] @ jb, rtol=1e-10, atol=1e-12)


def test_cg_matches_dense_solve_with_damping_and_warm_start():
    torch.manual_seed(1)
    a = torch.randn(12, 12)
    A = a @ a.T + 0.5 * torch.eye(12)
    b = torch.randn(12)
    res = conjugate_gradient(lambda v: A @ v, b, CGOptions(damping=0.1, tol=1e-12, max_iter=200))
    expected = torch.linalg.solve(A + 0.1 * torch.eye(12), b)
    assert res.converged
    torch.testing.assert_close(res.x, expected, rtol=1e-8, atol=1e-10)
    warm = conjugate_gradient(lambda v: A @ v, b, CGOptions(damping=0.1, tol=1e-12, max_iter=200), x0=expected)
    assert warm.iterations <= 1


def test_cg_normal_equations_solve_indefinite_system():
    torch.manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    eig = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.7, -0.5, -1.0, -2.0, -2.5, 0.9])
    A = q @ torch.diag(eig) @ q.T
    b = torch.randn(10)
    res = conjugate_gradient(lambda v: A @ v, b, CGOptions(tol=1e-12, max_iter=500, normal_equations=True))
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    plain = conjugate_gradient(lambda v: A @ v, b, CGOptions(tol=1e-12, max_iter=500))
    assert not plain.converged  # plain CG detects negative curvature and stops


@pytest.mark.parametrize("bad", [{"damping": -0.1}, {"tol": 0.0}, {"max_iter": 0}, {"max_iter": 2.5},
                                 {"normal_equations": 1}])
def test_cg_options_reject_bad_values(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        CGOptions(**bad)


def test_inverse_hvp_matches_dense_inverse():
    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)
    H = _dense_hessian(f, params, x, y)
    b = torch.randn(H.shape[0])
    lam = 0.5  # makes H + λI positive definite
    expected = torch.linalg.solve(H + lam * torch.eye(len(b)), b)
    for chunk in (None, 6):  # one batch, or the chunked dataset HVP
        out = inverse_hvp(f, params, unflatten(b, params), x, y,
                          solver=CGOptions(damping=lam, tol=1e-12, max_iter=500, normal_equations=True), chunk_size=chunk)
        torch.testing.assert_close(flatten(out.value), expected, rtol=1e-6, atol=1e-8)


def test_total_gradient_matches_finite_differences_of_retrained_follower():
    """Bilevel LR: follower = L2-regularised logistic regression on clean ∪ poison points θ,
    leader = validation loss. D_θ ℓ(w*(θ)) vs central differences of the re-solved follower."""
    torch.manual_seed(3)
    d, n, k = 3, 30, 4
    xc, yc = torch.randn(n, d), (torch.rand(n) > 0.5).double()
    xv, yv = torch.randn(25, d), (torch.rand(25) > 0.5).double()
    yp = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lam = 0.1

    def bce(w, x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y)

    def follower(ws, xp):  # f(w, *theta) with theta = (x_p,)
        w = ws[0]
        return (n * bce(w, xc, yc) + k * bce(w, xp, yp)) / (n + k) + 0.5 * lam * (w * w).sum()

    def leader(ws, xp):
        return bce(ws[0], xv, yv)

    def solve(xp):  # Newton's method to machine precision
        w = torch.zeros(d + 1)
        for _ in range(50):
            H = hessian(lambda v: follower((v,), xp), w)
            wg = w.clone().requires_grad_(True)
            g = torch.autograd.grad(follower((wg,), xp), wg)[0]
            w = w - torch.linalg.solve(H, g)
        return w

    xp = torch.randn(k, d)
    w_star = solve(xp)
    dtheta, sol = total_gradient(follower, leader, (w_star,), (xp,), solver=CGOptions(tol=1e-12, max_iter=100))
    assert sol.cg.converged
    direction = torch.randn(k, d)
    h = 1e-5
    fd = (leader((solve(xp + h * direction),), None) - leader((solve(xp - h * direction),), None)) / (2 * h)
    assert (dtheta[0] * direction).sum().item() == pytest.approx(fd.item(), rel=1e-5)


def test_fwdrev_falls_back_only_when_an_op_has_no_forward_rule(monkeypatch, recwarn):
    """hvp(method="fwdrev") falls back to double backward for a missing forward-mode rule (once, with a
    warning) but lets every other error through — a CUDA out-of-memory must not become a silent slow path."""
    import importlib

    H = importlib.import_module("poisonlab.autodiff.hvp")  # the module (the package exports the function)

    w = (torch.randn(3, dtype=torch.float64),)
    v = (torch.randn(3, dtype=torch.float64),)

    def f(ps):
        return (ps[0] ** 3).sum()

    expected = H.hvp(f, w, v, method="double_backward")

    def no_rule(*a, **k):
        raise RuntimeError("Trying to use forward AD with my_op that does not support it")

    monkeypatch.setattr(H, "jvp", no_rule)
    monkeypatch.setattr(H, "_FALLBACK_WARNED", False)
    out = H.hvp(f, w, v, method="fwdrev")
    assert torch.allclose(out[0], expected[0])
    assert any("double backward" in str(r.message) for r in recwarn.list)

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(H, "jvp", oom)
    with pytest.raises(RuntimeError, match="out of memory"):
        H.hvp(f, w, v, method="fwdrev")


# ---------------------------------------------------------------------------- sync-free CG, fallbacks, one graph
def _textbook_cg(A, b, damping, tol, max_iter, x0=None):
    """The per-iteration-checked CG (host reads every iteration), the reference of the masked one."""
    def M(v):  # the operator as conjugate_gradient applies it: A v + λ v
        return A @ v + damping * v

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - M(x)
    p, rs, it = r.clone(), torch.dot(r, r), 0
    thr = tol * max(torch.linalg.vector_norm(b).item(), 1e-30)
    while it < max_iter and rs.sqrt().item() > thr:
        ap = M(p)
        pap = torch.dot(p, ap)
        if pap.item() <= 0:
            break
        alpha = rs / pap
        x, r = x + alpha * p, r - alpha * ap
        rs_new = torch.dot(r, r)
        p, rs, it = r + (rs_new / rs) * p, rs_new, it + 1
    return x, it


@pytest.mark.parametrize("max_iter,tol,check_every", [(7, 1e-30, 1), (7, 1e-30, 3), (200, 1e-9, 5), (200, 1e-9, 1), (40, 1e-4, 4)])
def test_sync_free_cg_equals_the_per_iteration_checked_one(max_iter, tol, check_every):
    torch.manual_seed(5)
    a = torch.randn(25, 25)
    A = a @ a.T
    b, x0 = torch.randn(25), torch.randn(25)
    for start in (None, x0):
        ref, its = _textbook_cg(A, b, 0.05, tol, max_iter, start)
        res = conjugate_gradient(lambda v: A @ v, b, CGOptions(damping=0.05, tol=tol, max_iter=max_iter,
                                                              check_every=check_every), x0=start)
        assert res.iterations == its and not res.negative_curvature and res.finite
        torch.testing.assert_close(res.x, ref, rtol=1e-8, atol=1e-12)


def test_cg_reads_the_host_once_every_check_every_iterations(monkeypatch):
    """A ceiling on host synchronisations: .item(), bool(), float(), int() and .tolist() of tensors,
    counted during a 20-iteration solve that checks every 5 iterations."""
    torch.manual_seed(6)
    a = torch.randn(30, 30)
    A = a @ a.T + torch.eye(30)
    b = torch.randn(30)
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *args, _orig=orig, _name=name):
            calls.append(_name)
            return _orig(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    res = conjugate_gradient(lambda v: A @ v, b, CGOptions(tol=1e-30, max_iter=20, check_every=5))
    monkeypatch.undo()
    assert res.iterations == 20
    assert len(calls) <= 20 // 5 + 1, calls  # 4 checks + 1 read of the summary: 0.25 per iteration


def test_cg_warm_start_reaches_the_same_solution_in_fewer_iterations():
    """Warm-starting from the previous (nearby) system's solution, as TGDA does across rounds: the same
    solution as a cold solve, in fewer iterations."""
    torch.manual_seed(7)
    a = torch.randn(40, 40)
    A = a @ a.T / 40 + 0.1 * torch.eye(40)
    A2 = A + 1e-3 * torch.diag(torch.rand(40))  # the next round's Hessian
    b = torch.randn(40)
    opts = CGOptions(tol=1e-10, max_iter=500, check_every=1)
    prev = conjugate_gradient(lambda v: A @ v, b, opts).x
    cold = conjugate_gradient(lambda v: A2 @ v, b, opts)
    warm = conjugate_gradient(lambda v: A2 @ v, b, opts, x0=prev)
    assert cold.converged and warm.converged and warm.iterations < cold.iterations
    torch.testing.assert_close(warm.x, torch.linalg.solve(A2, b), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(warm.x, cold.x, rtol=1e-8, atol=1e-9)


def _indefinite(seed=2):
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    eig = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.7, -0.5, -1.0, -2.0, -2.5, 0.9])
    return q @ torch.diag(eig) @ q.T, torch.randn(10)


def test_cg_detects_negative_curvature_and_the_safeguarded_solve_falls_back():
    from poisonlab.autodiff import safeguarded_cg

    A, b = _indefinite()
    plain = conjugate_gradient(lambda v: A @ v, b, CGOptions(tol=1e-12, max_iter=500))
    assert plain.negative_curvature and not plain.converged
    res = safeguarded_cg(lambda v: A @ v, b, CGOptions(tol=1e-12, max_iter=500))
    assert res.fallbacks == ("normal_equations",) and res.solver.normal_equations and res.converged
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    pd = torch.eye(10) * 2.0  # a positive definite system is solved once, with no fallback
    ok = safeguarded_cg(lambda v: pd @ v, b, CGOptions(tol=1e-12, max_iter=50))
    assert ok.fallbacks == () and ok.solver == CGOptions(tol=1e-12, max_iter=50)


def test_inverse_hvp_falls_back_only_when_the_solver_options_say_so():
    """``CGOptions.fallback`` picks the safeguarded solve in :func:`inverse_hvp`: on an indefinite
    operator plain CG stops at the negative curvature; with ``fallback`` the solve is redone on the
    normal equations and equals the dense solution."""
    from poisonlab.autodiff import inverse_hvp

    A, b = _indefinite()
    A = A.double()
    w = (torch.zeros(10, dtype=torch.float64),)
    bb = (b.double(),)
    opts = CGOptions(tol=1e-12, max_iter=500)
    plain = inverse_hvp(lambda p: p[0].sum(), w, bb, solver=opts, hvp_fn=lambda v: (A @ v[0],))
    assert plain.cg.negative_curvature and plain.cg.fallbacks == ()
    safe = inverse_hvp(lambda p: p[0].sum(), w, bb, solver=replace(opts, fallback=True), hvp_fn=lambda v: (A @ v[0],))
    assert safe.cg.fallbacks == ("normal_equations",) and safe.cg.solver.fallback
    torch.testing.assert_close(safe.value[0], torch.linalg.solve(A, b.double()), rtol=1e-7, atol=1e-9)


def test_safeguarded_cg_raises_the_damping_when_the_normal_equations_fail_too():
    """A non-finite operator (the normal equations cannot mend it) ends, after the damping raises, as
    the last attempt, unconverged (no step taken: x stays 0); an indefinite singular system stops at
    the normal equations, whose solution is the least-squares one."""
    from poisonlab.autodiff import safeguarded_cg

    b = torch.randn(6)

    def broken(v):
        return torch.full_like(v, float("nan"))

    res = safeguarded_cg(broken, b, CGOptions(damping=0.01, tol=1e-10, max_iter=20), damping_raises=2)
    assert res.fallbacks == ("normal_equations", "damping=0.1", "damping=1") and not res.converged
    assert res.residual_norm != res.residual_norm and torch.equal(res.x, torch.zeros(6))
    S = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])) - 1.0 * torch.eye(6)  # eigenvalues 0 and -2
    res = safeguarded_cg(lambda v: S @ v, b, CGOptions(damping=0.0, tol=1e-12, max_iter=200))
    assert res.fallbacks == ("normal_equations",) and res.finite  # singular: the least-squares solution
    torch.testing.assert_close(res.x, torch.linalg.pinv(S) @ b, rtol=1e-10, atol=1e-12)


def test_gradient_graph_products_match_dense_hessian_and_mixed_vjp():
    from poisonlab.autodiff import GradientGraph

    m, x, y = _tiny_mlp()
    names, params = named_params(m)
    f = functional_loss(m, names)
    H = _dense_hessian(f, params, x, y)
    g = GradientGraph(f, params, x, y, argnums=(0,))
    for seed in (0, 1):  # the graph serves several products
        torch.manual_seed(seed)
        v = torch.randn(H.shape[0])
        torch.testing.assert_close(flatten(g.hvp(unflatten(v, params))), H @ v, rtol=1e-9, atol=1e-11)
        (mx,) = g.mixed(unflatten(v, params))
        torch.testing.assert_close(mx, mixed_vjp(f, params, unflatten(v, params), x, y), rtol=1e-10, atol=1e-12)


def test_total_gradient_on_one_graph_equals_the_recomputed_products():
    """method="double_backward" (one ∇_w f graph for the solve and the mixed product) = "fwdrev"
    (every product recomputed) on the bilevel LR problem, float64."""
    torch.manual_seed(8)
    w = (torch.randn(4),)
    xc, yc = torch.randn(20, 3), (torch.rand(20) > 0.5).double()
    xp, yp = torch.randn(5, 3), (torch.rand(5) > 0.5).double()

    def bce(w, x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y)

    def follower(ws, xp_):
        return (20 * bce(ws[0], xc, yc) + 5 * bce(ws[0], xp_, yp)) / 25

    def leader(ws, xp_):
        return bce(ws[0], xc[:10], 1 - yc[:10])

    opts = CGOptions(damping=0.1, tol=1e-12, max_iter=100)
    a, sa = total_gradient(follower, leader, w, (xp,), solver=opts, method="double_backward")
    b, sb = total_gradient(follower, leader, w, (xp,), solver=opts, method="fwdrev")
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flatten(sa.value), flatten(sb.value), rtol=1e-10, atol=1e-12)
