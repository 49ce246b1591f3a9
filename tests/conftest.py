import os
import sys
from pathlib import Path

# Headless EGL must be chosen before anything imports OpenGL.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))


import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """The engine runs in single-threaded DataLoader workers; a shared, loaded machine makes threads costly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
