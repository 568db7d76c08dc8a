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
