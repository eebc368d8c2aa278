"""What was compiled: build_info() and the CUDA-build requirement CI sets."""

import os

import pytest
import torch

import ivae_ext


def test_build_info_reports_the_build():
    info = ivae_ext.build_info()
    for key in ("compiled", "cpu", "cuda", "torch_runtime"):
        assert key in info, f"build_info() lacks {key!r}: {info}"
    assert info["compiled"] is True, f"the extension did not load: {info.get('error')}"
    assert info["cpu"] is True
    assert info["torch_build"] == torch.__version__, "built against another torch than the one running"


def test_cuda_kernels_were_built_when_required():
    """CI sets IVAE_REQUIRE_CUDA_BUILD=1: a silently CPU-only build must fail it."""
    if os.environ.get("IVAE_REQUIRE_CUDA_BUILD") != "1":
        pytest.skip("IVAE_REQUIRE_CUDA_BUILD is not set")
    info = ivae_ext.build_info()
    assert info["cuda"] is True, f"CUDA kernels were required but not compiled: {info}"
    assert info["cuda_arch_list"], "a CUDA build must record its architectures"
    assert "CUDA" in torch._C._dispatch_dump("ivae_ext::expfam_kl"), "no CUDA kernel registered"


def test_forced_cpu_build_has_no_cuda_kernels():
    """IVAE_FORCE_CPU=1 at build time must give a CPU-only extension."""
    if os.environ.get("IVAE_FORCE_CPU") != "1":
        pytest.skip("IVAE_FORCE_CPU is not set")
    assert ivae_ext.build_info()["cuda"] is False
