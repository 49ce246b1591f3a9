"""The interpreted ``patterns`` engine: one compiled shader whose structure comes from uniforms.

First of all, refactoring the grammar into node tables must not change a single compiled program: the
committed experiment rows were trained on them.
"""

import hashlib

from datamodules.procedural.families import patterns

# SHA-256 over (name, source, low, high) of the compiled ``patterns`` programs of seeds 0..199, computed
# once from the unmodified generator (main at fcaeed7, before the node tables); never update it by hand.
COMPILED_DIGEST = "2f441048367e1753575db49657d82d42682bf9eb5f0df51f6bd41e049705e7ab"


def test_compiled_patterns_programs_are_byte_identical_to_before_the_tables():
    digest = hashlib.sha256()
    for seed in range(200):
        program = patterns.generate(seed)
        for part in (program.name.encode(), program.source.encode(), program.low.tobytes(), program.high.tobytes()):
            digest.update(part)
    assert digest.hexdigest() == COMPILED_DIGEST
