import numpy as np

from worldloom.models.text_embedder import DIM, shared_text_embedder


def test_embeddings_are_unit_length_and_semantic():
    emb = shared_text_embedder()
    texts = [
        "a robot arm puts the pot in the sink",
        "the robot places a pot into the sink",
        "a dragon flies over snowy mountains",
    ]
    v = emb.encode(texts)
    assert v.shape == (3, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    sim = v @ v.T
    assert sim[0, 1] > 0.7 > sim[0, 2]
    assert emb.encode([]).shape == (0, DIM)
