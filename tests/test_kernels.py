"""Fused cross-attention kernel: build, reference vs torch, launch planning, GPU parity, TensorRT plugin."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avss_sdk.modeling.attention import fused_cross_attention, key_padding_to_additive
from kernels import build, launcher
from kernels.reference import fused_cross_attention_reference

ENTRY_POINTS = [f"fca_{kind}_{t}_d{d}" for kind in ("short", "long", "trt")
                for t in ("f16", "f32") for d in (32, 64, 128)]


def _nvcc() -> str | None:
    try:
        return build.find_nvcc()
    except build.BuildError:
        return None


# ---------------------------------------------------------------- build


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")
def test_build_oldest_and_newest_targets(tmp_path):
    """The oldest and the newest architecture of --all compile, with the PTX of the oldest.

    The kernel has no per-architecture code paths, so the two ends stand for the seven
    between them (all nine take about 2 minutes on 2 cores, two take a fifth of that)."""
    known = build.supported_archs(build.find_nvcc())
    expected = [a for a in build.ALL_ARCHS if a in known]
    assert set(expected) >= {75, 80, 86, 87, 89, 90}
    ends = [str(expected[0]), str(expected[-1])]
    assert build.main(["--arch", ends[0], "--arch", ends[1], "--out", str(tmp_path),
                       "-j", str(os.cpu_count() or 2)]) == 0
    fatbin = tmp_path / build.FATBIN_NAME
    ptx = (tmp_path / build.PTX_NAME).read_text()
    assert fatbin.stat().st_size > 0
    assert ".target sm_75" in ptx
    entries = set(re.findall(r"\.visible \.entry (\w+)\(", ptx))
    assert entries == set(ENTRY_POINTS)


def test_build_reports_missing_nvcc(tmp_path, capsys):
    assert build.main(["--arch", "80", "--out", str(tmp_path), "--nvcc", str(tmp_path / "nvcc")]) == 1
    assert "nvcc not found" in capsys.readouterr().err


def test_build_help_mentions_targets(capsys):
    with pytest.raises(SystemExit):
        build.main(["--help"])
    out = capsys.readouterr().out
    assert "--all" in out and "--nvcc" in out and "sm_120" in out


# ---------------------------------------------------------------- reference vs torch

SHAPES = [  # B, H, Lq, Lk, D
    (1, 4, 37, 11, 32),     # VTA-like, few keys
    (2, 2, 5, 101, 64),     # few queries
    (1, 8, 16, 300, 32),    # decoder-like
    (2, 1, 33, 1, 128),     # single key
]


def _inputs(shape, seed=0):
    b, h, lq, lk, d = shape
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, h, lq, d)), rng.standard_normal((b, h, lk, d)),
            rng.standard_normal((b, h, lk, d)))


def _masks(shape, seed=0):
    """(name, additive mask or None, key padding mask or None, rows all masked [B, H, Lq])."""
    b, h, lq, lk, _ = shape
    rng = np.random.default_rng(seed + 1)
    none = np.zeros((b, h, lq), bool)
    bias = rng.standard_normal((1, h, lq, lk))
    holes = np.where(rng.random((b, 1, 1, lk)) < 0.3, -np.inf, 0.0)
    holes[..., 0] = 0.0
    rows = np.zeros((b, 1, lq, lk))
    rows[:, :, ::3, :] = -np.inf
    kpm = rng.random((b, lk)) < 0.3
    kpm[:, 0] = False
    kpm_all = kpm.copy()
    kpm_all[-1, :] = True
    all_rows = none.copy()
    all_rows[:, :, ::3] = True
    kpm_rows = none.copy()
    kpm_rows[-1] = True
    return [
        ("none", None, None, none),
        ("bias[1,H,Lq,Lk]", bias, None, none),
        ("keys[B,1,1,Lk]", holes, None, none),
        ("rows-all-masked", rows, None, all_rows),
        ("lk-only[Lk]", np.where(np.arange(lk) % 2 == 1, -np.inf, 0.0), None, none),
        ("key-padding", None, kpm, none),
        ("key-padding-all", bias, kpm_all, kpm_rows),
    ]


def _combined_additive(mask, kpm, shape):
    b, h, lq, lk, _ = shape
    total = np.zeros((b, h, lq, lk))
    if mask is not None:
        total = total + mask
    if kpm is not None:
        total = total + np.where(kpm, -np.inf, 0.0)[:, None, None, :]
    return total


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_reference_matches_torch_and_sdpa(shape):
    q, k, v = _inputs(shape)
    for name, mask, kpm, all_masked in _masks(shape):
        ref = fused_cross_attention_reference(q, k, v, mask, kpm)
        assert not np.isnan(ref).any(), name
        assert np.all(ref[all_masked] == 0), name
        tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
        tmask = None
        if mask is not None or kpm is not None:
            tmask = torch.from_numpy(_combined_additive(mask, kpm, shape))
        if kpm is not None and mask is None:
            tmask = key_padding_to_additive(torch.from_numpy(kpm), torch.float64)
        ours = fused_cross_attention(tq, tk, tv, tmask).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-10, err_msg=name)
        sdpa = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask).numpy()
        np.testing.assert_allclose(sdpa[~all_masked], ref[~all_masked], atol=1e-10, err_msg=name)


def test_reference_custom_scale_and_float32():
    q, k, v = (x.astype(np.float32) for x in _inputs((1, 2, 7, 9, 32)))
    ref = fused_cross_attention_reference(q, k, v, scale=0.3)
    ours = fused_cross_attention(*(torch.from_numpy(x) for x in (q, k, v)), scale=0.3).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_torch_rejects_boolean_mask():
    q = torch.zeros(1, 1, 2, 32)
    with pytest.raises(TypeError, match="key_padding_to_additive"):
        fused_cross_attention(q, q, q, torch.zeros(1, 2, dtype=torch.bool))


# ---------------------------------------------------------------- launch planning (no GPU)


def test_short_path_capacity_matches_kernel_formula():
    # fp16 D=64: Q tile 32x64 fp32 = 8 KiB; a key = (32 + 1) words of K + 128 B of V.
    assert launcher.short_path_capacity(64, 2) == (48 * 1024 - 8192) // 260 // 32 * 32
    for d in launcher.HEAD_DIMS:
        for size in (2, 4):
            assert launcher.short_path_capacity(d, size) >= 32


def test_plan_short_for_vta_and_long_split_for_decoder():
    vta = launcher.plan_launch(1, 8, 1600, 11, 64, 2, num_sms=132)
    assert vta.path == "short" and vta.grid == (50, 8, 1) and vta.splits == 1
    big_vocab = launcher.plan_launch(1, 8, 1600, 257, 64, 2, num_sms=132)
    assert big_vocab.path == "long" and big_vocab.splits == 1  # 400 blocks already
    dec = launcher.plan_launch(1, 8, 32, 6400, 64, 2, num_sms=132)
    assert dec.path == "long" and dec.splits > 1
    assert (dec.splits - 1) * dec.tiles_per_split < 200 <= dec.splits * dec.tiles_per_split
    assert dec.tiles_per_split >= launcher.MIN_TILES_PER_SPLIT
    assert dec.workspace_bytes(1, 8, 32, 64) == 4 * dec.splits * 8 * 32 * 66
    assert dec.counters == dec.grid[0] * dec.grid[1] == 8
    orin = launcher.plan_launch(1, 8, 32, 1600, 64, 2, num_sms=16)
    assert orin.splits * orin.tiles_per_split >= 50


def test_plan_rejects_unsupported_head_dim():
    with pytest.raises(ValueError, match="head dim"):
        launcher.plan_launch(1, 1, 4, 4, 48, 2, num_sms=1)


def test_mask_layout_strides():
    m, strides = launcher.mask_layout(np.zeros((3, 1, 7), np.float16), (2, 3, 5, 7))
    assert m.shape == (1, 3, 1, 7) and strides == (0, 7, 0, 1)
    with pytest.raises(ValueError, match="broadcast"):
        launcher.mask_layout(np.zeros((4, 7)), (1, 1, 5, 7))


def test_launcher_imports_without_gpu_and_fails_clearly():
    ok, why = launcher.gpu_available()
    assert isinstance(why, str) and why
    if ok:
        pytest.skip(f"a GPU is present ({why})")
    q = np.zeros((1, 1, 4, 32), np.float32)
    with pytest.raises(launcher.CudaUnavailableError, match="cannot launch"):
        launcher.fused_cross_attention_numpy(q, q, q)


# ---------------------------------------------------------------- GPU parity

_GPU_OK, _GPU_WHY = launcher.gpu_available()
gpu = pytest.mark.skipif(not _GPU_OK, reason=f"no usable CUDA GPU: {_GPU_WHY}")


@pytest.fixture(scope="module")
def gpu_kernel(tmp_path_factory):
    """Kernel built for this GPU with the local nvcc (kernels/build/ is not reused)."""
    if _nvcc() is None:
        pytest.skip("nvcc not found: cannot build the kernel for this GPU")
    out = tmp_path_factory.mktemp("fca")
    paths = build.build([build.local_arch()], out)
    kernel = launcher.FusedCrossAttentionKernel(paths["fatbin"])
    launcher._KERNEL = kernel
    return kernel


GPU_SHAPES = [  # B, H, Lq, Lk, D: short and long paths, ragged tiles, tiny Lq (split keys)
    (1, 4, 1600, 11, 32), (1, 8, 100, 101, 64), (2, 3, 45, 257, 64), (1, 8, 32, 1600, 64),
    (1, 4, 17, 6400, 32), (1, 2, 3, 77, 128), (2, 2, 70, 33, 128), (1, 1, 1, 1, 32),
    (1, 8, 16, 4099, 128),
]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference(gpu_kernel, shape, dtype):
    q, k, v = (x.astype(dtype) for x in _inputs(shape))
    atol = 2e-3 if dtype == np.float16 else 2e-5
    for name, mask, kpm, all_masked in _masks(shape):
        m = None if mask is None else mask.astype(dtype)
        ref = fused_cross_attention_reference(q, k, v, m, kpm)
        out = launcher.fused_cross_attention_numpy(q, k, v, m, kpm)
        assert out.dtype == dtype
        assert not np.isnan(out).any(), name
        assert np.all(out[all_masked] == 0), name
        np.testing.assert_allclose(out.astype(np.float64), ref, atol=atol, rtol=1e-2, err_msg=name)
    # Split-K counters are reset by the kernel: a second launch gives the same answer.
    again = launcher.fused_cross_attention_numpy(q, k, v)
    np.testing.assert_array_equal(again, launcher.fused_cross_attention_numpy(q, k, v))
