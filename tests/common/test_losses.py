"""The objective and the optimizer, checked against their plain definitions."""
import numpy as np

from common.contract import losses as L, spec as S


def test_binary_divergence_is_the_cross_entropy_and_stable():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 3, 50), rng.random(50)
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(L.binary_divergence(x, y), np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p)), rtol=1e-12)
    assert np.isfinite(L.binary_divergence(np.array([1000.0, -1000.0]), np.array([0.0, 1.0])))
    np.testing.assert_allclose(L.l1(x, y), np.mean(np.abs(p - y)), rtol=1e-12)


def test_guide_follows_the_formula_and_is_masked():
    w = L.guide(np.array([4, 2]), np.array([3, 5]), 4, 5, 0.2)
    assert w.shape == (2, 4, 5)
    assert w[0, 1, 2] == np.float32(1 - np.exp(-((1 / 4 - 2 / 3) ** 2) / (2 * 0.04)))
    assert np.all(w[0, :, 3:] == 0) and np.all(w[1, 2:, :] == 0)
    assert w[0, 0, 0] == 0 and w[0, 3, 0] > 0.9  # diagonal is free, far off it costs ~1
    mask = L.guide_mask(np.array([4, 2]), np.array([3, 5]), 4, 5)
    assert mask.sum() == 4 * 3 + 2 * 5
    a = np.full((2, 4, 5), 0.25)
    assert np.isclose(L.attention_loss(a, w, mask.sum()), (a * w).sum() / 22)


def test_learning_rate_schedules():
    assert L.learning_rate(S.get_spec("paper"), 1) == L.learning_rate(S.get_spec("paper"), 10**6) == 2e-4
    c = S.get_spec("community")
    assert np.isclose(L.learning_rate(c, 4000), 1e-3)  # peak at the end of warm-up
    assert L.learning_rate(c, 100) < L.learning_rate(c, 4000) and np.isclose(L.learning_rate(c, 16000), 5e-4)


def test_adam_update_first_step_moves_each_weight_by_lr():
    s = S.get_spec("paper")
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -0.1, 4.0])
    p1, m, v = L.adam_update(p, g, np.zeros(3), np.zeros(3), 1, s)
    # step 1: m_hat = g, v_hat = g^2, so the move is lr * g / (|g| + eps)
    np.testing.assert_allclose(p1, p - 2e-4 * g / (np.abs(g) + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(m, 0.5 * g)
    np.testing.assert_allclose(v, 0.1 * g * g)


def test_adam_clips_gradients_by_value():
    c = S.get_spec("community")
    _, m, v = L.adam_update(np.zeros(2), np.array([5.0, -0.5]), np.zeros(2), np.zeros(2), 1, c)
    np.testing.assert_allclose(m, 0.1 * np.array([1.0, -0.5]))
