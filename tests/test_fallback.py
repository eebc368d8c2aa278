"""Without the compiled extension, ivae_ext imports, warns once and computes with the reference."""

import subprocess
import sys
import textwrap


def test_import_without_extension_warns_once_and_falls_back():
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["ivae_ext._C"] = None  # make `from ivae_ext import _C` fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import ivae_ext
            import ivae_ext.ops
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1, messages
        assert "fall back to the pure-PyTorch reference" in messages[0] or "falls back" in messages[0], messages[0]
        import torch
        q = torch.randn(5, 3, dtype=torch.float64)
        got = ivae_ext.ops.expfam_kl(q, q.sin(), 0.0, 0.0, "laplace")
        want = ivae_ext.reference.expfam_kl(q, q.sin(), torch.tensor(0.0, dtype=torch.float64),
                                            torch.tensor(0.0, dtype=torch.float64), "laplace")
        assert torch.equal(got, want)
        assert ivae_ext.build_info()["compiled"] is False
        try:
            ivae_ext.ops.expfam_kl(q, q, q[:, :2], q, "gaussian")
        except ValueError as error:
            assert "p_loc must be broadcastable" in str(error)
        else:
            raise AssertionError("the fallback must check arguments too")
        x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
        assert torch.equal(ivae_ext.ops.imq_mmd(x, y), ivae_ext.reference.imq_mmd(x, y))
        try:
            ivae_ext.ops.imq_mmd(x[:1], y)
        except ValueError as error:
            assert "x must hold at least two samples" in str(error)
        else:
            raise AssertionError("the imq_mmd fallback must check arguments too")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
