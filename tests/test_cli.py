"""The command line: train writes its files, reproduce writes its table, --help documents options."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ivae_ext.cli import build_parser, main

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")

TINY = ["--sources", "2", "--segments", "3", "--per-segment", "40", "--mixing-layers", "2",
        "--hidden", "8", "--epochs", "2", "--batch-size", "32", "--no-progress"]


def test_train_writes_metrics_and_plots(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--model", "ivae", "--data", "tcl", "--out", out] + TINY) == 0
    for name in ("metrics.json", "sources.png", "curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, f"{name} missing or empty"
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert 0.0 <= m["mcc"] <= 1.0
    assert {"loss", "recon"} <= set(m["final_loss_terms"])
    assert m["wall_time_s"] > 0 and m["config"]["sources"] == 2 and m["config"]["model"] == "ivae"
    assert len(m["history"]) == 2 and "mcc" in m["history"][0]
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")], "temporary files left behind"


def test_train_resume_continues_to_the_same_result(tmp_path):
    out = str(tmp_path / "run")
    main(["train", "--model", "vae", "--out", out] + TINY)
    first = json.load(open(os.path.join(out, "metrics.json")))
    main(["train", "--model", "vae", "--out", out, "--resume"] + TINY)
    again = json.load(open(os.path.join(out, "metrics.json")))
    assert again["final_loss_terms"] == first["final_loss_terms"]


def test_train_on_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(90, 2))
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.tanh(s @ rng.normal(size=(2, 3))), u=np.repeat([0, 1, 2], 30), s=s)
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(path), "--out", out, "--epochs", "1", "--hidden", "8", "--no-progress"]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["model_config"]["data_dim"] == 3 and m["model_config"]["aux_dim"] == 3


def test_reproduce_writes_the_table(tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert main(["reproduce", "ivae", "--out", out, "--seeds", "1", "2"] + TINY) == 0
    table = json.load(open(os.path.join(out, "table.json")))
    assert [r["seed"] for r in table["rows"]] == [1, 2]
    assert set(table["summary"]) >= {"ivae", "vae"} and "std" in table["summary"]["ivae"]
    md = open(os.path.join(out, "table.md")).read()
    assert "| data seed | iVAE MCC | VAE MCC |" in md and "mean ± std" in md
    assert "iVAE MCC" in capsys.readouterr().out


def test_reproduce_reports_how_the_objective_tracks_the_mcc_over_restarts(tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert main(["reproduce", "ivae", "--out", out, "--seeds", "1", "--restarts", "2"] + TINY) == 0
    table = json.load(open(os.path.join(out, "table.json")))
    assert len(table["rows"][0]["ivae_restarts"]) == 2
    rep = table["summary"]["restart_objective_vs_mcc"]
    assert rep["mcc_best_restart_oracle"] >= rep["mcc_selected_by_objective"] - 1e-12
    assert "rank correlation" in capsys.readouterr().out


def test_help_explains_every_option():
    parser = build_parser()
    for name in ("train", "reproduce"):
        sub = parser._subparsers._group_actions[0].choices[name]
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings} has no help"


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "ivae_ext", "train", "--help"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and "--mixing-activation" in r.stdout and "--resume" in r.stdout


def test_bad_weights_are_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--weights", "1,2"])
