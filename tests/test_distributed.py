"""Data-parallel training: two Gloo ranks on the CPU train to the parameters of one process with
the same global batch and seed, resume from a distributed checkpoint, and the command line under
torchrun writes one set of files and exits 0 (non-zero when the run fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ivae_ext.cli import main
from ivae_ext.models import IMAVAE, IVAE, VAE, ConvexPotentialFlow
from ivae_ext.noise import batch_noise, normal_like, uniform_like

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from distributed_setup import train_small_ivae  # noqa: E402

EPOCHS, BATCH, ROWS = 4, 32, 157


def _torchrun(*args, cwd=None):
    """Run `args` under torchrun with 2 CPU processes; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def single_process():
    torch.set_num_threads(1)
    model, history = train_small_ivae(EPOCHS, BATCH, ROWS)
    return {k: v.clone() for k, v in model.state_dict().items()}, [r["loss"] for r in history["epochs"]]


def _assert_same(result, expected):
    state, losses = expected
    for k, v in state.items():
        torch.testing.assert_close(result["state"][k], v, rtol=1e-10, atol=1e-12, msg=f"parameter {k}")
    assert result["losses"] == pytest.approx(losses, rel=1e-10)


def test_two_gloo_ranks_train_to_the_single_process_parameters(tmp_path, single_process):
    proc = _torchrun(os.path.join(HERE, "distributed_worker.py"), str(tmp_path), "--epochs", str(EPOCHS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt")
    assert result["context"] == {"world_size": 2, "backend": "gloo"}
    _assert_same(result, single_process)


def test_resume_from_a_distributed_checkpoint(tmp_path, single_process):
    worker = os.path.join(HERE, "distributed_worker.py")
    first = _torchrun(worker, str(tmp_path), "--epochs", str(EPOCHS), "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and len(ckpt["torch_rng_per_rank"]) == 2
    second = _torchrun(worker, str(tmp_path), "--epochs", str(EPOCHS), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_same(torch.load(tmp_path / "result.pt"), single_process)
    # a distributed checkpoint needs as many processes to resume it
    from ivae_ext import fit

    model = IVAE(2, 2, 4, hidden_dim=16).double()
    with pytest.raises(ValueError, match="written by a run of 2 process"):
        fit(model, torch.zeros(8, 2), torch.zeros(8, 4), epochs=5, batch_size=4, checkpoint=str(tmp_path / "checkpoint.pt"),
            resume=True, progress=False)


def test_torchrun_command_line_writes_one_set_of_files_and_exits_0(tmp_path):
    out = tmp_path / "run"
    args = ["-m", "ivae_ext", "train", "--model", "ivae", "--data", "tcl", "--sources", "2", "--segments", "3",
            "--per-segment", "40", "--mixing-layers", "2", "--hidden", "8", "--epochs", "2", "--batch-size", "32",
            "--no-progress", "--out", str(out)]
    proc = _torchrun(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.load(open(out / "metrics.json"))
    assert m["world_size"] == 2 and m["backend"] == "gloo" and 0 <= m["mcc"] <= 1
    assert proc.stdout.count("wrote") <= 1  # rank 1's report is silenced
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    # a failing run exits non-zero on every rank: the global batch must split evenly over the ranks
    bad = _torchrun(*[a if a != "32" else "33" for a in args[:-1]], str(tmp_path / "bad"))
    assert bad.returncode != 0 and "batch_size (the global batch) must be a multiple of the world size 2" in bad.stderr


def test_distributed_flag_outside_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="not started by torchrun.*torchrun --nproc_per_node=N"):
        main(["train", "--model", "ivae", "--distributed", "--out", str(tmp_path)])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):  # reproduce runs its own processes: refused under torchrun
        main(["reproduce", "ivae", "--out", str(tmp_path)])


def test_batch_noise_is_the_same_however_the_batch_is_split():
    like = torch.zeros(7, 3, dtype=torch.float64)
    with batch_noise(11, 7):
        whole_n, whole_u = normal_like(like), uniform_like(like)
    for rank in range(3):
        part = like[rank::3]
        with batch_noise(11, 7, slice(rank, None, 3)):
            torch.testing.assert_close(normal_like(part), whole_n[rank::3], rtol=0, atol=0)
            torch.testing.assert_close(uniform_like(part), whole_u[rank::3], rtol=0, atol=0)
    with batch_noise(11, 7):
        other = normal_like(torch.zeros(5, 3))  # not batch-shaped: the global RNG, not the step's stream
    assert other.shape == (5, 3)
    torch.manual_seed(0)
    a = normal_like(like)
    torch.manual_seed(0)
    torch.testing.assert_close(a, torch.randn_like(like))  # outside a step: torch's global RNG


@pytest.mark.parametrize("build", [
    lambda: (IVAE(2, 2, 3, hidden_dim=8), {"x": torch.randn(6, 2), "u": torch.eye(3).repeat(2, 1)}),
    lambda: (VAE(2, 2, hidden_dim=8), {"x": torch.randn(6, 2)}),
    lambda: (IMAVAE(2, 2), {"x": torch.rand(6, 2)}),
    lambda: (ConvexPotentialFlow(2, hidden=4, layers=2), {"x": torch.randn(6, 2)}),
])
def test_every_model_forward_returns_its_loss(build):
    model, batch = build()
    torch.manual_seed(1)
    via_forward = model(batch)
    torch.manual_seed(1)
    via_loss = model.loss(batch)
    assert set(via_forward) == set(via_loss)
    torch.testing.assert_close(via_forward["loss"], via_loss["loss"])
