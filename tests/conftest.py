"""Shared test settings: fixture paths and fresh, reported random seeds."""
from __future__ import annotations

import os
import pathlib
import random

import pytest
import torch

# Triton kernels run on CPU tensors through its interpreter when no GPU is present; this must be set
# before triton decorates any kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> pathlib.Path:
    return DATA


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test (printed on failure), so tests draw new random inputs each run."""
    value = int(os.environ.get("MMTOK_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    random.seed(value)
    print(f"seed={value} (rerun with MMTOK_TEST_SEED={value})")
    return value
