"""Tests of the z-stack projections of :func:`ishcount.segment.project_stack`."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy import ndimage as ndi

from ishcount.segment import project_stack, segment_nuclei

STACK_SPACING_UM = (0.4, 0.1, 0.1)


def textured(mask: np.ndarray, rng: np.random.Generator, level: float = 1000.0) -> np.ndarray:
    """A nucleus-like object: ``mask`` filled with smooth chromatin texture around ``level``."""
    texture = ndi.gaussian_filter(rng.standard_normal(mask.shape), 2.5)
    return level * mask * np.clip(1 + 0.3 * texture / texture.std(), 0, None)


def defocus_stack(
    objects: list[np.ndarray], depths: list[int], n_z: int, blur_px_per_plane: float
) -> np.ndarray:
    """Each object sharp at its depth, blurred and dimmer with the distance in planes."""
    stack = np.zeros((n_z, *objects[0].shape))
    for image, depth in zip(objects, depths, strict=True):
        for z in range(n_z):
            dz = abs(z - depth)
            stack[z] += ndi.gaussian_filter(image, 1.0 + blur_px_per_plane * dz) / (1 + 0.4 * dz)
    return stack


def two_halves_stack(seed: int, gap_px: int = 10) -> tuple[np.ndarray, slice]:
    """Two D-shaped nuclei (the halves of an ellipse, ``gap_px`` apart) at planes 1 and 3 of 5.

    Their union is nearly convex, so only a dark gap between them can separate them. Returns
    the noisy stack and the columns of the gap.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :200]
    ellipse = ((yy - 80) / 60.0) ** 2 + ((xx - 100) / 50.0) ** 2 < 1
    left = ellipse & (xx < 100 - gap_px // 2)
    right = ellipse & (xx >= 100 + gap_px // 2)
    nuclei = [textured(left, rng), textured(right, rng)]
    stack = defocus_stack(nuclei, [1, 3], n_z=5, blur_px_per_plane=5.0)
    stack += 100 + rng.normal(0, 10, stack.shape)
    return stack, slice(100 - gap_px // 2, 100 + gap_px // 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focus_separates_nuclei_that_max_merges(seed):
    stack, _ = two_halves_stack(seed)
    merged = segment_nuclei(stack, spacing_um=STACK_SPACING_UM, projection="max")
    separated = segment_nuclei(stack, spacing_um=STACK_SPACING_UM, projection="focus")
    assert merged.max() == 1  # the halo of each nucleus fills the gap in the maximum
    assert separated.max() == 2
    left_label, right_label = separated[80, 70], separated[80, 130]
    assert {int(left_label), int(right_label)} == {1, 2}


def test_focus_keeps_the_gap_between_nuclei_as_dark_as_in_focus():
    stack, gap = two_halves_stack(0)
    rows, background = slice(40, 120), 100.0
    focus, maximum = project_stack(stack, "focus"), project_stack(stack, "max")
    nucleus = focus[rows, 60:80].mean() - background
    gap_focus = focus[rows, gap].mean() - background
    gap_in_focus_planes = max(stack[z][rows, gap].mean() - background for z in (1, 3))
    assert gap_focus < 0.3 * nucleus
    assert gap_focus < 1.2 * gap_in_focus_planes
    assert maximum[rows, gap].mean() - background > 1.4 * gap_focus


def test_focus_copies_each_tile_from_its_sharpest_plane():
    rng = np.random.default_rng(3)
    xx = np.mgrid[:96, :128][1]
    left, right = textured(xx < 64, rng), textured(xx >= 64, rng)
    stack = defocus_stack([left, right], [0, 2], n_z=3, blur_px_per_plane=3.0).astype(np.float32)
    focus = project_stack(stack, "focus")
    np.testing.assert_array_equal(focus[:, :48], stack[0, :, :48])
    np.testing.assert_array_equal(focus[:, 80:], stack[2, :, 80:])


def test_focus_takes_every_pixel_from_one_plane_on_any_shape():
    stack = np.random.default_rng(4).uniform(0, 4000, (4, 37, 53))  # no ties between planes
    focus = project_stack(stack, "focus")
    assert focus.shape == (37, 53)
    assert focus.dtype == np.float32
    from_plane = stack.astype(np.float32) == focus[None]
    assert (from_plane.sum(axis=0) == 1).all()
    # the choice is made per 8 x 8 tile: each tile (edge tiles cropped) has a single plane
    plane = from_plane.argmax(axis=0)
    for y0 in range(0, 37, 8):
        for x0 in range(0, 53, 8):
            assert np.unique(plane[y0 : y0 + 8, x0 : x0 + 8]).size == 1


def test_focus_does_not_raise_the_background_of_noisy_planes():
    rng = np.random.default_rng(5)
    stack = rng.normal(200.0, 10.0, (9, 128, 128)).astype(np.float32)
    assert abs(project_stack(stack, "focus").mean() - 200.0) < 1.0
    assert project_stack(stack, "max").mean() - 200.0 > 10.0  # about 1.5 noise sigma


def test_focus_on_degenerate_stacks():
    plane = np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(project_stack(plane[None], "focus"), plane)
    constant = np.full((3, 5, 6), 7.0)
    np.testing.assert_array_equal(project_stack(constant, "focus"), np.full((5, 6), 7.0))
    with_nan = np.stack([plane, np.full_like(plane, np.nan)])
    assert np.isfinite(project_stack(with_nan, "focus")).all()


@pytest.mark.parametrize("method", ["max", "mean", "focus"])
def test_2d_input_is_returned_unchanged(method):
    image = np.random.default_rng(6).integers(0, 4000, (40, 50)).astype(np.uint16)
    out = project_stack(image, method)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_2d_segmentation_does_not_depend_on_the_projection():
    stack, _ = two_halves_stack(0)
    plane = stack[1]
    by_focus = segment_nuclei(plane, spacing_um=(0.1, 0.1), projection="focus")
    by_max = segment_nuclei(plane, spacing_um=(0.1, 0.1), projection="max")
    np.testing.assert_array_equal(by_focus, by_max)
    assert by_focus.max() >= 1


def test_segment_nuclei_projects_stacks_by_focus_by_default():
    default = inspect.signature(segment_nuclei).parameters["projection"].default
    assert default == "focus"
    stack, _ = two_halves_stack(1)
    assert segment_nuclei(stack, spacing_um=STACK_SPACING_UM).max() == 2


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match=r"focus.*got 'median'"):
        project_stack(np.zeros((2, 4, 4)), "median")
