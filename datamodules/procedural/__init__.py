"""The procedural image engine: GLSL programs -> EGL renders -> processes -> a sharded, resumable stream."""
