"""The quality estimators the error-versus-discard figure compares with the magnitude: SER-FIQ and sharpness."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import pdist

from harness.measures.quality_estimators import agreement, laplacian_sharpness, serfiq
from harness.models import build_backbone


def test_serfiq_score_is_the_mean_pairwise_distance_through_a_sigmoid():
    emb = torch.randn(3, 6, 4, dtype=torch.float64)
    unit = emb / emb.norm(dim=2, keepdim=True)
    expected = [2 / (1 + np.exp(pdist(u.numpy()).mean())) for u in unit]
    np.testing.assert_allclose(agreement(emb).numpy(), expected, rtol=1e-10)
    assert agreement(emb[:, :1].repeat(1, 5, 1)).tolist() == pytest.approx([1.0] * 3)   # identical passes: 1


def test_serfiq_on_a_network_is_seeded_bounded_and_falls_with_more_dropout():
    torch.manual_seed(0)
    net = build_backbone("small_cnn", 16, 16, 0.0, 8)
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    q = serfiq(net, images, passes=20, batch_size=4)
    assert q.shape == (10,) and np.all((q > 0) & (q <= 1))
    np.testing.assert_array_equal(q, serfiq(net, images, passes=20, batch_size=4))
    assert np.all(serfiq(net, images, passes=20, p=0.05) > serfiq(net, images, passes=20, p=0.8))
    with pytest.raises(ValueError, match="passes=1"):
        serfiq(net, images, passes=1)
    with pytest.raises(ValueError, match="lacks"):
        serfiq(torch.nn.Linear(3, 3), images)


def test_sharpness_falls_with_blur_and_is_zero_on_a_flat_image():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    blurred = ndimage.gaussian_filter(sharp.astype(float), sigma=(0, 1.5, 1.5, 0)).round().astype(np.uint8)
    assert laplacian_sharpness(blurred)[0] < 0.2 * laplacian_sharpness(sharp)[0]
    assert laplacian_sharpness(np.full((2, 8, 8, 3), 77, np.uint8)).tolist() == [0.0, 0.0]
