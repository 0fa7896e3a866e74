"""The same training steps written in PyTorch, as the paper's code and CellOT write them, so
that the Rust engine is timed against PyTorch in one run (``pip install '.[bench]'``).

Nothing here is imported by w1ot itself; the benchmarks skip these peers when torch is not
installed. Each ``*_step`` builds its networks once and returns a function that runs one
training iteration on fresh batches.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

# ------------------------------------------------------------------ W1 potential (the paper)


class CayleyLinear(nn.Module):
    """Orthogonal affine layer h = x Q^T + b, Q = cayley(alpha W / ||W||_F)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-1, 1))
        self.alpha = nn.Parameter(self.weight.norm().detach().clone())

    @staticmethod
    def cayley(m: torch.Tensor) -> torch.Tensor:
        rows, cols = m.shape
        if rows < cols:
            return CayleyLinear.cayley(m.T).T
        u, v = m[:cols], m[cols:]
        eye = torch.eye(cols, dtype=m.dtype)
        z = u - u.T + v.T @ v
        b = torch.linalg.inv(eye + z)
        return torch.cat([b @ (eye - z), -2 * v @ b])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.cayley(self.alpha * self.weight / self.weight.norm())
        return x @ q.T + self.bias


def group_sort(x: torch.Tensor, group_size: int) -> torch.Tensor:
    n, w = x.shape
    return x.view(n, w // group_size, group_size).sort(dim=-1, descending=True)[0].view(n, w)


class Potential(nn.Module):
    def __init__(self, d: int, hidden=(64, 64, 64, 64), group_size: int = 16) -> None:
        super().__init__()
        dims = [d, *hidden, 1]
        self.layers = nn.ModuleList(CayleyLinear(a, b) for a, b in itertools.pairwise(dims))
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = group_sort(layer(x), self.group_size)
        return self.layers[-1](x)


def _batches(n: int, d: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(n, d, generator=g)
    target = torch.randn(n, d, generator=g) + 1.0

    def draw(data):
        return data[torch.randint(0, n, (batch,), generator=g)]

    return source, target, draw


def w1_potential_step(d: int, batch: int = 256, seed: int = 0):
    """One iteration of the paper's potential training (Adam betas (0.5, 0.5), lr 1e-2)."""
    torch.manual_seed(seed)
    pot = Potential(d)
    opt = torch.optim.Adam(pot.parameters(), lr=1e-2, betas=(0.5, 0.5))
    source, target, draw = _batches(4 * batch, d, batch, seed)

    def step() -> float:
        opt.zero_grad()
        loss = -pot(draw(source)).mean() + pot(draw(target)).mean()
        loss.backward()
        opt.step()
        return float(loss)

    return step


# ------------------------------------------------------------------ W1 step size (the GAN)


def _mlp(d: int, out: nn.Module) -> nn.Sequential:
    dims = [d, 64, 64, 64, 64]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers, nn.Linear(64, 1), out)


def w1_gan_step(d: int, batch: int = 256, seed: int = 0):
    """One iteration of the paper's adversarial step-size training: a discriminator step,
    then a step-size step against the updated discriminator (Adam lr 1e-4)."""
    torch.manual_seed(seed)
    eta, disc = _mlp(d, nn.Softplus()), _mlp(d, nn.Sigmoid())
    opt_eta, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-4) for m in (eta, disc))
    source, target, draw = _batches(4 * batch, d, batch, seed)
    dirs = torch.nn.functional.normalize(torch.randn_like(source), dim=1)
    g = torch.Generator().manual_seed(seed + 1)

    def step() -> float:
        idx = torch.randint(0, source.shape[0], (batch,), generator=g)
        x, u, y = source[idx], dirs[idx], draw(target)
        z = x - eta(x) * u
        opt_d.zero_grad()
        ld = -torch.log(disc(y) + 1e-6).mean() - torch.log(1 - disc(z.detach()) + 1e-6).mean()
        ld.backward()
        opt_d.step()
        opt_eta.zero_grad()
        le = -torch.log(disc(x - eta(x) * u) + 1e-6).mean()
        le.backward()
        opt_eta.step()
        return float(le)

    return step


# ------------------------------------------------------------------ W2 (CellOT's ICNN)


