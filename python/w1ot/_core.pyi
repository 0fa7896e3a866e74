"""Type stubs for ``w1ot._core``, the PyO3 binding of the Rust core (crate ``w1ot-core``).

Conventions shared by every function and class here:

* Computation is float32. Array inputs may be anything ``numpy.asarray`` reads as a real
  numeric array (any float or integer dtype, any memory order, nested lists); they are
  converted once to C-contiguous float32 when needed, and never modified. Outputs are fresh
  C-contiguous float32 (``uint32`` for permutations) arrays.
* A matrix input ``x`` is 2-D ``(n_cells, n_features)`` with n, d >= 1; a vector is 1-D.
  Inputs must be finite (values beyond the float32 range count as infinite).
* Invalid arguments raise ``ValueError`` (bad shape, size, range, NaN / inf, unknown name)
  or ``TypeError`` (non-numeric data, wrong Python type), naming the argument in the message
  (PyO3's own conversion errors carry it in a ``while processing '<arg>'`` note).
* Long computations release the GIL, so other Python threads keep running.
* Sizes are capped: a network or optimiser may have at most ``2**31`` parameters, and at most
  1000 Björck iterations may be requested.

Classes are written with ``__new__`` (PyO3 constructs them there) and defaults that PyO3
shows as ``...`` are ``...`` here too, so that ``python -m mypy.stubtest w1ot._core`` passes. Sections: errors, networks, optimiser, primitives. New classes (e.g. the solvers) go in their
own section below, reusing the private type aliases at the top; tests/test_core_binding.py
checks that every name, method and signature here matches the compiled module.
"""

from collections.abc import Callable, Sequence
from typing import Literal, final

import numpy as np
from numpy.typing import ArrayLike, NDArray

# --------------------------------------------------------------------------- type aliases

#: A float32 array returned by the core (1-D vector or 2-D matrix, by context).
_Float32Array = NDArray[np.float32]
#: Per-entry source columns from :func:`group_sort`.
_UInt32Array = NDArray[np.uint32]
#: Orthonormalisation of the potential's layers.
_Orthogonal = Literal["cayley", "bjorck"]
#: Element-wise activations of :class:`MLP` (``"linear"`` is an alias of ``"identity"``).
_Activation = Literal["identity", "linear", "relu", "leaky_relu", "softplus", "sigmoid"]

__version__: str
"""Version of the Rust binding crate."""

# --------------------------------------------------------------------------------- errors

class TrainingError(RuntimeError):
    """Training stopped because a loss or parameter became NaN or infinite."""

# ------------------------------------------------------------------------------- networks

@final
class Potential:
    """The 1-Lipschitz Kantorovich potential f: R^d -> R (float32).

    Orthogonal affine layers ``in_dim -> hidden[0] -> ... -> hidden[-1] -> 1``, each followed
    by GroupSort (descending sort within contiguous groups of ``group_size``) except the last.
    A layer with raw weight W (out x in), bias b computes ``h = x Q^T + b`` with Q orthonormal:
    columns when out >= in, rows when out < in (wide layers, e.g. d > 64 -> 64, and the
    final 64 -> 1 row of unit norm). Q is ``cayley(alpha W / ||W||_F)`` with a trainable
    scalar alpha (initialised to ``||W||_F``), or Björck orthonormalisation of W
    (``bjorck_iters`` steps in training, iterated to convergence in inference).
    Hence ``|f(x) - f(y)| <= ||x - y||`` and ``||grad f(x)|| <= 1``.

    Parameters are one flat float32 vector: per layer ``[W (out x in, row-major), b (out)]``
    followed, for Cayley, by alpha. Initialisation: W ~ U(+-1/sqrt(in)), b ~ U(-1, 1),
    deterministic given ``seed``.
    """

    def __new__(
        cls,
        in_dim: int,
        hidden: Sequence[int] = ...,  # [64, 64, 64, 64]
        *,
        group_size: int = 16,
        orthogonal: _Orthogonal = "cayley",
        bjorck_iters: int = 20,
        seed: int = 0,
    ) -> Potential:
        """``hidden`` defaults to ``[64, 64, 64, 64]``. ``in_dim`` >= 1; every hidden width
        >= 1 and divisible by ``group_size`` (2 is MaxMin, the width a full sort);
        ``bjorck_iters`` in [1, 1000], used only by ``orthogonal="bjorck"``; ``seed`` in
        [0, 2**63)."""
    @property
    def in_dim(self) -> int:
        """Input dimension d."""
    @property
    def hidden(self) -> list[int]:
        """Hidden layer widths."""
    @property
    def group_size(self) -> int:
        """GroupSort group size."""
    @property
    def orthogonal(self) -> _Orthogonal:
        """Orthonormalisation in use."""
    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
    @property
    def params(self) -> _Float32Array:
        """A copy of the flat parameter vector, shape ``(n_params,)``."""
    def set_params(self, params: ArrayLike) -> None:
        """Replaces the parameters with a finite vector of length ``n_params`` (copied)."""
    def value(self, x: ArrayLike) -> _Float32Array:
        """f(x) for every row of ``x`` (n, in_dim), inference weights; shape (n,)."""
    def gradient(self, x: ArrayLike) -> _Float32Array:
        """grad_x f(x) for every row of ``x`` (n, in_dim), inference weights; shape (n, in_dim)."""
    def value_and_grad(
        self, x: ArrayLike, df: ArrayLike
    ) -> tuple[_Float32Array, _Float32Array, _Float32Array]:
        """Forward and backward pass with training-mode weights for the loss
        ``L = sum_i df[i] * f(x[i])``: returns ``(f(x) (n,), dL/dparams (n_params,),
        dL/dx (n, in_dim))``. ``df`` has one entry per row of ``x``."""
    def weights(self) -> list[_Float32Array]:
        """The orthonormal matrix Q (out x in) of every layer, inference mode."""

