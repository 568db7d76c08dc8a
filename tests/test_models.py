"""Model loading: the embedded default offline, fingerprints, and clear errors."""

from __future__ import annotations

import pytest

from truthprobe.models import ModelError, load_model


def test_default_model_fingerprint(gemma_fp32):
    fp = gemma_fp32.fingerprint
    assert fp.name == "default" and fp.quantization == "none" and fp.dtype == "float32"
    assert fp.revision.startswith("gguf-sha256:a5fd3b62")
    assert gemma_fp32.n_layers == 18 and gemma_fp32.d_model == 640


def test_unknown_model_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(ModelError, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


@pytest.mark.real_model
def test_local_path_loads_with_content_fingerprint():
    from truthprobe.models import convert_default_model

    loaded = load_model(str(convert_default_model()), dtype="bfloat16")
    assert loaded.fingerprint.dtype == "bfloat16"
    assert loaded.fingerprint.revision.startswith("gguf-sha256:")


@pytest.mark.parametrize("chosen", [None, "512"])
def test_import_caps_the_kernel_cache_unless_the_user_chose(chosen):
    """oneDNN's kernel cache (1024 entries by default) grew resident memory part after part;
    `import truthprobe` caps it at `memory.KERNEL_CACHE` before any kernel runs, and keeps a
    size the user set."""
    import os
    import subprocess
    import sys

    from truthprobe.memory import KERNEL_CACHE

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if chosen:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = chosen
    code = "import os, truthprobe; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (chosen or str(KERNEL_CACHE))
