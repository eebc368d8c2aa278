"""Validates the CUDA kernels on this machine's GPU and writes a report to send back.

Usage (what `make gpu-check` runs): python benchmarks/gpu_check.py [--out-dir DIR] [--all-tests] [--rounds N]

Steps: (1) refuse, exit status 2, unless torch sees a CUDA GPU; (2) build the extension for that
GPU's architecture (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability(), via
tools/quiet_build.py); (3) run the CUDA cases of the test suite (`pytest tests -k cuda`: every op, dtype
and layout against the CPU kernels and the reference; --all-tests runs the whole suite) with a
junit XML for the counts; (4) run the ratio table on the GPU (benchmarks/ratios.py --device cuda);
(5) write gpu_report.json and gpu_report.md (each atomically). The reports are written whatever
failed, and the exit status is 0 only when the build, every test and the ratio table succeeded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / "build" / "gpu-check"  # junit XML, ratio JSON, build log
NO_GPU_EXIT = 2
REPORT_NAMES = ("gpu_report.json", "gpu_report.md")
MAX_LISTED_FAILURES = 50


# ---------------------------------------------------------------- environment


def gpu_probe() -> dict:
    """What torch sees: {'visible': bool, ...}; on a GPU also name, capability and versions."""
    import torch

    probe = {
        "visible": False,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": 0,
    }
    try:
        probe["visible"] = bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0
    except Exception as exc:  # a broken driver install raises here; report it, do not crash
        probe["error"] = f"{type(exc).__name__}: {exc}"
    if not probe["visible"]:
        return probe
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    probe.update(
        device_count=torch.cuda.device_count(),
        device_index=index,
        device_name=props.name,
        capability=f"{props.major}.{props.minor}",
        total_memory_gib=round(props.total_memory / 2**30, 2),
        multiprocessors=props.multi_processor_count,
        driver=driver_version(),
        cudnn=torch.backends.cudnn.version(),
    )
    return probe


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except OSError:
        return "unknown"


def nvcc_version() -> str:
    cuda_home = os.environ.get("CUDA_HOME") or ("/usr/local/cuda" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if not cuda_home:
        return "not found (set CUDA_HOME)"
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip().splitlines()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return f"not found in CUDA_HOME={cuda_home}"


def refusal_message(probe: dict) -> str:
    """Why nothing can be checked here and what to do about it."""
    lines = ["gpu-check: no CUDA GPU is visible to torch, so the CUDA kernels cannot be built for it, tested or timed."]
    if probe.get("torch_cuda") is None:
        lines.append(f"  torch {probe.get('torch')} is a CPU-only build: install a CUDA build of torch "
                     "(PyPI's Linux x86-64 wheels are; `make gpu-check` creates .venv with one).")
    else:
        lines.append(f"  torch {probe.get('torch')} (CUDA {probe.get('torch_cuda')}): torch.cuda.is_available() is False.")
    if probe.get("cuda_visible_devices") is not None:
        lines.append(f"  CUDA_VISIBLE_DEVICES={probe['cuda_visible_devices']!r} may hide the GPUs.")
    if probe.get("error"):
        lines.append(f"  torch said: {probe['error']}")
    lines.append("  Run `make gpu-check` on a machine with an NVIDIA GPU whose driver works (`nvidia-smi` lists it) and")
    lines.append("  a CUDA toolkit (nvcc; CUDA_HOME, default /usr/local/cuda). Nothing was built, run or written.")
    return "\n".join(lines)


# ---------------------------------------------------------------- steps (subprocesses)


def run_build(arch: str, env: dict) -> dict:
    """tools/quiet_build.py for exactly this GPU's architecture, CUDA kernels required."""
    env = dict(env, IVAE_FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=arch)
    command = [sys.executable, str(ROOT / "tools" / "quiet_build.py"), "--build-temp", "build/cuda"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    printed = []
    for line in process.stdout:  # shown as it comes (a CUDA build takes minutes) and kept for the report
        sys.stdout.write(line)
        sys.stdout.flush()
        printed.append(line.rstrip("\n"))
    status = process.wait()
    return {
        "ok": status == 0,
        "exit_status": status,
        "arch_list": arch,
        "log": "build/cuda/build.log",
        "summary": printed if status == 0 else [],
        "error_tail": printed[-60:] if status else [],
    }


def read_build_info(env: dict) -> dict:
    code = "import json, ivae_ext; print(json.dumps(ivae_ext.build_info()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"compiled": False, "error": out.stderr.strip()[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_tests(all_tests: bool, env: dict) -> dict:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    junit = WORK_DIR / "junit.xml"
    junit.unlink(missing_ok=True)
    selection = [] if all_tests else ["-k", "cuda"]
    # not this tool's own tests: one of them runs this very command (it would recurse)
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "--ignore=tests/test_gpu_check.py",
               f"--junitxml={junit}", *selection]
    env = dict(env, IVAE_REQUIRE_CUDA_BUILD="1")  # tests/test_build.py then fails a build without CUDA kernels
    status = subprocess.run(command, cwd=ROOT, env=env).returncode
    counts = parse_junit(junit) if junit.exists() else {"error": f"pytest wrote no junit XML (exit status {status})"}
    counts.update(selection="whole suite" if all_tests else "pytest -k cuda", exit_status=status)
    return counts


