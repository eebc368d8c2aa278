"""IMA-VAE: mixings and their Jacobians, c_IMA, the sigmoid-uniform prior, the data loaders,
the model, the runner and the CLI."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

from ivae_ext.cli import main, train_family
from ivae_ext.cli import ima as ima_family
from ivae_ext.data.ima import load_ima_data, load_ima_npz, make_ima_data, split_three
from ivae_ext.data.mixing import (MIXINGS, SOURCE_DISTRIBUTIONS, MLPMixing, MoebiusMixing, make_mixing,
                                  source_log_density, unit_det_matrix)
from ivae_ext.data.npz import DataFormatError
from ivae_ext.experiments.ima import IMAConfig, ima_claim_checks, run_ima_train
from ivae_ext.metrics import mcc
from ivae_ext.metrics.ima import cima, global_cima, jacobians, log_volume
from ivae_ext.models.imavae import IMAVAE, log_sigmoid_derivative

TINY = {"n": 900, "epochs": 3, "val_every": 1, "patience": 0, "batch_size": 64, "progress": False}


def _quiet(*_):
    pass


@pytest.mark.parametrize("kind", MIXINGS)
def test_mixing_jacobian_matches_autograd(kind):
    f = make_mixing(kind, 3, np.random.default_rng(3))
    s = torch.rand(50, 3, dtype=torch.float64) - 0.5
    auto = vmap(jacrev(lambda v: f.forward64(v.unsqueeze(0)).squeeze(0)))(s)
    torch.testing.assert_close(f.jacobian(s), auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_moebius_mixing_is_conformal(dim):
    f = MoebiusMixing(dim, np.random.default_rng(dim))
    assert (f.pole.abs() > 0.5).all()  # the pole lies outside the source cube
    s = torch.rand(400, dim, dtype=torch.float64) - 0.5
    assert cima(f.jacobian(s)).abs().max() < 1e-10


def test_linear_map_has_unit_determinant_and_breaks_conformality():
    L = unit_det_matrix(3, np.random.default_rng(0))
    assert abs(abs(np.linalg.det(L)) - 1) < 1e-12 and np.linalg.cond(L) < 1e3
    data = make_ima_data("moebius_linear", n=300, seed=0)
    assert float(cima(data.mixing.jacobian(data.s_test.double())).mean()) > 0.1


def test_mlp_mixing_weights():
    f = MLPMixing(3, np.random.default_rng(0), weights="orthogonal")
    for W in f.W:
        torch.testing.assert_close(W @ W.T, torch.eye(3, dtype=torch.float64))
    g = MLPMixing(3, np.random.default_rng(0), weights="uniform")
    assert all(((W >= 1) & (W <= 3)).all() for W in g.W)
    with pytest.raises(ValueError, match="weights must be"):
        MLPMixing(3, np.random.default_rng(0), weights="gaussian")


def test_cima_of_known_matrices():
    Q = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]
    assert abs(float(cima(Q))) < 1e-12
    assert abs(float(cima(Q @ torch.diag(torch.tensor([0.1, 2.0, 3.0, 7.0], dtype=torch.float64))))) < 1e-12
    a = 0.7
    shear = torch.tensor([[1.0, a], [0.0, 1.0]], dtype=torch.float64)  # columns (1, 0), (a, 1); det 1
    assert float(cima(shear)) == pytest.approx(0.5 * math.log(1 + a * a), abs=1e-14)
    tall = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # D > n: via JᵀJ
    assert float(cima(tall)) == pytest.approx(0.5 * math.log(2.0), abs=1e-14)
    batch = torch.stack([Q[:2, :2] * 0 + torch.eye(2, dtype=torch.float64), shear])
    torch.testing.assert_close(cima(batch), torch.tensor([0.0, 0.5 * math.log(1 + a * a)], dtype=torch.float64))


def test_log_volume_of_known_matrices_and_the_true_log_likelihood():
    J = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    assert float(log_volume(J)) == pytest.approx(math.log(6.0), abs=1e-14)
    tall = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    assert float(log_volume(tall)) == pytest.approx(math.log(2.0), abs=1e-14)
    with pytest.raises(ValueError, match="log_volume: each Jacobian must be D × n"):
        log_volume(torch.ones(2, 3, dtype=torch.float64))
    # a linear map x = 2 s of uniform sources on the unit cube: p(x) = 2^-n everywhere
    s = torch.rand(100, 3, dtype=torch.float64) - 0.5
    nll = log_volume(2 * torch.eye(3, dtype=torch.float64).expand(100, 3, 3)) - source_log_density(s, "uniform")
    torch.testing.assert_close(nll, torch.full((100,), 3 * math.log(2.0), dtype=torch.float64))


@pytest.mark.parametrize("distribution", SOURCE_DISTRIBUTIONS)
def test_source_log_density_matches_the_sampler(distribution):
    s = torch.as_tensor(np.random.default_rng(0).uniform(-0.4, 0.4, size=(20, 2)))
    expected = {"uniform": torch.zeros(20, dtype=torch.float64),
                "gaussian": torch.distributions.Normal(0.0, 1.0).log_prob(s).sum(1),
                "laplace": torch.distributions.Laplace(0.0, 1.0).log_prob(s).sum(1)}[distribution]
    torch.testing.assert_close(source_log_density(s, distribution), expected)
    if distribution == "uniform":
        assert source_log_density(torch.tensor([[0.6, 0.0]]), "uniform")[0] == -math.inf
    with pytest.raises(ValueError, match="distribution must be one of"):
        source_log_density(s, "beta")


def test_cima_errors():
    with pytest.raises(ValueError, match="D >= n"):
        cima(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        cima(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[N, D, n\] or \[D, n\]"):
        cima(torch.ones(3))


def test_global_cima_is_the_mean_of_pointwise_contrasts():
    f = make_mixing("moebius_linear", 3, np.random.default_rng(1))
    s = torch.rand(64, 3, dtype=torch.float64) - 0.5
    mean, values = global_cima(f.forward64, s, chunk_size=10)
    torch.testing.assert_close(values, cima(f.jacobian(s)))
    assert mean == pytest.approx(float(values.mean()))
    torch.testing.assert_close(jacobians(f.forward64, s, chunk_size=7), f.jacobian(s))


def test_sigmoid_prior_log_density_matches_torch_distributions():
    loc, scale = torch.tensor([0.3, -1.2]), torch.tensor([0.5, 2.0])
    q = torch.distributions.TransformedDistribution(torch.distributions.Normal(loc, scale),
                                                    [torch.distributions.transforms.SigmoidTransform()])
    y = torch.tensor([[0.1, -3.0], [2.5, 0.7]])
    ours = torch.distributions.Normal(loc, scale).log_prob(y) - log_sigmoid_derivative(y)
    torch.testing.assert_close(ours, q.log_prob(torch.sigmoid(y)), rtol=1e-5, atol=1e-5)
    # finite where float32's sigmoid saturates to exactly 1 (there log U(0,1) at z would be -inf)
    assert torch.isfinite(log_sigmoid_derivative(torch.tensor([40.0, -40.0]))).all()


@pytest.mark.parametrize("prior", ["uniform", "gaussian", "laplace"])
def test_kl_per_latent_against_monte_carlo(prior):
    torch.manual_seed(0)
    model = IMAVAE(2, 2, prior=prior).double()
    loc = torch.tensor([[0.4, -1.0]], dtype=torch.float64)
    log_scale = torch.tensor([[-0.5, 0.3]], dtype=torch.float64)
    n = 400000
    y = loc + torch.exp(log_scale) * torch.randn(n, 2, dtype=torch.float64)
    log_q_y = torch.distributions.Normal(loc, torch.exp(log_scale)).log_prob(y)
    if prior == "uniform":  # log q(z) − log 1 with z = sigmoid(y)
        mc = (log_q_y - log_sigmoid_derivative(y)).mean(0)
        ours = model.kl_per_latent(loc.expand(n, 2), log_scale.expand(n, 2), y).mean(0)
    else:
        p = torch.distributions.Normal(0.0, 1.0) if prior == "gaussian" else torch.distributions.Laplace(0.0, 1.0)
        mc = (log_q_y - p.log_prob(y)).mean(0)
        ours = model.kl_per_latent(loc, log_scale)[0]
    torch.testing.assert_close(ours, mc, atol=0.01, rtol=0)


def test_model_errors_and_decoder_var():
    with pytest.raises(ValueError, match="prior must be one of"):
        IMAVAE(3, 3, prior="beta")
    with pytest.raises(ValueError, match="must not exceed data_dim"):
        IMAVAE(2, 3)
    with pytest.raises(ValueError, match="decoder_var must be a finite number > 0"):
        IMAVAE(3, 3, decoder_var=0.0)
    m = IMAVAE(3, 3, decoder_var=1e-5)
    assert m.decoder_var == pytest.approx(1e-5) and "decoder_log_var" in m.state_dict()
    wide = IMAVAE(3, 3, hidden_dim=8, encoder_hidden_dim=20)
    assert wide.encoder.net[0].out_features == 20 and wide.decoder.net[0].out_features == 8
    assert wide.config()["encoder_hidden_dim"] == 20 and IMAVAE(3, 3, hidden_dim=8).encoder_hidden_dim == 8
    with pytest.raises(ValueError, match="encoder_hidden_dim must be None or an int >= 1"):
        IMAVAE(3, 3, encoder_hidden_dim=0)


def test_loss_decreases_on_a_tiny_problem():
    data = make_ima_data("moebius", n=600, seed=0)
    torch.manual_seed(0)
    model = IMAVAE(3, 3, decoder_var=1e-2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(300):
        loss = model.loss({"x": data.x_train})["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 1.0


def test_generated_data_are_deterministic_and_split():
    a, b = make_ima_data("mlp", n=500, seed=4), make_ima_data("mlp", n=500, seed=4)
    torch.testing.assert_close(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, make_ima_data("mlp", n=500, seed=5).x_train)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (350, 100, 50)
    # the mixing does not depend on n
    torch.testing.assert_close(make_ima_data("moebius", n=300, seed=2).mixing.A,
                               make_ima_data("moebius", n=3000, seed=2).mixing.A)
    # x is the (centred) mixing of s
    torch.testing.assert_close(a.mixing(a.s_train.double()).float(), a.x_train, rtol=1e-5, atol=1e-6)
    assert abs(float(torch.cat([a.x_train, a.x_val, a.x_test]).double().mean(0).abs().max())) < 1e-6
    train, val, test = split_three(10, 0)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="mixing must be one of"):
        make_ima_data("spiral")
    with pytest.raises(ValueError, match="sources must be one of"):
        make_ima_data("moebius", n=100, sources="cauchy")


def test_mcc_recovers_permuted_rescaled_sources():
    data = make_ima_data("moebius", n=500, seed=0)
    s = data.s_test
    z = torch.stack([3 * s[:, 2] + 1, -s[:, 0], torch.sigmoid(4 * s[:, 1])], 1)
    score, matching = mcc(z, s, "spearman")
    assert score == pytest.approx(1.0) and matching.tolist() == [1, 2, 0]


def test_npz_loading_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    np.savez(good, x=rng.normal(size=(40, 3)), s=rng.normal(size=(40, 2)))
    d = load_ima_npz(str(good))
    assert d.n_sources == 2 and d.data_dim == 3 and d.mixing is None and len(d.x_test) == 4
    assert load_ima_data(str(good)).n_sources == 2
    x_only = tmp_path / "x.npz"
    np.savez(x_only, x=rng.normal(size=(40, 3)))
    assert load_ima_npz(str(x_only)).s_train is None
    bad = tmp_path / "nan.npz"
    x = rng.normal(size=(40, 3))
    x[5, 1] = np.nan
    np.savez(bad, x=x)
    with pytest.raises(DataFormatError, match="NaN or inf"):
        load_ima_npz(str(bad))
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=rng.normal(size=(40, 2)), s=rng.normal(size=(40, 3)))
    with pytest.raises(DataFormatError, match="more sources than observed dimensions"):
        load_ima_npz(str(wide))
    cube = tmp_path / "cube.npz"
    np.savez(cube, x=rng.normal(size=(40, 3, 2)))
    with pytest.raises(DataFormatError, match="must be 2-D"):
        load_ima_npz(str(cube))
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=rng.normal(size=(40, 3)), s=rng.normal(size=(39, 2)))
    with pytest.raises(DataFormatError, match="number of rows"):
        load_ima_npz(str(rows))
    nox = tmp_path / "nox.npz"
    np.savez(nox, s=rng.normal(size=(40, 2)))
    with pytest.raises(DataFormatError, match="missing required array 'x'"):
        load_ima_npz(str(nox))
    with pytest.raises(FileNotFoundError):
        load_ima_npz(str(tmp_path / "absent.npz"))
    with pytest.raises(ValueError, match="--data must be one of"):
        load_ima_data("swiss_roll")


def test_config_errors():
    with pytest.raises(ValueError, match="decoder_var_relative must be a finite number > 0"):
        IMAConfig(decoder_var_relative=-1.0)
    with pytest.raises(ValueError, match="prior must be one of"):
        IMAConfig(prior="beta")
    with pytest.raises(ValueError, match="data must be one of"):
        IMAConfig(data="spiral")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        IMAConfig(epochs=0)


def test_run_writes_metrics_and_resumes_bit_identically(tmp_path):
    cfg = IMAConfig(**{**TINY, "epochs": 4, "decoder_var_relative": 0.1})
    full = run_ima_train(cfg, str(tmp_path / "full"), log=_quiet)
    for key in ("mcc", "mcc_spearman", "mcc_samples", "mcc_samples_batch64", "kl", "kl_per_latent", "cima",
                "cima_true", "self_consistency_x", "self_consistency_z", "neg_elbo", "neg_log_lik_true",
                "elbo_gap_to_true", "wall_time_s", "config"):
        assert key in full, key
    assert full["elbo_gap_to_true"] == pytest.approx(full["neg_elbo"] - full["neg_log_lik_true"])
    assert full["decoder_var"] == pytest.approx(0.1 * full["data_variance"])
    assert abs(full["cima_true"]) < 1e-10 and 0 <= full["mcc"] <= 1 and full["kl"] >= 0
    for name in ("metrics.json", "curves.png", "sources.png", "model.pt"):
        assert os.path.exists(tmp_path / "full" / name)
    part = IMAConfig(**{**TINY, "epochs": 4, "decoder_var_relative": 0.1})
    out = str(tmp_path / "part")
    from ivae_ext.training import fit as real_fit
    import ivae_ext.experiments.ima as ima_module

    def two_epochs(*args, **kwargs):
        return real_fit(*args, **kwargs, max_epochs_this_call=2)

    ima_module.fit = two_epochs
    try:
        run_ima_train(part, out, log=_quiet)
    finally:
        ima_module.fit = real_fit
    resumed = run_ima_train(part, out, resume=True, log=_quiet)
    for key in ("mcc", "cima", "kl", "neg_elbo", "selected_epoch"):
        assert resumed[key] == full[key], key


def test_claim_checks():
    row = lambda mcc_, cima_, kl: {"per_seed": [{"mcc": mcc_, "cima": cima_, "kl_per_latent": [kl, kl / 2]}]}
    good = ima_claim_checks({"moebius_0.0001": row(0.97, 0.004, 3.0), "moebius_1e-05": row(0.96, 0.008, 3.0),
                             "moebius_0.1": row(0.2, 1.0, 0.05)}, 2)
    assert good["moebius_0.0001_recovers"] and good["moebius_1e-05_recovers"] and good["moebius_0.1_collapses"]
    bad = ima_claim_checks({"moebius_0.0001": row(0.94, 0.004, 3.0), "moebius_0.1": row(0.2, 1.0, 0.2),
                            "moebius_0.0001_annealed": row(0.97, 0.02, 3.0)}, 2)
    assert not bad["moebius_0.0001_recovers"] and not bad["moebius_0.1_collapses"]
    assert not bad["moebius_0.0001_annealed_recovers"] and bad["moebius_0.0001_annealed_min_mcc"] == 0.97


def test_cli_train_and_reproduce(tmp_path, capsys):
    assert train_family("ima", "moebius") is ima_family
    out = str(tmp_path / "run")
    assert main(["train", "--model", "ima", "--data", "mlp", "--n", "600", "--epochs", "2", "--val-every", "1",
                 "--decoder-var-relative", "0.05", "--no-progress", "--out", out]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["config"]["data"] == "mlp" and m["config"]["decoder_var_relative"] == 0.05
    assert "wrote" in capsys.readouterr().out
    rep = str(tmp_path / "rep")
    assert main(["reproduce", "ima", "--settings", "moebius_0.1", "mlp", "--seeds", "0", "--n", "600",
                 "--epochs", "2", "--val-every", "1", "--jobs", "1", "--out", rep]) == 0
    table = json.load(open(os.path.join(rep, "table.json")))
    assert set(table["rows"]) == {"moebius_0.1", "mlp"} and "moebius_0.1_collapses" in table["claim"]
    md = open(os.path.join(rep, "table.md")).read()
    assert "| Möbius, decoder var 0.1 |" in md and "Per seed" in md and "| seed 0 | longest run |" in md
    with pytest.raises(SystemExit):
        main(["train", "--model", "ima", "--prior", "beta", "--out", out])


def test_gamma_annealing_schedule_and_selection_at_the_target(tmp_path):
    from ivae_ext.experiments.ima import annealed_decoder_var

    cfg = IMAConfig(anneal_epochs=4, anneal_factor=100.0, epochs=10)
    values = [annealed_decoder_var(e, cfg, 1e-4) for e in range(6)]
    assert values[0] == pytest.approx(1e-2) and values[2] == pytest.approx(1e-3) and values[4:] == [1e-4, 1e-4]
    run = IMAConfig(**{**TINY, "epochs": 6, "anneal_epochs": 3, "anneal_factor": 100.0, "decoder_var": 1e-3})
    m = run_ima_train(run, str(tmp_path), log=_quiet)
    trained = [r["decoder_var"] for r in m["history"][:3]]
    assert trained == pytest.approx([0.1, 0.1 * 100 ** (-1 / 3), 0.1 * 100 ** (-2 / 3)])
    assert all("val_neg_elbo" not in r for r in m["history"][:2]) and m["selected_epoch"] >= 3
    assert m["decoder_var"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="anneal_epochs .* must be below epochs"):
        IMAConfig(anneal_epochs=10, epochs=10)
    with pytest.raises(ValueError, match="anneal_factor must be a finite number >= 1"):
        IMAConfig(anneal_factor=0.5)


def test_train_on_an_npz_without_sources(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "x.npz"
    np.savez(path, x=rng.normal(size=(300, 4)) * 0.1)
    out = str(tmp_path / "run")
    assert main(["train", "--model", "ima", "--data", str(path), "--sources", "2", "--epochs", "2", "--val-every", "1",
                 "--no-progress", "--out", out]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert "mcc" not in m and "cima_true" not in m and m["model_config"]["latent_dim"] == 2
    assert math.isfinite(m["cima"]) and not os.path.exists(os.path.join(out, "sources.png"))
