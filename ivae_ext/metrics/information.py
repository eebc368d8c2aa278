r"""Mutual information I(x; z) and total correlation TC(z) of an encoder, over a whole data set.

Both are plug-in estimates built on the empirical aggregate posterior of the N given points,

    q̂(z) = (1/N) Σ_j q(z | x_j),        q̂_k(z_k) = (1/N) Σ_j q(z_k | x_j)   (its marginals),

evaluated by ``ivae_ext.ops.aggregate_log_q`` over ALL N components (not over a minibatch) at
draws z_i ~ q(z | x_i), processed by chunks of rows of z so that memory stays
O(N·d + chunk_size·d) (plus the N·samples per-draw terms, one float64 each): no [chunk, N] or
[N, N] tensor is ever built. The cost is O(samples·N²·d) density evaluations; the marginals,
needed by the TC only, cost about twice as much again. Measured on two CPU cores, float64,
d = 2, samples = 1: N = 20 000 points take 1–2 s for the MI and 2.5–5 s for the TC (the range
is the load of the machine); the time grows as N².

The posteriors are factorized Gaussian or Laplace, given by location and log-scale (log σ or
log b, the parameterisation of ``expfam_kl`` and ``aggregate_log_q``), or by a model whose
``encode`` returns them (``VAE``, ``IVAE`` with ``posterior_cov="diag"``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from torch import nn

from ivae_ext.ops import aggregate_log_q
from ivae_ext.reference import FAMILIES, component_log_density

__all__ = ["MIEstimate", "TCEstimate", "mutual_information", "total_correlation"]


@dataclass(frozen=True)
class MIEstimate:
    """Estimate of I(x; z) in nats, with its parts; ``float(est)`` is ``est.value``.

    value = log_q_z_given_x − log_q_z. stderr is the Monte-Carlo standard error of value over the
    n·samples draws of z, *given* the N posteriors (the draws are independent given them); it
    does not include the sampling error of the data set or the estimator's bias (see
    ``mutual_information``). upper_bound = log n: no estimate exceeds it (up to rounding), and one
    within a few tenths of a nat of it is saturated: it says I(x; z) ≳ log n, not what I(x; z) is.
    (A dataclass rather than a float because these two numbers say whether to trust the value.)
    """

    value: float
    log_q_z_given_x: float  # mean over draws of log q(z_i | x_i)
    log_q_z: float  # mean over draws of log q̂(z_i), the empirical aggregate posterior
    stderr: float
    n: int
    samples: int
    upper_bound: float

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class TCEstimate:
    """Estimate of TC(z) = KL(q(z) ‖ Π_k q(z_k)) in nats, with its parts; ``float(est)`` is ``est.value``.

    value = log_q_z − log_q_z_marginals. stderr as in ``MIEstimate`` (Monte-Carlo error given the
    posteriors only). upper_bound = (d − 1)·log n: no estimate exceeds it (up to rounding); near
    it, the value measures the number of points, not the dependence between the latents.
    """

    value: float
    log_q_z: float  # mean over draws of log q̂(z_i)
    log_q_z_marginals: float  # mean over draws of Σ_k log q̂_k(z_ik)
    stderr: float
    n: int
    samples: int
    upper_bound: float

    def __float__(self) -> float:
        return self.value


def mutual_information(
    posteriors,
    x=None,
    *,
    u: torch.Tensor | None = None,
    family: str | None = None,
    samples: int = 1,
    chunk_size: int = 4096,
    generator: torch.Generator | None = None,
) -> MIEstimate:
    r"""I(x; z) of the encoder q(z|x) over the whole given set of N points (not per minibatch).

    Estimator: draw z_i ~ q(z | x_i) (``samples`` draws per point) and average

        Î = mean_i [ log q(z_i | x_i) − log q̂(z_i) ],   q̂(z) = (1/N) Σ_{j=1..N} q(z | x_j),

    with log q̂ from ``aggregate_log_q`` over all N components, by chunks of ``chunk_size`` rows
    of z. This is He et al.'s (2019, "Lagging inference networks") estimator
    E_x[−H(q(z|x))] − E log q(z) with the mixture taken over the whole set instead of one
    minibatch. One change from their code: log q(z_i | x_i) is evaluated at the drawn z_i rather
    than replaced by the analytic −H(q(z | x_i)); both have the same expectation, and pairing the
    two log-densities at the same point makes the estimate exactly 0 (not 0 ± noise) for a
    posterior that ignores x.

    What it estimates, and its bias. Given the N points, Î is an unbiased Monte-Carlo estimate
    (standard error ``stderr``) of I(j; z) for j uniform on {1..N} and z ~ q(z | x_j): the MI of
    the finite mixture, which is at most H(j) = log N. As an estimate of the population
    I(x; z), with x_1..N drawn from the data distribution, it is the InfoNCE bound with the
    encoder's own density as critic (Poole et al. 2019): E[Î] ≤ I(x; z) and Î ≤ log N. It is
    biased low, by ≈ (E_{q(x,z)}[q(z|x)/q(z)] − 1)/(2N) to first order in 1/N (the own term
    j = i inflates q̂(z_i)); the bias vanishes as N grows (consistent), is negligible when N ≫ the
    number of distinguishable posteriors (≳ e^{I(x;z)}), and the estimate saturates at log N
    when posteriors overlap little relative to N (each z_i then singles out its x_i).
    The per-minibatch version (the mixture over the M points of a batch, as in He et al.'s code
    and the minibatch use of ``aggregate_log_q``) is the same estimator with N = M: it saturates
    at log M (≈ 4.8 nats for M = 128) and averages batch estimates each biased low by
    O(1/M), which is why this function uses the whole set.

    Args:
        posteriors: either a pair ``(q_loc, q_log_scale)`` of [N, d] tensors (log-scale = log σ
            for Gaussian, log b for Laplace; from a log-variance pass ``0.5 * log_var``), or a
            model with ``encode(x[, u]) -> (loc, log_scale)`` (``ivae_ext.models.VAE``, ``IVAE``),
            which is then run on x by chunks, under ``torch.no_grad``, in its current mode.
            Models with ``posterior_cov="full"`` are refused: their posterior is not factorized
            and ``encode`` returns only its marginal scales.
        x: the data [N, D] when ``posteriors`` is a model (None for a pair), or a batch dict with
            "x" and, for a conditional model, "u".
        u: the auxiliary variable [N, ...] of a conditional model (``IVAE.encode(x, u)``), if
            not in the batch dict.
        family: "gaussian" or "laplace". None: the model's ``posterior_family`` (Gaussian if it
            has none), or "gaussian" for a pair. Contradicting the model's family is an error.
        samples: draws of z per point (≥ 1); more lowers ``stderr``, not the bias.
        chunk_size: rows of z (and of x for the encoder) per step (≥ 1); the result does not
            depend on it beyond rounding.
        generator: ``torch.Generator`` (on the posteriors' device) for the draws; None uses
            torch's global RNG. The draws do not depend on ``chunk_size`` or on the dtype.

    Returns:
        ``MIEstimate`` (``float(est)`` gives the estimate in nats).
    """
    return _estimate("mutual_information", posteriors, x, u, family, samples, chunk_size, generator, tc=False)


def total_correlation(
    posteriors,
    x=None,
    *,
    u: torch.Tensor | None = None,
    family: str | None = None,
    samples: int = 1,
    chunk_size: int = 4096,
    generator: torch.Generator | None = None,
) -> TCEstimate:
    r"""TC(z) = KL(q(z) ‖ Π_k q(z_k)) of the aggregate posterior over the whole given set.

    Estimator: draw z_i ~ q(z | x_i) and average

        TĈ = mean_i [ log q̂(z_i) − Σ_k log q̂_k(z_ik) ],

    q̂ and its marginals q̂_k = (1/N) Σ_j q(z_k | x_j) from one ``aggregate_log_q`` call per chunk
    (``with_marginals=True``) over all N components. This is β-TCVAE's (Chen et al. 2018)
    estimator with the mixture over the whole set instead of a minibatch (where it needs the
    minibatch-weighted or stratified corrections).

    What it estimates, and its bias. Given the N points, TĈ is an unbiased Monte-Carlo estimate
    (``stderr``) of the TC of the finite mixture q̂, which is at most (d − 1)·log N. As an
    estimate of the TC of the population aggregate posterior it is consistent (the bias
    vanishes as N grows) but biased, typically upwards: the own term j = i inflates log q̂(z_i),
    on average by exactly the MI estimator's shortfall I(x; z) − E[Î] (see
    ``mutual_information``), and each 1-D marginal by less, since 1-D mixtures overlap more.
    So TĈ is accurate when the MI estimate is (roughly N ≫ e^{I(x;z)}); when the posteriors
    are narrow relative to the spacing of the N points it is dominated by this bias and
    saturates at (d − 1)·log N, even for independent latents. The minibatch version saturates
    at (d − 1)·log M in the same way.

    Args, returns: as ``mutual_information`` (a ``TCEstimate``).
    """
    return _estimate("total_correlation", posteriors, x, u, family, samples, chunk_size, generator, tc=True)


# --- implementation ---------------------------------------------------------------------------


def _estimate(fname, posteriors, x, u, family, samples, chunk_size, generator, *, tc: bool):
    _check_int(fname, "samples", samples)
    _check_int(fname, "chunk_size", chunk_size)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{fname}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.no_grad():
        q_loc, q_log_scale, family = posterior_parameters(fname, posteriors, x, u, family, chunk_size)
        if generator is not None and generator.device != q_loc.device:
            raise ValueError(
                f"{fname}: generator must be on the posteriors' device {q_loc.device}, got {generator.device}"
            )
        n, d = q_loc.shape
        scale = torch.exp(q_log_scale)
        first, second = [], []  # per-draw terms, float64: MI: log q(z|x), log q̂(z); TC: log q̂(z), Σ_k log q̂_k
        for _ in range(samples):
            # one [N, d] draw per sample, taken before chunking: chunk_size does not change the draws
            z = q_loc + scale * _standard_noise(q_loc, family, generator)
            for start in range(0, n, chunk_size):
                zc = z[start:start + chunk_size]
                log_qz, log_qz_marginals = aggregate_log_q(zc, q_loc, q_log_scale, family, with_marginals=tc)
                if tc:
                    first.append(log_qz.double())
                    second.append(log_qz_marginals.double().sum(-1))
                else:
                    own = component_log_density(
                        zc, q_loc[start:start + chunk_size], q_log_scale[start:start + chunk_size], family
                    )
                    first.append(own.double().sum(-1))
                    second.append(log_qz.double())
        first, second = torch.cat(first), torch.cat(second)
        terms = first - second
        count = terms.numel()
        value = float(terms.mean())
        stderr = float(terms.std() / math.sqrt(count)) if count > 1 else float("nan")
        first_mean, second_mean = float(first.mean()), float(second.mean())
    if tc:
        return TCEstimate(value, first_mean, second_mean, stderr, n, samples, (d - 1) * math.log(n))
    return MIEstimate(value, first_mean, second_mean, stderr, n, samples, math.log(n))


def _standard_noise(like: torch.Tensor, family: str, generator) -> torch.Tensor:
    """Standard Gaussian, or standard Laplace as the difference of two Exp(1) draws (finite always).

    Drawn in float64 whatever like's dtype, so that a seed gives the same draws in float32 and float64.
    """
    shape, device = like.shape, like.device
    if family == "gaussian":
        eps = torch.randn(shape, dtype=torch.float64, device=device, generator=generator)
    else:
        e1 = torch.empty(shape, dtype=torch.float64, device=device).exponential_(generator=generator)
        e2 = torch.empty(shape, dtype=torch.float64, device=device).exponential_(generator=generator)
        eps = e1 - e2
    return eps.to(like.dtype)


def _check_int(fname, name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fname}: {name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{fname}: {name} must be >= 1, got {value}")


def _check_family(fname, family):
    if family not in FAMILIES:
        raise ValueError(f"{fname}: family must be one of {FAMILIES} (or None), got {family!r}")


def posterior_parameters(fname, posteriors, x, u, family, chunk_size):
    """(q_loc, q_log_scale, family) from a pair or a model (encoded by chunks, under the caller's
    grad mode), checked; shared by the metrics that take either. `fname` names the caller in errors."""
    if family is not None:
        _check_family(fname, family)
    if isinstance(posteriors, (tuple, list)):
        if len(posteriors) != 2:
            raise ValueError(
                f"{fname}: posteriors must be a pair (q_loc, q_log_scale) or a model, got a sequence of length "
                f"{len(posteriors)}"
            )
        if x is not None or u is not None:
            raise ValueError(
                f"{fname}: x and u are for a model; with a (q_loc, q_log_scale) pair the posteriors are given"
            )
        q_loc, q_log_scale = posteriors
        names = ("q_loc (posteriors[0])", "q_log_scale (posteriors[1])")
        family = "gaussian" if family is None else family
    elif isinstance(posteriors, nn.Module) and callable(getattr(posteriors, "encode", None)):
        family = _model_family(fname, posteriors, family)
        q_loc, q_log_scale = _encode(fname, posteriors, x, u, chunk_size)
        names = ("the model's encoded loc", "the model's encoded log-scale")
    else:
        raise TypeError(
            f"{fname}: posteriors must be a pair (q_loc, q_log_scale) of [N, d] tensors or a model with an "
            f"encode method, got {type(posteriors).__name__}"
        )
    _check_posteriors(fname, q_loc, q_log_scale, names)
    return q_loc, q_log_scale, family


def _model_family(fname, model, family):
    kind = type(model).__name__
    if getattr(model, "posterior_cov", "diag") != "diag":
        raise ValueError(
            f"{fname}: {kind} has posterior_cov={model.posterior_cov!r}; these estimators need a factorized "
            "posterior (encode() returns only the marginal scales of a full-covariance one, and "
            "aggregate_log_q is a mixture of factorized components)"
        )
    model_family = getattr(model, "posterior_family", "gaussian")
    if family is not None and family != model_family:
        raise ValueError(f"{fname}: family={family!r} contradicts the model's posterior family {model_family!r}")
    _check_family(fname, model_family)
    return model_family


def _encode(fname, model, x, u, chunk_size):
    if isinstance(x, dict):
        if "x" not in x:
            raise ValueError(f"{fname}: the batch dict x must hold 'x', got keys {sorted(x)}")
        if u is not None and "u" in x:
            raise ValueError(f"{fname}: u is given twice, as u= and in the batch dict x")
        x, u = x["x"], x.get("u", u)
    if x is None:
        raise ValueError(f"{fname}: x (the data, [N, D] or a batch dict) is required with a model")
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fname}: x must be a tensor [N, D], got {shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{fname}: x must hold at least one point (N >= 1), got shape {list(x.shape)}")
    param = inspect.signature(model.encode).parameters.get("u")
    needs_u = param is not None and param.default is inspect.Parameter.empty
    if u is None and needs_u:
        raise ValueError(
            f"{fname}: {type(model).__name__}.encode needs u (a conditional model): pass u= or a batch dict "
            "{'x': ..., 'u': ...}"
        )
    if u is not None:
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"{fname}: u must be a torch.Tensor, got {type(u).__name__}")
        if u.dim() == 0 or u.shape[0] != x.shape[0]:
            raise ValueError(f"{fname}: u must have one row per row of x ({x.shape[0]}), got shape {list(u.shape)}")
    locs, log_scales = [], []
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start:start + chunk_size]
        out = model.encode(xc) if u is None else model.encode(xc, u[start:start + chunk_size])
        locs.append(out[0])
        log_scales.append(out[1])
    return torch.cat(locs), torch.cat(log_scales)


def _check_posteriors(fname, q_loc, q_log_scale, names):
    for name, t in zip(names, (q_loc, q_log_scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fname}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{fname}: {name} must be float32 or float64, got dtype {t.dtype}")
    if q_log_scale.dtype != q_loc.dtype or q_log_scale.device != q_loc.device:
        raise ValueError(
            f"{fname}: {names[0]} and {names[1]} must have the same dtype and device, got "
            f"{q_loc.dtype} on {q_loc.device} and {q_log_scale.dtype} on {q_log_scale.device}"
        )
    if q_loc.dim() != 2:
        raise ValueError(f"{fname}: {names[0]} must have shape [N, d], got {list(q_loc.shape)}")
    if q_log_scale.shape != q_loc.shape:
        raise ValueError(
            f"{fname}: {names[1]} must have the shape of {names[0]}, {list(q_loc.shape)}, got {list(q_log_scale.shape)}"
        )
    if q_loc.shape[0] == 0:
        raise ValueError(
            f"{fname}: the posteriors must hold at least one point (N >= 1), got shape {list(q_loc.shape)}"
        )
    if q_loc.shape[1] == 0:
        raise ValueError(
            f"{fname}: the posteriors must have at least one latent dimension (d >= 1), got shape {list(q_loc.shape)}"
        )
    for name, t in zip(names, (q_loc, q_log_scale)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{fname}: {name} has non-finite entries (NaN or ±inf)")
