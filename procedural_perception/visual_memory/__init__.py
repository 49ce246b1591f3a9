"""The visual memory: labelled embeddings in a faiss index with SQLite metadata and an audit log.

``VisualMemory`` (memory.py) is the object to use; index.py (exact faiss search, CPU/GPU),
store.py (SQLite), voting.py (voting rules), privacy.py (exact privacy audit), pruning.py (hard and
soft pruning) and attribution.py (which neighbours decided) are its parts.
"""

from procedural_perception.visual_memory.memory import VisualMemory
from procedural_perception.visual_memory.privacy import AuditReport
from procedural_perception.visual_memory.voting import RULES

__all__ = ["VisualMemory", "AuditReport", "RULES"]