def run_ratios(rounds: int, env: dict) -> dict:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    out_file = WORK_DIR / "ratios.json"
    out_file.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "ratios.py"), "--device", "cuda", "--rounds", str(rounds), "--out", str(out_file)]
    status = subprocess.run(command, cwd=ROOT, env=env).returncode
    if status != 0 or not out_file.exists():
        return {"ok": False, "exit_status": status, "rows": []}
    result = json.loads(out_file.read_text())
    result.update(ok=True, exit_status=status)
    return result


# ---------------------------------------------------------------- report (pure: unit-tested on CPU)


def parse_junit(path) -> dict:
    """Counts from a pytest junit XML: tests, passed, failed, errors, skipped, and the failures."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        counts["tests"] += int(suite.get("tests", 0))
        counts["failed"] += int(suite.get("failures", 0))
        counts["errors"] += int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
    counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
    failures = []
    for case in root.iter("testcase"):
        for outcome in ("failure", "error"):
            node = case.find(outcome)
            if node is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                failures.append({"test": name, "outcome": outcome, "message": (node.get("message") or "")[:500]})
    counts["failures"] = failures
    return counts


def build_report(probe: dict, nvcc: str, build: dict, build_info: dict, tests: dict, ratios: dict) -> dict:
    """One JSON-ready dict with everything the maintainers need, and a verdict."""
    tests_ok = "error" not in tests and tests.get("failed", 1) == 0 and tests.get("errors", 1) == 0 and tests.get("passed", 0) > 0
    checks = {
        "build": bool(build.get("ok")),
        "cuda_kernels_compiled": bool(build_info.get("cuda")),
        "tests": tests_ok,
        "ratios": bool(ratios.get("ok")),
    }
    return {
        "schema": 1,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "verdict": "pass" if all(checks.values()) else "fail",
        "checks": checks,
        "device": {key: probe.get(key) for key in ("device_name", "capability", "total_memory_gib", "multiprocessors", "device_count")},
        "versions": {
            "driver": probe.get("driver"),
            "torch": probe.get("torch"),
            "torch_cuda": probe.get("torch_cuda"),
            "cudnn": probe.get("cudnn"),
            "nvcc": nvcc,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "build": build,
        "build_info": build_info,
        "tests": tests,
        "ratios": ratios,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return "" if value is None else str(value).replace("|", "\\|")


def render_markdown(report: dict) -> str:
    """The same content as the JSON, for reading: every ratio row, one table per op."""
    device, versions, tests = report["device"], report["versions"], report["tests"]
    lines = [
        "# ivae_ext GPU check",
        "",
        f"**Verdict: {report['verdict'].upper()}** ({report['created_utc']}; "
        + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in report["checks"].items()) + ")",
        "",
        "| | |",
        "|---|---|",
        f"| device | {_fmt(device.get('device_name'))} (compute capability {_fmt(device.get('capability'))}, "
        f"{_fmt(device.get('total_memory_gib'))} GiB, {_fmt(device.get('multiprocessors'))} SMs) |",
    ]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in versions.items()]
    lines += ["", "## Build", ""]
    build = report["build"]
    lines.append(f"TORCH_CUDA_ARCH_LIST={_fmt(build.get('arch_list'))}; {'succeeded' if build.get('ok') else 'FAILED'} (log: {_fmt(build.get('log'))})")
    lines += ["", "```"] + [str(line) for line in build.get("summary", []) + build.get("error_tail", [])] + ["```", ""]
    lines += ["build_info():", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report["build_info"].items()]
    lines += ["", f"## Tests ({_fmt(tests.get('selection'))})", ""]
    if "error" in tests:
        lines.append(f"No counts: {_fmt(tests['error'])}")
    else:
        lines.append(f"{tests['tests']} tests: **{tests['passed']} passed, {tests['failed']} failed, "
                     f"{tests['errors']} errors**, {tests['skipped']} skipped (pytest exit status {tests.get('exit_status')})")
        failures = tests.get("failures", [])
        if failures:
            lines += ["", "| test | outcome | message |", "|---|---|---|"]
            lines += [f"| {_fmt(f['test'])} | {f['outcome']} | {_fmt(f['message'].splitlines()[0] if f['message'] else '')} |"
                      for f in failures[:MAX_LISTED_FAILURES]]
            if len(failures) > MAX_LISTED_FAILURES:
                lines.append(f"\n… and {len(failures) - MAX_LISTED_FAILURES} more (all in gpu_report.json)")
    ratios = report["ratios"]
    lines += ["", "## Ratios (reference time / fused time on this GPU)", ""]
    if not ratios.get("ok"):
        lines.append(f"benchmarks/ratios.py --device cuda FAILED (exit status {ratios.get('exit_status')})")
    else:
        lines.append(f"Copy bandwidth {ratios.get('copy_bandwidth_bytes_per_s', float('nan')) / 1e9:.0f} GB/s, "
                     f"fp32 GEMM {ratios.get('gemm_flops_per_s', float('nan')) / 1e9:.0f} GFLOP/s; medians of "
                     "interleaved calls, each followed by torch.cuda.synchronize.")
        ops = []
        for row in ratios.get("rows", []):
            if row["op"] not in ops:
                ops.append(row["op"])
        for op in ops:
            rows = [row for row in ratios["rows"] if row["op"] == op]
            columns = [key for key in rows[0] if key != "op"]
            lines += ["", f"### {op}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_fmt(row.get(key)) for key in columns) + " |" for row in rows]
    lines += ["", "Please send both gpu_report.json and gpu_report.md.", ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never a part."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def _strict_json(value):
    """NaN (a ratio not measured for that row) becomes null: plain JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_reports(report: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = (out_dir / name for name in REPORT_NAMES)
    write_atomically(json_path, json.dumps(_strict_json(report), indent=2, default=str) + "\n")
    write_atomically(md_path, render_markdown(report))
    return [json_path, md_path]


# ---------------------------------------------------------------- entry point


def main(argv=None, probe=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT), help="where gpu_report.json and gpu_report.md go (default: the repository)")
    parser.add_argument("--all-tests", action="store_true", help="run the whole test suite, not only its CUDA cases")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per implementation in the ratio table")
    args = parser.parse_args(argv)

    probe = gpu_probe() if probe is None else probe
    if not probe.get("visible"):
        print(refusal_message(probe), file=sys.stderr)
        return NO_GPU_EXIT
    arch = probe["capability"]
    print(f"gpu-check: {probe['device_name']} (compute capability {arch}), driver {probe['driver']}, "
          f"torch {probe['torch']} (CUDA {probe['torch_cuda']})", flush=True)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "IVAE_FORCE_CPU"}  # this check needs CUDA
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    print(f"gpu-check: [1/3] building for TORCH_CUDA_ARCH_LIST={arch} ...", flush=True)
    build = run_build(arch, env)
    build_info = read_build_info(env)
    if build["ok"]:
        print(f"gpu-check: [2/3] CUDA tests ({'whole suite' if args.all_tests else 'pytest -k cuda'}) ...", flush=True)
        tests = run_tests(args.all_tests, env)
        print("gpu-check: [3/3] ratio table on the GPU ...", flush=True)
        ratios = run_ratios(args.rounds, env)
    else:
        tests = {"error": "not run: the build failed"}
        ratios = {"ok": False, "exit_status": None, "rows": []}
    report = build_report(probe, nvcc_version(), build, build_info, tests, ratios)
    paths = write_reports(report, args.out_dir)
    print(f"gpu-check: {report['verdict'].upper()} "
          + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in report["checks"].items()))
    print("gpu-check: please send " + " and ".join(str(p) for p in paths))
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
