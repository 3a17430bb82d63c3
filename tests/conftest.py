import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_llava():
    from prunebench.models import load_model

    return load_model("tiny-llava")


@pytest.fixture(scope="session")
def samples():
    from prunebench.conformance import synthetic_samples

    return synthetic_samples()