@final
class MLP:
    """A plain multilayer perceptron ``dims[0] -> ... -> dims[-1]`` (float32): dense layers
    ``y = x W^T + b`` with ``hidden_activation`` between them and ``output_activation`` at the
    end (softplus for the step size eta, sigmoid for the discriminator).

    Parameters are one flat vector, per layer ``[W (out x in, row-major), b (out)]``,
    initialised as PyTorch does: U(+-1/sqrt(fan_in)), deterministic given ``seed``.
    """

    def __new__(
        cls,
        dims: Sequence[int],
        *,
        hidden_activation: _Activation = "leaky_relu",
        negative_slope: float = 0.01,
        output_activation: _Activation = "identity",
        seed: int = 0,
    ) -> MLP:
        """``dims``: at least two widths, each >= 1. ``negative_slope`` in [0, 1) is the
        LeakyReLU slope for x < 0 (for either activation); ``seed`` in [0, 2**63)."""
    @property
    def dims(self) -> list[int]:
        """Layer widths, input first."""
    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
    @property
    def params(self) -> _Float32Array:
        """A copy of the flat parameter vector, shape ``(n_params,)``."""
    def set_params(self, params: ArrayLike) -> None:
        """Replaces the parameters with a finite vector of length ``n_params`` (copied)."""
    def predict(self, x: ArrayLike) -> _Float32Array:
        """The network's output for every row of ``x`` (n, dims[0]); shape (n, dims[-1])."""
    def value_and_grad(
        self, x: ArrayLike, dy: ArrayLike
    ) -> tuple[_Float32Array, _Float32Array, _Float32Array]:
        """Forward and backward pass for ``L = sum(dy * mlp(x))``: returns ``(mlp(x)
        (n, dims[-1]), dL/dparams (n_params,), dL/dx (n, dims[0]))``. ``dy`` has the output's
        shape."""

# ------------------------------------------------------------------------------ optimiser

