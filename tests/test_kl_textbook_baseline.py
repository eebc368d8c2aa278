"""The ratio table's "compiled textbook" KL baseline (benchmarks/expfam_kl_cases.textbook_kl)
computes the same KL as the reference: a faster peer is only a fair peer if it is right."""

import sys
from pathlib import Path

import pytest
import torch

from ivae_ext import reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from expfam_kl_cases import textbook_kl  # noqa: E402
from helpers import FAMILIES, REDUCTIONS, kl_inputs  # noqa: E402


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p_shape", [(64, 7), (7,)], ids=["full", "broadcast"])
@pytest.mark.parametrize("family", FAMILIES)
def test_textbook_formula_matches_reference_float64(family, p_shape, reduction):
    inputs = kl_inputs(64, 7, p_shape, torch.float64, "cpu")
    expected = reference.expfam_kl(*inputs, family, reduction)
    got = textbook_kl(*inputs, family, reduction)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=f"textbook {family} KL differs from the reference")
    for g, e, name in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(expected.sum(), inputs), ("q_loc", "q_log_scale", "p_loc", "p_log_scale")):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=f"textbook {family} KL gradient for {name} differs")


def test_textbook_formula_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="family"):
        textbook_kl(*kl_inputs(2, 3, (2, 3), torch.float64, "cpu"), "cauchy")
