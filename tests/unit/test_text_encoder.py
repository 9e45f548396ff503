"""The MiniLM text encoder from the installed package: shape, determinism, semantics."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.text import MiniLMTextEncoder


@pytest.fixture(scope="module")
def encoder(minilm: MiniLMTextEncoder) -> MiniLMTextEncoder:
    return minilm


def test_shape_and_unit_length(encoder) -> None:
    vectors = encoder.encode(["a jazz piano trio", "football tactics", "sourdough bread"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_deterministic_and_independent_of_batch(encoder) -> None:
    alone = encoder.encode(["Voyage to the outer planets"])
    batched = encoder.encode(["something else entirely", "Voyage to the outer planets"])
    assert np.allclose(alone[0], batched[1], atol=1e-5)
    assert np.array_equal(alone, encoder.encode(["Voyage to the outer planets"]))


def test_similar_texts_are_closer_than_dissimilar(encoder) -> None:
    rocket, spaceship, bread = encoder.encode(
        ["a rocket flies to Mars", "a spaceship travels to the red planet", "how to bake bread"]
    )
    assert rocket @ spaceship > rocket @ bread + 0.2
