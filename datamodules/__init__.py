"""Data: the procedural image stream (``shaders``, ``procedural/``) and the labelled real images."""
