"""The official-package proposer: only its clear refusals can run on a CPU-only host."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from annotator.backends import MaskProposer, resolve_backend
from annotator.errors import ModelLoadError
from annotator.miners.sam3_native import NativeSam3Proposer


def test_registered_and_satisfies_the_protocol() -> None:
    assert resolve_backend("proposer", "sam3-native") is NativeSam3Proposer
    assert isinstance(NativeSam3Proposer("facebook/sam3"), MaskProposer)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cpu_host_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelLoadError) as caught, NativeSam3Proposer("facebook/sam3", device="cpu"):
        pass
    message = str(caught.value)
    assert "needs a CUDA GPU" in message
    assert "'sam3' proposer" in message  # the backend that works here


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real_import = importlib.import_module

    def without_sam3(name: str, package: str | None = None) -> object:
        if name == "sam3" or name.startswith("sam3."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", without_sam3)
    with pytest.raises(ModelLoadError, match=r"pip install 'annotator\[sam3\]'"):
        NativeSam3Proposer("facebook/sam3").load()


def test_model_version_of_a_local_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "sam3.pt").write_bytes(b"not really weights")
    version = NativeSam3Proposer(str(tmp_path / "sam3.pt")).model_version
    name, _, digest = version.partition("@")
    assert name == tmp_path.name and len(digest) == 8
