"""Real photos for the face pipeline tests (no network: scikit-image and matplotlib ship them)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image



@pytest.fixture(scope="session", autouse=True)
def _models_present(face_models):
    """Every test here runs the real models (tests/conftest.py's face_models says how to fetch them)."""
    return face_models


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512, one frontal face


@pytest.fixture(scope="session")
def grace() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:  # 512x600 portrait
        return np.asarray(Image.open(fh).convert("RGB"))


@pytest.fixture(scope="session")
def cat() -> np.ndarray:
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()
