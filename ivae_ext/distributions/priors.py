r"""Factorised priors p(z) of the decomposition VAE (Mathieu et al. 2019), over z in R^d.

Every prior here is a ``torch.distributions.Distribution`` with ``batch_shape == ()`` and
``event_shape == (d,)``: ``log_prob(z)`` takes z [..., d] and returns the joint log-density [...]
(summed over the latent dimension), which is what a KL or a Monte-Carlo KL needs.

- Gaussian and Student-t priors are torch's ``Normal`` / ``StudentT`` wrapped in ``Independent``,
  so a Gaussian posterior against a Gaussian prior still takes the analytic (fused) route of
  ``ivae_ext.kl_divergence``.
- :class:`AnisotropicPrior` is the anchor's scale parametrisation as an ``nn.Module``: variances
  = variance_scale · d · softmax(logits), so they always sum to variance_scale · d, learned or not;
  calling it returns the distribution built from the current logits (build it once per step).
- :class:`SpikeAndSlab`, per dimension, p(z_i) = γ N(z_i; 0, spike_scale²) + (1 − γ) N(z_i; slab_loc,
  slab_scale²), γ the *spike* weight and spike_scale = 0.05 a standard deviation, as the anchor's
  code (``src/distributions/sparse.py``); it has ``sample`` but no ``rsample`` (the spike/slab choice
  is discrete), so an MMD against it draws prior samples without gradients, which it does not need.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, StudentT, constraints

from ivae_ext.distributions._checks import as_float_tensor, check_broadcast_exact, check_dim, check_positive

__all__ = ["gaussian_prior", "student_t_prior", "AnisotropicPrior", "SpikeAndSlab", "FAMILIES"]

FAMILIES = ("gaussian", "student-t")


def _per_dim(name: str, value, dim: int, like=None) -> torch.Tensor:
    return check_broadcast_exact(name, as_float_tensor(name, value, like), (dim,))


def gaussian_prior(dim: int, scale=1.0, loc=0.0) -> Independent:
    """N(loc, diag(scale²)) over R^dim: isotropic for a scalar scale, anisotropic for a [dim] one."""
    dim = check_dim("dim", dim)
    scale_t = _per_dim("scale", scale, dim)
    check_positive("scale", scale_t)
    loc_t = _per_dim("loc", loc, dim, like=scale_t)
    return Independent(Normal(loc_t, scale_t), 1)


def student_t_prior(dim: int, df, scale=1.0, loc=0.0) -> Independent:
    """The product of dim independent Student-t(df, loc, scale) (df and scale scalars or [dim])."""
    dim = check_dim("dim", dim)
    scale_t = _per_dim("scale", scale, dim)
    check_positive("scale", scale_t)
    df_t = _per_dim("df", df, dim, like=scale_t)
    check_positive("df", df_t)
    loc_t = _per_dim("loc", loc, dim, like=scale_t)
    return Independent(StudentT(df_t, loc_t, scale_t), 1)


class AnisotropicPrior(nn.Module):
    """A Gaussian or Student-t prior whose per-dimension variances sum to variance_scale · dim.

    variances = variance_scale · dim · softmax(logits) (the anchor's parametrisation): with
    ``learn=True`` the logits are a parameter, so training redistributes a fixed total variance
    between the dimensions instead of inflating it. ``variances=None`` starts isotropic (each
    variance_scale); given variances [dim] are rescaled to that total. For ``"student-t"`` the
    "variances" are the squared scales (the t's variance is scale² · df / (df − 2)).
    """

    def __init__(self, dim: int, family: str = "gaussian", variance_scale: float = 1.0, variances=None,
                 learn: bool = False, df: float | None = None):
        super().__init__()
        self.dim = check_dim("dim", dim)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if (family == "student-t") != (df is not None):
            raise ValueError(f"df is required for family 'student-t' and not allowed for {family!r}, got df={df!r}")
        if df is not None:
            check_positive("df", as_float_tensor("df", df))
        check_positive("variance_scale", as_float_tensor("variance_scale", variance_scale))
        self.family, self.df, self.variance_scale = family, df, float(variance_scale)
        if variances is None:
            logits = torch.zeros(dim)
        else:
            v = _per_dim("variances", variances, dim).detach().float()
            check_positive("variances", v)
            logits = v.log()
        if learn:
            self.logits = nn.Parameter(logits.clone())
        else:
            self.register_buffer("logits", logits.clone())

    @property
    def total_variance(self) -> float:
        return self.variance_scale * self.dim

    def variances(self) -> torch.Tensor:
        """[dim], positive, summing to variance_scale · dim."""
        return self.total_variance * torch.softmax(self.logits, dim=0)

    def forward(self) -> Independent:
        scale = self.variances().sqrt()
        if self.family == "gaussian":
            return Independent(Normal(torch.zeros_like(scale), scale), 1)
        return Independent(StudentT(torch.full_like(scale, self.df), torch.zeros_like(scale), scale), 1)

    def extra_repr(self) -> str:
        learn = isinstance(self.logits, nn.Parameter)
        df = f", df={self.df}" if self.df is not None else ""
        return f"dim={self.dim}, family={self.family!r}{df}, total_variance={self.total_variance:g}, learn={learn}"


class SpikeAndSlab(Distribution):
    """Per dimension γ N(0, spike_scale²) + (1 − γ) N(slab_loc, slab_scale²); independent dimensions.

    gamma is the spike weight in [0, 1] (0.8 in the anchor's sparsity runs, 0 gives the slab alone);
    spike_scale = 0.05 is a standard deviation. All parameters are scalars or [dim].
    """

    arg_constraints = {
        "gamma": constraints.unit_interval,
        "spike_scale": constraints.positive,
        "slab_loc": constraints.real,
        "slab_scale": constraints.positive,
    }
    support = constraints.independent(constraints.real, 1)
    has_rsample = False

    def __init__(self, dim: int, gamma=0.8, spike_scale=0.05, slab_scale=1.0, slab_loc=0.0, validate_args=None):
        dim = check_dim("dim", dim)
        gamma_t = _per_dim("gamma", gamma, dim)
        bad = ~((gamma_t >= 0) & (gamma_t <= 1))
        if bool(bad.any()):
            raise ValueError(f"gamma (the spike weight) must be in [0, 1], got {gamma_t[bad][:5].tolist()}")
        self.gamma = gamma_t
        self.spike_scale = _per_dim("spike_scale", spike_scale, dim, like=gamma_t)
        self.slab_scale = _per_dim("slab_scale", slab_scale, dim, like=gamma_t)
        check_positive("spike_scale", self.spike_scale)
        check_positive("slab_scale", self.slab_scale)
        self.slab_loc = _per_dim("slab_loc", slab_loc, dim, like=gamma_t)
        super().__init__(torch.Size(), torch.Size([dim]), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        spike = Normal(torch.zeros_like(self.spike_scale), self.spike_scale).log_prob(value) + self.gamma.log()
        slab = Normal(self.slab_loc, self.slab_scale).log_prob(value) + torch.log1p(-self.gamma)
        # log 0 = −inf for γ ∈ {0, 1} drops that component; logsumexp handles it
        return torch.logsumexp(torch.stack([spike, slab]), dim=0).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        is_spike = torch.rand(shape, dtype=self.gamma.dtype, device=self.gamma.device) < self.gamma
        eps = torch.randn(shape, dtype=self.gamma.dtype, device=self.gamma.device)
        return torch.where(is_spike, self.spike_scale * eps, self.slab_loc + self.slab_scale * eps)

    @property
    def mean(self) -> torch.Tensor:
        return (1 - self.gamma) * self.slab_loc

    @property
    def variance(self) -> torch.Tensor:
        # law of total variance (the anchor's stddev mixes standard deviations linearly, which is wrong)
        second = self.gamma * self.spike_scale**2 + (1 - self.gamma) * (self.slab_scale**2 + self.slab_loc**2)
        return second - self.mean**2

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise NotImplementedError("SpikeAndSlab has batch_shape (); broadcast its log_prob instead")
        return self

    def __repr__(self) -> str:
        g = self.gamma.unique()
        gamma = f"{float(g):g}" if g.numel() == 1 else "[per dim]"
        return f"SpikeAndSlab(dim={self.event_shape[0]}, gamma={gamma})"

