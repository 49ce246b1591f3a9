"""The interpreted ``patterns`` engine: one compiled shader whose structure comes from uniforms.

First of all, refactoring the grammar into node tables must not change a single compiled program: the
committed experiment rows were trained on them.
"""

import hashlib

import numpy as np
import pytest

from datamodules.procedural.families import patterns

# SHA-256 over (name, source, low, high) of the compiled ``patterns`` programs of seeds 0..199, computed
# once from the unmodified generator (main at fcaeed7, before the node tables); never update it by hand.
COMPILED_DIGEST = "2f441048367e1753575db49657d82d42682bf9eb5f0df51f6bd41e049705e7ab"
# Programs per block for a cpu-length run with the interpreter: 3 blocks x 20 epochs x 128 = 7,680 programs.
PER_BLOCK = 128


def test_compiled_patterns_programs_are_byte_identical_to_before_the_tables():
    digest = hashlib.sha256()
    for seed in range(200):
        program = patterns.generate(seed)
        for part in (program.name.encode(), program.source.encode(), program.low.tobytes(), program.high.tobytes()):
            digest.update(part)
    assert digest.hexdigest() == COMPILED_DIGEST


# ----------------------------------------------------------------------------- structure and source
def test_interpreted_programs_share_name_ranges_and_the_interpreter_variants():
    from datamodules.procedural.families import pattern_interpreter as pi

    sources = set()
    for seed in range(0, 3000, 7):  # every pack fits the fixed topology (the grammar's maxima)
        compiled, interpreted = patterns.generate(seed), pi.interpreted(seed)
        assert interpreted.name == compiled.name and interpreted.family == "patterns"
        assert np.array_equal(interpreted.low, compiled.low) and np.array_equal(interpreted.high, compiled.high)
        assert interpreted.num_params <= pi.MAX_PARAMS
        s = interpreted.structure
        assert s.dtype == np.int32 and s.shape == (pi.NUM_STRUCT,)
        assert 1 <= s[pi.H_PRIMS] <= pi.MAX_PRIMS and 0 <= s[pi.H_COMBS] <= pi.MAX_COMBS
        sources.add(interpreted.source)
        assert interpreted.source == pi.source(pi.variant(patterns.walk(seed)[1]))
        assert interpreted.compile_key.startswith("patterns-interpreter-") and compiled.compile_key == compiled.name
    variants = {pi.source(tuple(k for i, k in enumerate(pi.OPTIONAL_KINDS) if bits >> i & 1))
                for bits in range(2 ** len(pi.OPTIONAL_KINDS))}
    assert sources == variants and pi.SOURCE in variants, "every variant is used, and only those"
    assert len({pi.source(()), pi.SOURCE}) == 2 and "sdf_field(r, x)" not in pi.source(("warp",))


def test_the_interpreter_is_generated_from_the_node_tables():
    """Every template of every table appears in the interpreter (with parameters read at slot offsets)."""
    from datamodules.procedural.families import pattern_interpreter as pi
    from datamodules.procedural.families import pattern_nodes as nodes

    groups = [nodes.TRANSFORMS, nodes.FBM, nodes.CELL_READOUTS, nodes.SHAPES, nodes.SHAPE_OPS, nodes.SDF_MAPPINGS,
              nodes.SHAPING, nodes.COMBINATORS, nodes.COLOURS, nodes.LAYERINGS]
    for group in groups:
        for name, node in group.kinds.items():
            if node.template is None:
                continue
            head = node.template.split("{")[0]  # the function / operator the template starts with
            assert head in pi.SOURCE, f"{name}: {head!r} missing from the interpreter"
    assert len(pi.PRIMITIVE_KINDS) == len(nodes.PRIMITIVES.kinds) + 1  # fbm splits into its two variants
    assert f"case {len(pi.COMBINATOR_KINDS) - 1}:" in pi.SOURCE


def test_pack_records_what_the_grammar_chose():
    """A packed structure is the walk's record: kinds and offsets point at the compiled program's parameters."""
    from datamodules.procedural.families import pattern_interpreter as pi
    from datamodules.procedural.families import pattern_nodes as nodes

    for seed in range(40):
        program, structure = patterns.walk(seed)
        s = pi.pack(structure)
        assert s[pi.H_PRIMS] == len(structure.prims) and s[pi.H_GLOBALS] == len(structure.global_transforms)
        # Every recorded transform's parameters follow one another from its offset, as its template reads them.
        for kind, offset, integer in structure.global_transforms:
            node = nodes.TRANSFORMS.kinds[kind]
            assert offset + nodes.param_count(node.params) <= program.num_params
            assert f"P({offset})" in program.source
            if kind in ("polar", "log_polar"):
                assert 1 <= integer <= 6 and f"{integer}.0 / PI" in program.source
        for i, prim in enumerate(structure.prims):
            r = pi.PRIM_BASE + i * pi.PRIM_REC
            assert pi.PRIMITIVE_KINDS[s[r + 7]] == prim["kind"] and s[r] == len(prim["transforms"]) <= 2
            if prim["kind"] in ("fbm_grad", "fbm_value", "ridged"):
                assert 1 <= s[r + 9] <= 5 and f"{s[r + 9]}, P({s[r + 8] + 3})" in program.source


