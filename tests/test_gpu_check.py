"""make gpu-check (benchmarks/gpu_check.py): the refusal without a GPU, and the report it writes,
built here from fake test counts and ratios (no GPU runs in CI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

FAKE_PROBE = {
    "visible": True, "torch": "2.14.1+cu130", "torch_cuda": "13.0", "device_name": "NVIDIA A100-SXM4-80GB",
    "capability": "8.0", "total_memory_gib": 79.15, "multiprocessors": 108, "device_count": 1,
    "driver": "580.65.06", "cudnn": 91000,
}
FAKE_BUILD = {"ok": True, "exit_status": 0, "arch_list": "8.0", "log": "build/cuda/build.log",
              "summary": ["ivae_ext: built CPU + CUDA kernels for architectures '8.0'"], "error_tail": []}
FAKE_BUILD_INFO = {"cpu": True, "cuda": True, "cuda_arch_list": "8.0", "cuda_version": "Build cuda_13.0", "compiled": True}
FAKE_RATIOS = {
    "ok": True, "exit_status": 0, "device": "cuda", "copy_bandwidth_bytes_per_s": 1.5e12, "gemm_flops_per_s": 1.9e13,
    "rows": [
        {"op": "expfam_kl", "case": "B=65536 d=64", "mode": "forward", "eager / fused": 7.25,
         "compiled reference / fused": 1.5, "compiled textbook / fused": 1.125, "fused / bandwidth floor": 1.75},
        {"op": "brenier_logdet", "case": "B=4096 d=2 H=32 K=3", "mode": "forward+backward",
         "vmap(hessian) / fused": 12.5, "brute force / fused": float("nan")},
    ],
}

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="7" time="3.2">
<testcase classname="tests.test_expfam_kl" name="test_matches_reference[cuda]" time="0.1"/>
<testcase classname="tests.test_expfam_kl" name="test_grad[cuda]" time="0.1"><failure message="AssertionError: grads differ&#10;more">trace</failure></testcase>
<testcase classname="tests.test_icnn_map" name="test_fwd[cuda]" time="0.1"><error message="CUDA error: illegal memory access">trace</error></testcase>
<testcase classname="tests.test_icnn_map" name="test_a[cuda]" time="0.1"><skipped message="x"/></testcase>
<testcase classname="tests.test_icnn_map" name="test_b[cuda]" time="0.1"><skipped message="x"/></testcase>
<testcase classname="tests.test_imq_mmd" name="test_c[cuda]" time="0.1"/>
<testcase classname="tests.test_imq_mmd" name="test_d[cuda]" time="0.1"/>
</testsuite></testsuites>
"""


