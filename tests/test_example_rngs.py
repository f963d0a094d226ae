"""Each example's pretext noise comes from its own Generator seeded by (seed, stream, position); the lazy
sequence that hands them to `make_batch` draws exactly what a list of those Generators would."""
from __future__ import annotations

from selfsup.engine.stream import ExampleRngs, example_rng


def test_lazy_generators_draw_what_eager_ones_draw():
    positions = [5, 9, 11, 40]
    lazy = ExampleRngs(3, 1, positions)
    eager = [example_rng(3, 1, k) for k in positions]
    assert len(lazy) == 4 and not lazy.made  # nothing is built until used
    for _ in range(2):  # a second pass continues each stream, as a list of Generators would
        assert [g.integers(1 << 30) for g in lazy] == [g.integers(1 << 30) for g in eager]
    assert lazy[-1] is lazy[3] and [g is h for g, h in zip(lazy[1:3], (lazy[1], lazy[2]))] == [True, True]
    assert ExampleRngs(3, 1, positions)[2].random() != ExampleRngs(3, 0, positions)[2].random()  # streams differ


def test_only_the_generators_used_are_built():
    lazy = ExampleRngs(0, 0, list(range(64)))
    for _, g in zip(range(3), lazy):
        g.random()
    assert sorted(lazy.made) == [0, 1, 2]