def test_unknown_engine_is_a_clear_error():
    from datamodules.procedural.blocks import BlockConfig
    from datamodules.shaders import ShaderDataModule
    from procedural_perception.core.config import ConfigError

    with pytest.raises(ConfigError, match="program_engine.*compiled, interpreted"):
        ShaderDataModule(program_engine="interpretd")
    with pytest.raises(ValueError, match="compiled, interpreted"):
        BlockConfig(program_engine="jit")


def test_other_families_stay_compiled_under_the_interpreted_engine():
    from datamodules.procedural.programs import generate_program

    weights = {"patterns": 1.0, "raymarch": 1.0, "flat": 1.0}
    for seed in range(30):
        program = generate_program(seed, weights, "interpreted")
        assert (program.structure is not None) == (program.family == "patterns")
        assert program.source == generate_program(seed, weights).source or program.family == "patterns"


# ----------------------------------------------------------------------------- many programs per run
def test_a_cpu_length_interpreted_run_sees_5000_programs_and_a_block_64():
    """The cpu profile's run length (samples_per_epoch 1536 x 20 epochs, blocks of 512) with fresh programs
    through the interpreter, counted by the data module from the block schedule (no rendering); and the
    ingredients of one block come from at least 64 distinct programs."""
    import torch

    from datamodules.procedural.blocks import BlockMaker
    from datamodules.shaders import ShaderDataModule

    dm = ShaderDataModule(batch_size=32, num_workers=1, samples_per_epoch=1536, image_size=64,
                          programs_per_block=PER_BLOCK, program_engine="interpreted", rank=0, world_size=1)
    assert dm.distinct_programs() == 0
    dm.batches_consumed = 17  # 544 samples: into the second block
    assert dm.distinct_programs() == 2 * PER_BLOCK
    dm.epoch, dm.batches_consumed = 19, 48  # the end of a 20-epoch run
    count = dm.distinct_programs()
    assert count >= 5000, f"a cpu-length run sees only {count} distinct programs"
    config = dm.config
    draws = config.pool_size // config.programs_per_block  # pool images are in slot (program) order
    maker = BlockMaker(config)  # no rendering: the ingredient draw only
    generator = torch.Generator().manual_seed(0)
    programs = torch.unique(maker.ingredient_indices(0, generator) // draws)
    assert len(programs) >= 64, f"a block's ingredients come from only {len(programs)} programs"


# ----------------------------------------------------------------------------- rendering
@pytest.mark.egl
def test_interpreting_a_seed_renders_the_compiled_image():
    """Same parameter vector, same image, within a few uint8 levels (floating-point contraction may differ);
    the seeds cover sdf shapes, cells, fbm / ridged, warps, polar maps, masks and both layerings."""
    from datamodules.procedural.families import pattern_interpreter as pi
    from datamodules.procedural.renderer import Renderer

    renderer = Renderer(32, tiles=4)
    rng = np.random.default_rng(1)
    seen = set()
    for seed in (0, 1, 4, 7, 13, 21, 42, 77):
        compiled, interpreted = patterns.generate(seed), pi.interpreted(seed)
        seen |= set(compiled.source.replace("(", " ").split()) & {"cells", "sd_star", "fbm_ridged", "kaleido", "smin"}
        params = compiled.sample_params(rng, 4)
        a, b = renderer.render(compiled, params), renderer.render(interpreted, params)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert (diff > 3).mean() < 0.01, f"seed {seed}: {(diff > 3).mean():.3%} of the pixels differ by more than 3"
    assert len(seen) >= 3, f"the sample of seeds covers too few kinds: {seen}"


@pytest.mark.egl
def test_interpreted_stream_is_the_same_whatever_workers_world_size_and_resume():
    import torch

    from datamodules.procedural.blocks import BlockConfig, BlockMaker, fresh_program_seeds
    from datamodules.procedural.stream import Layout, ProceduralStream

    config = BlockConfig(process="kml_mixup", seed=3, image_size=32, block_size=8, programs_per_block=12, reuse=4.0,
                         program_engine="interpreted")
    assert config.pool_size == 12  # one image per program: every ingredient a different program
    a, b = BlockMaker(config), BlockMaker(config)
    assert torch.equal(a(2), b(2)) and not torch.equal(a(2), a(3))
    assert a.stats.distinct_programs >= 20 and a.stats.compile_failures == 0
    # The data module counts distinct programs from this schedule without rendering: it is what was rendered.
    scheduled = {f"grammar-{s}" for block in (2, 3) for s in fresh_program_seeds(3, block, 12)}
    assert len(scheduled & a.stats.distinct) >= 20, "most rendered programs are the scheduled ones (a few replaced)"

    def digests(rank, world, worker, workers, start=0):
        stream = ProceduralStream(config, 8 * 4, shuffle_blocks=2, rank=rank, world_size=world)
        layout = Layout(rank, world, worker, workers)
        return {i: x.numpy().tobytes() for i, x in stream.indexed_samples(layout, epoch=0, start=start)}

    reference = digests(0, 1, 0, 1)
    assert sorted(reference) == list(range(32))
    split = {**digests(0, 2, 0, 2), **digests(0, 2, 1, 2), **digests(1, 2, 0, 2), **digests(1, 2, 1, 2)}
    assert split == reference, "4 slots changed the samples"
    resumed = digests(0, 1, 0, 1, start=11)
    assert len(resumed) == 32 - 11 and all(reference[i] == x for i, x in resumed.items())
