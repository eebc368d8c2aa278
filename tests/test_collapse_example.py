"""examples/collapse_exact_gmm.py: exact posterior of a mixture weight collapses to the prior
when the components coincide and concentrates when they separate."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "collapse_exact_gmm.py")
spec = importlib.util.spec_from_file_location("collapse_exact_gmm", EXAMPLE)
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)

GRID = (np.arange(4000) + 0.5) / 4000


def test_posterior_matches_the_direct_product_of_mixture_densities():
    x = np.array([-1.2, 0.3, 2.0])
    separation = 1.5

    def phi(t):
        return np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)

    direct = np.prod([GRID * phi(xi + separation / 2) + (1 - GRID) * phi(xi - separation / 2) for xi in x], axis=0)
    np.testing.assert_allclose(example.exact_posterior(x, separation, GRID), direct / direct.mean(), rtol=1e-10)


def test_coinciding_components_give_the_prior_exactly():
    x = example.sample(500, 0.3, 0.0, np.random.default_rng(0))
    posterior = example.exact_posterior(x, 0.0, GRID)
    np.testing.assert_allclose(posterior, np.ones_like(GRID), rtol=1e-12)
    assert abs(example.summarise(posterior, GRID)["kl_posterior_prior"]) < 1e-12


def test_separated_components_identify_the_weight():
    rng = np.random.default_rng(1)
    summaries = {d: example.summarise(example.exact_posterior(example.sample(400, 0.3, d, rng), d, GRID), GRID)
                 for d in (0.0, 1.0, 4.0)}
    kls = [summaries[d]["kl_posterior_prior"] for d in (0.0, 1.0, 4.0)]
    assert kls[0] < 1e-12 < kls[1] < kls[2], kls
    assert abs(summaries[4.0]["posterior_mean"] - 0.3) < 0.05 and summaries[4.0]["posterior_sd"] < 0.04, summaries[4.0]
    assert abs(summaries[0.0]["posterior_sd"] - 1 / np.sqrt(12)) < 1e-6, "collapsed: the uniform prior's sd"


def test_main_writes_its_files(tmp_path):
    summary = example.main(["--out", str(tmp_path), "--separations", "0,3", "--n", "50", "--grid", "500"])
    assert sorted(os.listdir(tmp_path)) == ["collapse_exact_gmm.png", "metrics.json"], "missing output or a leftover temp file"
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    assert [r["separation"] for r in summary["results"]] == [0.0, 3.0]
