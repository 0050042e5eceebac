import numpy as np
import pytest

from ishcount.image import FishImage


def test_channels_must_share_shape():
    with pytest.raises(ValueError, match="cep17 has shape"):
        FishImage(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 5)), spacing_um=(1, 1))


def test_spacing_must_fit_dimensions():
    with pytest.raises(ValueError, match="spacing_um"):
        FishImage(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), None, spacing_um=(0.1, 0.1))
    with pytest.raises(ValueError, match="spacing_um"):
        FishImage(np.zeros((4, 4)), np.zeros((4, 4)), None, spacing_um=(0.1, -1))


def test_wrong_dimensionality_is_rejected():
    with pytest.raises(ValueError, match="dapi must be 2D"):
        FishImage(np.zeros(4), np.zeros(4), None, spacing_um=(1,))


def test_channel_lookup_by_name():
    img = FishImage(np.zeros((3, 3)), np.ones((3, 3)), None, spacing_um=(0.2, 0.2))
    assert img.channel("her2").sum() == 9
    assert img.channel_names == ("dapi", "her2")
    with pytest.raises(ValueError, match="'red'"):
        img.channel("red")