@final
class Adam:
    """Adam over one flat float32 parameter vector, with PyTorch's semantics (L2 weight decay
    added to the gradient, bias-corrected moments)::

        g = grads + weight_decay * p
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __new__(
        cls,
        n_params: int,
        *,
        betas: tuple[float, float] = ...,  # (0.9, 0.999)
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> Adam:
        """``betas`` defaults to ``(0.9, 0.999)``, each in [0, 1); ``n_params`` in [1, 2**31];
        ``eps`` > 0; ``weight_decay`` >= 0."""
    @property
    def steps(self) -> int:
        """Number of steps taken (t)."""
    def step(self, params: NDArray[np.float32], grads: ArrayLike, lr: float) -> None:
        """One update of ``params`` in place. ``params`` must be a writable, C-contiguous 1-D
        float32 NumPy array of length ``n_params`` (anything else is a TypeError, as a copy
        would not be updated) and must not share memory with ``grads``; ``lr`` >= 0."""

def cosine_lr(step: int, total: int, lr_max: float, lr_min: float) -> float:
    """Cosine-annealed learning rate ``lr_min + (lr_max - lr_min) (1 + cos(pi k / K)) / 2``
    with k = min(step, total), K = total (PyTorch's CosineAnnealingLR); ``lr_max`` when
    total = 0. Requires step, total >= 0 and 0 <= lr_min <= lr_max, lr_max > 0."""

# ----------------------------------------------------------------------------- primitives

def group_sort(x: ArrayLike, group_size: int) -> tuple[_Float32Array, _UInt32Array]:
    """GroupSort of each row of ``x`` (n, w): every contiguous group of ``group_size`` entries
    (which must divide w) sorted in descending order, ties kept in input order. Returns
    ``(y, perm)``, both (n, w), with ``y[i, j] = x[i, perm[i, j]]``."""

def group_sort_backward(dy: ArrayLike, perm: ArrayLike) -> _Float32Array:
    """Back through GroupSort (the inverse permutation): ``dx[i, perm[i, j]] = dy[i, j]``.
    ``perm`` (any integer array or nested lists, shape of ``dy``) must hold a permutation of
    0..w-1 in each row, as returned by :func:`group_sort`."""

def cayley(m: ArrayLike) -> _Float32Array:
    """The reference Cayley transform of a tall or square ``m`` (r x c): with U the first c
    rows and V the rest, ``Z = U - U^T + V^T V``, ``B = (I + Z)^-1``,
    ``Q = [B (I - Z); -2 V B]`` (orthonormal columns). A wide ``m`` is transformed through its
    transpose (orthonormal rows). Raises FloatingPointError if I + Z cannot be inverted in
    float32 (entries too large)."""

def bjorck(m: ArrayLike, iters: int | None = None) -> _Float32Array:
    """Björck orthonormalisation of ``m``: ``w = m / ||m||_F``, then ``iters`` steps of
    ``w <- w (1.5 I - 0.5 w^T w)`` (0 <= iters <= 1000), or, when None, steps until
    ``max |w^T w - I| <= 1e-6`` (at most 200). Every iterate has spectral norm <= 1. A wide
    ``m`` is processed through its transpose (orthonormal rows)."""

# -------------------------------------------------------------------------------- solvers

@final
class W1Core:
    """The W1 solver's state: potential f, step size eta and discriminator D (float32).

    ``fit_potential`` trains f; ``fit_step`` trains eta with f frozen, so that
    ``T(x) = x - eta(x) u(x)``, ``u = grad f / (||grad f|| + 1e-6)``. Each fit releases the
    GIL, calls ``callback(stage, iteration, total, loss, valid)`` every few iterations
    (returning ``False`` stops with KeyboardInterrupt, as Ctrl-C does) and leaves the state
    unchanged on any error. :class:`w1ot.W1OT` is the user-facing model built on this.
    """

    def __new__(
        cls,
        dim: int,
        *,
        hidden: Sequence[int] = ...,
        group_size: int = 16,
        orthogonal: _Orthogonal = "cayley",
        bjorck_iters: int = 20,
        step_hidden: Sequence[int] = ...,
        negative_slope: float = 0.01,
        seed: int = 0,
    ) -> W1Core: ...
    @property
    def dim(self) -> int:
        """Number of features."""
    def fit_potential(
        self,
        source: ArrayLike,
        target: ArrayLike,
        valid_source: ArrayLike | None = None,
        valid_target: ArrayLike | None = None,
        *,
        iters: int = 10000,
        batch_size: int = 256,
        lr: float = 0.01,
        lr_min: float = 0.0001,
        betas: tuple[float, float] = ...,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        eval_every: int = 100,
        patience: int | None = None,
        min_rel_improvement: float = 0.001,
        n_threads: int = 0,
        callback: Callable[[str, int, int, float, float | None], bool | None] | None = None,
    ) -> dict[str, NDArray[np.float32] | NDArray[np.int64] | int]:
        """Maximises mean f(source) - mean f(target); returns the history: ``loss`` per
        iteration, ``w1_valid`` (held-out dual estimate) at ``eval_iters``, ``best_iter``."""
    def fit_step(
        self,
        source: ArrayLike,
        target: ArrayLike,
        valid_source: ArrayLike | None = None,
        valid_target: ArrayLike | None = None,
        *,
        iters: int = 10000,
        batch_size: int = 256,
        lr: float = 0.0001,
        disc_lr: float = 0.0001,
        betas: tuple[float, float] = ...,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        positive: bool = False,
        eval_every: int = 100,
        patience: int | None = None,
        min_rel_improvement: float = 0.01,
        loss: Literal["gan", "energy", "mmd"] = "gan",
        label_smoothing: float = 0.0,
        instance_noise: float = 0.0,
        mean_shift_penalty: float = 0.0,
        mmd_gammas: Sequence[float] | None = None,
        lr_final_fraction: float = 1.0,
        n_threads: int = 0,
        callback: Callable[[str, int, int, float, float | None], bool | None] | None = None,
        reinit: bool = True,
    ) -> dict[str, NDArray[np.float32] | NDArray[np.int64] | int]:
        """Trains the step size with f frozen; returns the history (``disc_loss``,
        ``step_loss`` per iteration; held-out ``d_real_valid``, ``d_fake_valid``, eta
        quantiles, ``energy_valid`` at ``eval_iters``; ``best_iter``)."""
    def potential(self, x: ArrayLike) -> _Float32Array:
        """f(x) per row."""
    def gradient(self, x: ArrayLike) -> _Float32Array:
        """grad f(x) per row."""
    def direction(self, x: ArrayLike) -> _Float32Array:
        """u(x) = grad f / (||grad f|| + 1e-6) per row."""
    def step_size(self, x: ArrayLike) -> _Float32Array:
        """eta(x) >= 0 per row."""
    def discriminator(self, x: ArrayLike) -> _Float32Array:
        """D(x) in [0, 1] per row (the step stage's discriminator; a diagnostic)."""
    def transport(self, x: ArrayLike, positive: bool = False) -> _Float32Array:
        """T(x) per row, clipped at 0 when ``positive``."""
    def get_state(self) -> dict[str, _Float32Array]:
        """Flat parameters: ``potential``, ``step``, ``discriminator``."""
    def set_state(self, state: dict[str, ArrayLike]) -> None:
        """Restores parameters from :meth:`get_state` (lengths must match)."""

@final
class W2Core:
    """The W2 baseline's state: input-convex potentials f and g (float32), the map
    ``T(x) = grad_x g(x)``. ``fit`` runs CellOT's min-max training; it releases the GIL,
    calls ``callback(stage, iteration, total, loss, valid)`` every few outer iterations
    (returning ``False`` stops with KeyboardInterrupt, as Ctrl-C does) and leaves the state
    unchanged on any error. Batches are split into fixed-size blocks, so the result does not
    depend on ``n_threads``. :class:`w1ot.W2OT` is the user-facing model built on this.
    """

    def __new__(
        cls,
        dim: int,
        *,
        hidden: Sequence[int] = ...,
        negative_slope: float = 0.2,
        init: Literal["uniform", "torch"] = "uniform",
        init_scale: float = 0.1,
        seed: int = 0,
    ) -> W2Core: ...
    @property
    def dim(self) -> int:
        """Number of features."""
    def fit(
        self,
        source: ArrayLike,
        target: ArrayLike,
        valid_source: ArrayLike | None = None,
        valid_target: ArrayLike | None = None,
        *,
        iters: int = 100000,
        inner_iters: int = 10,
        batch_size: int = 256,
        lr: float = 0.0001,
        betas: tuple[float, float] = ...,
        eps: float = 1e-08,
        penalty: float = 1.0,
        eval_every: int = 250,
        select_best: bool = True,
        patience: int | None = None,
        min_rel_improvement: float = 0.01,
        mmd_gammas: Sequence[float] | None = None,
        n_threads: int = 0,
        callback: Callable[[str, int, int, float, float | None], bool | None] | None = None,
    ) -> dict[str, NDArray[np.float32] | NDArray[np.int64] | int]:
        """Trains f and g; returns the history: ``g_loss``, ``f_loss`` per outer iteration,
        held-out ``w2_valid`` (W2^2 / 2) and ``mmd_valid`` at ``eval_iters``, ``best_iter``
        (the parameters kept: the lowest held-out MMD when ``select_best``)."""
    def transport(self, x: ArrayLike) -> _Float32Array:
        """T(x) = grad g(x) per row."""
    def potential_f(self, x: ArrayLike) -> _Float32Array:
        """f(x) per row."""
    def potential_g(self, x: ArrayLike) -> _Float32Array:
        """g(x) per row."""
    def w2_distance(self, source: ArrayLike, target: ArrayLike) -> float:
        """The estimate of W2^2 / 2 (CellOT's convention) on the given cells."""
    def get_state(self) -> dict[str, _Float32Array]:
        """Flat parameters: ``f``, ``g``."""
    def set_state(self, state: dict[str, ArrayLike]) -> None:
        """Restores parameters from :meth:`get_state` (lengths must match)."""

@final
class AutoencoderCore:
    """The latent mode's autoencoder (float32): encoder MLP ``dim -> hidden... -> latent``
    (ReLU, linear latent) and the mirror-image decoder with a ReLU output. ``fit`` minimises
    the mean squared reconstruction error by Adam; it releases the GIL, calls
    ``callback(stage, iteration, total, loss, valid)`` every few iterations (returning
    ``False`` stops with KeyboardInterrupt, as Ctrl-C does) and leaves the state unchanged on
    any error. The result does not depend on ``n_threads``. :class:`w1ot.Autoencoder` is the
    user-facing model built on this.
    """

    def __new__(
        cls, dim: int, *, hidden: Sequence[int] = ..., latent: int = 50, seed: int = 0
    ) -> AutoencoderCore: ...
    @property
    def dim(self) -> int:
        """Number of features."""
    @property
    def latent(self) -> int:
        """Latent dimensions."""
    @property
    def hidden(self) -> list[int]:
        """The encoder's hidden widths (the decoder mirrors them)."""
    @property
    def n_params(self) -> int:
        """Parameters of encoder and decoder."""
    def fit(
        self,
        cells: ArrayLike,
        valid: ArrayLike | None = None,
        *,
        iters: int = 20000,
        batch_size: int = 256,
        lr: float = 0.001,
        betas: tuple[float, float] = ...,
        eps: float = 1e-08,
        weight_decay: float = 1e-05,
        eval_every: int = 250,
        patience: int | None = ...,
        min_rel_improvement: float = 0.001,
        n_threads: int = 0,
        callback: Callable[[str, int, int, float, float | None], bool | None] | None = None,
    ) -> dict[str, NDArray[np.float32] | NDArray[np.int64] | int]:
        """Trains; returns the history: ``loss`` per iteration, held-out ``valid_loss`` at
        ``eval_iters`` and ``best_iter`` (the parameters kept: the lowest held-out error)."""
    def encode(self, x: ArrayLike) -> _Float32Array:
        """Latent codes per row."""
    def decode(self, z: ArrayLike) -> _Float32Array:
        """Decoded cells per latent row."""
    def reconstruction_error(self, x: ArrayLike) -> float:
        """Mean squared reconstruction error over every entry."""
    def get_state(self) -> dict[str, _Float32Array]:
        """Flat parameters: ``encoder``, ``decoder``."""
    def set_state(self, state: dict[str, ArrayLike]) -> None:
        """Restores parameters from :meth:`get_state` (lengths must match)."""

def autoencoder_iteration_flops(
    dim: int, *, hidden: Sequence[int] = ..., latent: int = 50, batch_size: int = 256
) -> int:
    """Floating-point operations of one autoencoder training iteration (2 per multiply-add)."""

def iteration_flops(
    stage: Literal["w1_potential", "w1_step_gan", "w1_step_energy", "w2"],
    dim: int,
    *,
    hidden: Sequence[int] = ...,
    batch_size: int = 256,
    inner_iters: int = 10,
) -> int:
    """Floating-point operations of one training iteration of a solver stage as the core
    implements it (2 per multiply-add of the matrix products, which dominate); ``"w2"`` is
    one outer iteration of ``inner_iters`` g steps and one f step. For the timing suite."""
