"""tools/quiet_build.py, what `make build` runs: a short summary on success, the failing step and the
log's tail with a non-zero exit on failure."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import quiet_build as build  # noqa: E402

LOG = """$ python setup.py --quiet build_ext
IVAE_BUILD_PLAN {"cuda": true, "cuda_arch_list": "8.0;9.0", "sources": {".cpp": 23, ".cu": 7}}
[1/3] c++ -c a.cpp -o a.o
a.cpp:3:5: warning: unused variable 'x' [-Wunused-variable]
[2/3] nvcc -c b.cu -o b.o
[3/3] c++ -c c.cpp -o c.o
"""


def test_log_summary_counts_the_plan_the_compiled_sources_and_warnings():
    done = build.summarize_log(LOG)
    assert done["plan"]["sources"] == {".cpp": 23, ".cu": 7}
    assert done["compiled"] == 3
    assert done["warnings"] == 1


def test_an_up_to_date_build_compiled_nothing():
    assert build.summarize_log("IVAE_BUILD_PLAN {}\nninja: no work to do.\n")["compiled"] == 0


def test_summary_says_cuda_architectures_sources_and_the_log():
    info = {"compiled": True, "cpu": True, "cuda": True, "cuda_arch_list": "8.0;9.0", "cuda_version": "Build cuda_13.0", "torch_build": "2.14.1"}
    text = "\n".join(build.summary_lines(info, build.summarize_log(LOG), "build/cuda/build.log", 12.0))
    assert "CPU + CUDA kernels for architectures '8.0;9.0'" in text
    assert "sources: 30 (23 .cpp, 7 .cu); compiled now: 3" in text
    assert "full log: build/cuda/build.log" in text and "VERBOSE=1" in text
    assert len(text.splitlines()) <= 5, "the summary must stay short"


def test_summary_of_a_cpu_build():
    info = {"compiled": True, "cpu": True, "cuda": False, "torch_build": "2.14.1"}
    text = "\n".join(build.summary_lines(info, build.summarize_log('IVAE_BUILD_PLAN {"cuda": false, "sources": {".cpp": 23}}'), "build/cpu/build.log", 1.0))
    assert "CPU kernels only (no CUDA)" in text and "(all up to date)" in text


def test_first_failure_shows_the_failed_step_and_its_messages():
    log = ("[1/9] c++ -c ok.cpp\nFAILED: bad.o\n" + "c++ " + "-I/x " * 200 + "-c bad.cpp\n"
           "bad.cpp:1:1: error: 'foo' was not declared\n[2/9] c++ -c other.cpp\nninja: build stopped: subcommand failed.\n")
    excerpt = build.first_failure(log)
    assert excerpt.startswith("FAILED: bad.o")
    assert "error: 'foo' was not declared" in excerpt
    assert "other.cpp" not in excerpt, "the excerpt must stop at the next ninja step"
    assert max(len(line) for line in excerpt.splitlines()) < 320, "long compile commands are shortened"


def test_a_failed_build_exits_non_zero_with_the_error(tmp_path):
    """A deliberately missing compiler (CXX), objects in a scratch directory: the exit status is
    not 0 and the compiler's complaint is printed, not only setuptools' traceback."""
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), IVAE_FORCE_CPU="1")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "quiet_build.py"), "--build-temp", str(tmp_path / "objects")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert "BUILD FAILED" in out.stderr
    assert "no-such-c++" in out.stderr and "not found" in out.stderr, out.stderr[-2000:]
    assert (tmp_path / "objects" / "build.log").exists()
