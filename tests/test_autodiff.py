"""Second-order engine checked against dense Hessians and finite differences in float64."""

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