class ICNN(nn.Module):
    """CellOT's ICNN: z1 = lrelu(A0 x)^2, z_{k+1} = lrelu(W_k z_k + A_k x), W_K z + A_K x."""

    def __init__(self, d: int, hidden=(64, 64, 64, 64), uniform_init: float | None = 0.1):
        super().__init__()
        self.act = nn.LeakyReLU(0.2)
        self.A = nn.ModuleList(nn.Linear(d, h) for h in [*hidden, 1])
        self.W = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(hidden, [*hidden[1:], 1], strict=False)
        )
        if uniform_init is not None:
            for layer in self.A:
                nn.init.uniform_(layer.weight, 0, uniform_init)
                nn.init.zeros_(layer.bias)
            for layer in self.W:
                nn.init.uniform_(layer.weight, 0, uniform_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.A[0](x)) ** 2
        for w, a in zip(self.W[:-1], self.A[1:-1], strict=False):
            z = self.act(w(z) + a(x))
        return self.W[-1](z) + self.A[-1](x)

    def transport(self, x: torch.Tensor) -> torch.Tensor:
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(self(x).sum(), x, create_graph=True)
        return grad

    def penalize_w(self) -> torch.Tensor:
        return sum(torch.relu(-w.weight).norm() for w in self.W)

    def clamp_w(self) -> None:
        with torch.no_grad():
            for w in self.W:
                w.weight.clamp_(min=0)


def w2_fit(source, target, iters: int, inner_iters: int = 10, batch: int = 256, seed: int = 0):
    """CellOT's training loop (Adam lr 1e-4, betas (0.5, 0.9)); returns g's map as a NumPy
    function. For quality comparisons with W2OT on the same data."""
    step, g = _w2(
        torch.as_tensor(source, dtype=torch.float32),
        torch.as_tensor(target, dtype=torch.float32),
        inner_iters,
        batch,
        seed,
    )
    for _ in range(iters):
        step()

    def transport(x):
        return g.transport(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()

    return transport


def _w2(source, target, inner_iters, batch, seed):
    torch.manual_seed(seed)
    d = source.shape[1]
    f, g = ICNN(d), ICNN(d)
    opt_f = torch.optim.Adam(f.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(seed)

    def draw(data):
        return data[torch.randint(0, data.shape[0], (batch,), generator=gen)].clone()

    def step() -> float:
        y = draw(target)
        for _ in range(inner_iters):
            x = draw(source)
            opt_g.zero_grad()
            t = g.transport(x)
            gl = (f(t) - (x * t).sum(-1, keepdim=True)).mean() + g.penalize_w()
            gl.backward()
            opt_g.step()
        x = draw(source)
        opt_f.zero_grad()
        # As CellOT: the map is recomputed with its graph, and g's gradients are discarded.
        fl = (-f(g.transport(x)) + f(y)).mean()
        fl.backward()
        opt_f.step()
        f.clamp_w()
        return float(gl)

    return step, g


def w2_outer_step(d: int, batch: int = 256, seed: int = 0, inner_iters: int = 10):
    """One outer iteration of CellOT's W2 training: 10 g steps with double backprop, then
    one f step and the clamp."""
    source, target, _ = _batches(4 * batch, d, batch, seed)
    step, _ = _w2(source, target, inner_iters, batch, seed)
    return step


# ------------------------------------------------------------------ the latent mode's autoencoder


def autoencoder_step(d: int, batch: int = 256, seed: int = 0, hidden=(512, 512), latent=50):
    """One training iteration of the autoencoder CellOT and scGen train (w1ot.Autoencoder's
    configuration): ReLU MLPs, a linear latent layer, a ReLU output, MSE, Adam lr 1e-3 with
    weight decay 1e-5."""
    torch.manual_seed(seed)

    def mlp(dims, last: nn.Module | None) -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.pop()  # the last layer: linear (encoder) or ReLU (decoder)
        return nn.Sequential(*layers, *([last] if last is not None else []))

    dims = [d, *hidden, latent]
    model = nn.Sequential(mlp(dims, None), mlp(dims[::-1], nn.ReLU()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(seed)
    cells = torch.rand(4 * batch, d, generator=g)  # non-negative, like expression

    def step() -> float:
        x = cells[torch.randint(0, cells.shape[0], (batch,), generator=g)]
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        return float(loss)

    return step


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


__all__ = [
    "autoencoder_step",
    "set_threads",
    "w1_gan_step",
    "w1_potential_step",
    "w2_fit",
    "w2_outer_step",
]
