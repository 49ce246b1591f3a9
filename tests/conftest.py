import os
import sys
from pathlib import Path

# Headless EGL must be chosen before anything imports OpenGL.
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))
