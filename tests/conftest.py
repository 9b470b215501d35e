"""Suite-wide settings.

Tests use tiny tensors, where one intra-op thread is fastest and does not oversubscribe the 2-core CI machine
(tests that train longer set their own thread count).
"""

import importlib.util
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def load_tool(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], types.ModuleType]:
    """``load_tool(name)``: the module of ``tools/<name>.py`` imported in-process (``from _cli import ...``
    needs tools/ on sys.path), so that its ``main(argv)`` runs without a subprocess importing torch again."""

    def load(name: str) -> types.ModuleType:
        monkeypatch.syspath_prepend(str(TOOLS))
        spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
