"""Test-session setup."""

import os
import tempfile

# A fresh torch.compile cache per session: inductor's on-disk cache does not key on a custom
# op's fake kernel, so code compiled against an earlier build of the ops could be reused.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ivae_ext_inductor_")