def fake_tests(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    return dict(gpu_check.parse_junit(path), selection="pytest -k cuda", exit_status=1)


def test_refuses_without_a_gpu():
    """The entry point, run as make runs it with every GPU hidden: exit status 2, a message saying
    no CUDA GPU is visible and what to do, and no report written."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out-dir", "should-not-exist"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == gpu_check.NO_GPU_EXIT, f"exit status {out.returncode}; stderr: {out.stderr}"
    assert "no CUDA GPU is visible" in out.stderr, out.stderr
    assert "machine with an NVIDIA GPU" in out.stderr, "the refusal must say what to do"
    assert not (ROOT / "should-not-exist").exists(), "a refusal must not write reports"


def test_refusal_names_a_cpu_only_torch():
    message = gpu_check.refusal_message({"visible": False, "torch": "2.14.1+cpu", "torch_cuda": None})
    assert "CPU-only build" in message


def test_junit_counts_and_failures(tmp_path):
    tests = fake_tests(tmp_path)
    assert (tests["tests"], tests["passed"], tests["failed"], tests["errors"], tests["skipped"]) == (7, 3, 1, 1, 2)
    assert [f["test"] for f in tests["failures"]] == ["tests.test_expfam_kl::test_grad[cuda]", "tests.test_icnn_map::test_fwd[cuda]"]
    assert tests["failures"][1]["message"] == "CUDA error: illegal memory access"


def test_report_fails_when_a_test_fails(tmp_path):
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, fake_tests(tmp_path), FAKE_RATIOS)
    assert report["verdict"] == "fail"
    assert report["checks"] == {"build": True, "cuda_kernels_compiled": True, "tests": False, "ratios": True}


def test_report_passes_when_everything_did():
    tests = {"tests": 129, "passed": 129, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, tests, FAKE_RATIOS)
    assert report["verdict"] == "pass", report["checks"]


def test_report_fails_when_no_test_ran():
    """Zero CUDA tests collected is not a pass (e.g. the device parametrisations were all skipped)."""
    tests = {"tests": 5, "passed": 0, "failed": 0, "errors": 0, "skipped": 5, "failures": []}
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, tests, FAKE_RATIOS)
    assert report["checks"]["tests"] is False


def test_written_json_has_everything_to_send(tmp_path):
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, fake_tests(tmp_path), FAKE_RATIOS)
    json_path, md_path = gpu_check.write_reports(report, tmp_path / "out")
    assert [p.name for p in (json_path, md_path)] == ["gpu_report.json", "gpu_report.md"]
    data = json.loads(json_path.read_text())  # strict JSON: NaN would not parse in most readers
    assert data["device"]["device_name"] == "NVIDIA A100-SXM4-80GB" and data["device"]["capability"] == "8.0"
    assert data["versions"]["driver"] == "580.65.06" and data["versions"]["torch_cuda"] == "13.0"
    assert data["build_info"]["cuda_arch_list"] == "8.0"
    assert data["tests"]["failed"] == 1 and data["tests"]["passed"] == 3
    assert data["ratios"]["rows"][0]["compiled textbook / fused"] == 1.125
    assert data["ratios"]["rows"][1]["brute force / fused"] is None, "NaN must be written as null"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_report.json", "gpu_report.md"], "temp files left behind"


def test_markdown_lists_every_ratio_and_the_counts(tmp_path):
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, fake_tests(tmp_path), FAKE_RATIOS)
    text = gpu_check.render_markdown(report)
    assert "**Verdict: FAIL**" in text
    assert "NVIDIA A100-SXM4-80GB (compute capability 8.0" in text
    assert "580.65.06" in text and "2.14.1+cu130" in text
    assert "7 tests: **3 passed, 1 failed, 1 errors**, 2 skipped" in text
    assert "tests.test_icnn_map::test_fwd[cuda] | error | CUDA error: illegal memory access" in text
    for header in ("### expfam_kl", "### brenier_logdet"):
        assert header in text
    assert "| case | mode | eager / fused | compiled reference / fused | compiled textbook / fused | fused / bandwidth floor |" in text
    assert "| B=65536 d=64 | forward | 7.25 | 1.5 | 1.12 | 1.75 |" in text
    assert "| B=4096 d=2 H=32 K=3 | forward+backward | 12.5 | nan |" in text


def test_rewriting_a_report_replaces_it_whole(tmp_path):
    report = gpu_check.build_report(FAKE_PROBE, "nvcc 13.0", FAKE_BUILD, FAKE_BUILD_INFO, fake_tests(tmp_path), FAKE_RATIOS)
    gpu_check.write_reports(report, tmp_path)
    report["device"]["device_name"] = "another GPU"
    json_path, _ = gpu_check.write_reports(report, tmp_path)
    assert json.loads(json_path.read_text())["device"]["device_name"] == "another GPU"


def test_main_runs_every_step_and_writes_both_reports(tmp_path, monkeypatch):
    """The orchestration with a fake GPU: build for its capability with CUDA forced (even if the
    caller's environment forces CPU), then tests and ratios, then the reports; exit 1 on a failure."""
    calls = {}

    def fake_build(arch, env):
        calls["build"] = (arch, env.get("IVAE_FORCE_CPU"))
        return FAKE_BUILD

    monkeypatch.setenv("IVAE_FORCE_CPU", "1")
    monkeypatch.setattr(gpu_check, "run_build", fake_build)
    monkeypatch.setattr(gpu_check, "read_build_info", lambda env: FAKE_BUILD_INFO)
    monkeypatch.setattr(gpu_check, "run_tests", lambda all_tests, env: fake_tests(tmp_path))
    monkeypatch.setattr(gpu_check, "run_ratios", lambda rounds, env: FAKE_RATIOS)
    monkeypatch.setattr(gpu_check, "nvcc_version", lambda: "Build cuda_13.0")
    status = gpu_check.main(["--out-dir", str(tmp_path / "reports")], probe=FAKE_PROBE)
    assert status == 1, "a failed test must fail the check"
    assert calls["build"] == ("8.0", None), "build for the probed capability, without IVAE_FORCE_CPU"
    data = json.loads((tmp_path / "reports" / "gpu_report.json").read_text())
    assert data["verdict"] == "fail" and data["versions"]["nvcc"] == "Build cuda_13.0"
    assert (tmp_path / "reports" / "gpu_report.md").exists()


def test_the_gpu_test_selection_runs_and_is_counted_here():
    """The real pytest command of step 2 on this CPU-only build: the CUDA cases are collected and
    skipped, and the CUDA-build requirement fails, so the counts come back and the check fails."""
    tests = gpu_check.run_tests(False, dict(os.environ, PYTHONPATH=str(ROOT)))
    assert tests["selection"] == "pytest -k cuda"
    assert tests["tests"] > 100, f"expected every CUDA parametrisation to be collected: {tests}"
    if not gpu_check.gpu_probe()["visible"]:
        assert tests["skipped"] >= 100, f"the CUDA parametrisations should be skipped here: {tests}"
        # passes in a CUDA build (CI's), fails in a CPU-only one: IVAE_REQUIRE_CUDA_BUILD=1 is set
        failed = [f["test"] for f in tests["failures"]]
        assert failed in ([], ["tests.test_build::test_cuda_kernels_were_built_when_required"]), failed
