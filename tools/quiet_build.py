"""Builds ivae_ext._C in place and prints a short summary instead of every compiler command.

Usage (what `make build` runs): python tools/quiet_build.py --build-temp build/cpu [--verbose]

The whole output of `setup.py build_ext` (every compiler command, warning and error) goes to
<build-temp>/build.log; --verbose (VERBOSE=1 make build) also shows it as it comes. On failure the
log's last lines are printed and the exit status is non-zero. On success a fresh interpreter
imports the result and the summary says what it contains (ivae_ext.build_info()).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN_PREFIX = "IVAE_BUILD_PLAN "  # the line setup.py prints: what it is about to compile
TAIL_LINES = 40


def run_logged(command, log_path: Path, verbose: bool, env=None) -> int:
    """Runs `command` in ROOT with stdout and stderr into log_path (and to our stdout if verbose)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in process.stdout:
            log.write(line)
            if verbose:
                sys.stdout.write(line)
                sys.stdout.flush()
        return process.wait()


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    with open(path, errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def first_failure(text: str, max_lines: int = 30, max_width: int = 300) -> str:
    """The first failed ninja step (its command shortened, then the compiler's messages): the
    log's tail is only setuptools' traceback when a compiler fails."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("FAILED: ")), None)
    if start is None:
        return ""
    block = []
    for line in lines[start : start + max_lines]:
        if block and (line.startswith(("FAILED: ", "ninja: build stopped")) or re.match(r"\[\d+/\d+\] ", line)):
            break
        block.append(line if len(line) <= max_width else line[:max_width] + " ...")
    return "\n".join(block) + "\n"


def summarize_log(text: str) -> dict:
    """What the log says was done: the build plan setup.py printed, how many sources ninja compiled
    (0 when everything was up to date) and how many compiler warnings there were."""
    plan = {}
    for line in text.splitlines():
        if line.startswith(PLAN_PREFIX):
            plan = json.loads(line[len(PLAN_PREFIX):])
    steps = [int(m.group(1)) for m in re.finditer(r"^\[\d+/(\d+)\] ", text, flags=re.M)]
    return {
        "plan": plan,
        "compiled": max(steps) if steps else 0,
        "warnings": len(re.findall(r"\bwarning\b[:(#]", text, flags=re.I)),
    }


def build_info_of_result(env=None) -> dict:
    """ivae_ext.build_info() read by a fresh interpreter (this one has not loaded the new _C)."""
    code = "import json, ivae_ext; print(json.dumps(ivae_ext.build_info()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"compiled": False, "error": out.stderr.strip().splitlines()[-1:] or ["import failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary_lines(info: dict, done: dict, log_path: str, seconds: float) -> list[str]:
    """The few lines `make build` prints."""
    plan = done["plan"]
    sources = plan.get("sources", {})
    counted = ", ".join(f"{n} {kind}" for kind, n in sources.items()) or "unknown"
    total = sum(sources.values())
    if info.get("cuda"):
        kind = f"CPU + CUDA kernels for architectures {info.get('cuda_arch_list') or plan.get('cuda_arch_list')!r} ({info.get('cuda_version', '')})"
    else:
        kind = "CPU kernels only (no CUDA)"
    compiled = done["compiled"]
    lines = [
        f"ivae_ext: built {kind}",
        f"  sources: {total} ({counted}); compiled now: {compiled}"
        + ("" if compiled else " (all up to date)")
        + f"; compiler warnings: {done['warnings']}; {seconds:.0f} s",
        f"  torch {info.get('torch_build', '?')}; loads: {'yes' if info.get('compiled') else 'NO: ' + str(info.get('error'))}",
        f"  full log: {log_path}   (VERBOSE=1 make build shows every command)",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-temp", required=True, help="object directory, e.g. build/cpu; the log goes there")
    parser.add_argument("--verbose", action="store_true", help="also print the whole build output as it comes")
    args = parser.parse_args(argv)
    log_path = Path(args.build_temp) / "build.log"
    shown = os.path.relpath(ROOT / log_path, Path.cwd()) if not log_path.is_absolute() else str(log_path)
    command = [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace", "--force", "--build-temp", args.build_temp]
    print(f"ivae_ext: compiling (log: {shown}) ...", flush=True)
    start = time.monotonic()
    # unbuffered: setup.py's own lines then land in the log in order with the compiler's
    status = run_logged(command, ROOT / log_path, args.verbose, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seconds = time.monotonic() - start
    if status != 0:
        if not args.verbose:
            failed_step = first_failure((ROOT / log_path).read_text(errors="replace"))
            if failed_step:
                print(f"--- the first failed compile step in {shown} ---", file=sys.stderr)
                sys.stderr.write(failed_step)
            print(f"--- last {10 if failed_step else TAIL_LINES} lines of {shown} ---", file=sys.stderr)
            sys.stderr.write(tail(ROOT / log_path, 10 if failed_step else TAIL_LINES))
        print(f"ivae_ext: BUILD FAILED (setup.py exit status {status}); full log: {shown}", file=sys.stderr)
        return status
    info = build_info_of_result()
    print("\n".join(summary_lines(info, summarize_log((ROOT / log_path).read_text(errors="replace")), shown, seconds)))
    if not info.get("compiled"):
        print("ivae_ext: the built extension does not import; see the error above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
