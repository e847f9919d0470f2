"""Video-VAE v2 chunking rules on a tiny VAE at 16x16 pixels (1x1 latents), so every test is fast."""

import pytest
import torch

from model.presets import get_preset
from model.vae import (
    VideoVAE,
    check_video_size,
    latent_frames,
    mix_chunk_borders,
    pixel_shuffle_3d,
    pixel_unshuffle_3d,
    snap_video_size,
)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = VideoVAE(get_preset("tiny").vae)
    model.init_weights()
    return model.eval()


def _video(T, H=16, W=16, seed=0):
    return torch.rand(1, T, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_round_trip_17_to_3_to_17(vae):
    z = vae.encode(_video(17), sample=False)
    assert z.shape == (1, 3, 4, 1, 1)
    assert vae.decode(z).shape == (1, 17, 3, 16, 16)


@torch.no_grad()
def test_round_trip_204_to_36_to_204(vae):
    z = vae.encode(_video(204), sample=False, chunks_per_batch=None)
    assert z.shape == (1, 36, 4, 1, 1)
    assert vae.decode(z, chunks_per_batch=None).shape == (1, 204, 3, 16, 16)


@torch.no_grad()
def test_single_frame_image(vae):
    z = vae.encode(_video(1, 32, 48), sample=False)
    assert z.shape == (1, 1, 4, 2, 3)
    assert vae.decode(z).shape == (1, 1, 3, 32, 48)


@torch.no_grad()
def test_encode_chunks_are_independent(vae):
    video = _video(34)
    both = vae.encode(video, sample=False, chunks_per_batch=None)
    first = vae.encode(video[:, :17], sample=False)
    second = vae.encode(video[:, 17:], sample=False)
    torch.testing.assert_close(both, torch.cat([first, second], dim=1))


@torch.no_grad()
def test_decode_chunks_independent_except_border_mix(vae):
    z = torch.randn(1, 6, 4, 1, 1, generator=torch.Generator().manual_seed(3))
    both = vae.decode(z, chunks_per_batch=None)  # (1, 34, 3, 16, 16)
    a, b = vae.decode(z[:, :3]), vae.decode(z[:, 3:])
    torch.testing.assert_close(both[:, :16], a[:, :16])
    torch.testing.assert_close(both[:, 18:], b[:, 1:])
    new_back = 0.6 * b[:, 0] + 0.4 * a[:, 16]
    torch.testing.assert_close(both[:, 17], new_back)
    torch.testing.assert_close(both[:, 16], 0.6 * a[:, 16] + 0.4 * new_back)


@torch.no_grad()
def test_posterior_sample_is_seeded_and_differs_from_mean(vae):
    video = _video(17)
    mean = vae.encode(video, sample=False)
    s1 = vae.encode(video, generator=torch.Generator().manual_seed(1))
    s2 = vae.encode(video, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.allclose(s1, mean)


@torch.no_grad()
def test_tiled_decode_shape(vae):
    z = torch.randn(1, 1, 4, 1, 3)  # one latent frame, two overlapping 1x2 tiles
    out = vae.decode(z, tile_size=2, tile_stride=1)
    assert out.shape == (1, 1, 3, 16, 48) and torch.isfinite(out).all()
    # a tile covering everything is plain decoding
    torch.testing.assert_close(vae.decode(z, tile_size=3), vae.decode(z))


def test_bad_sizes_state_the_rule(vae):
    with pytest.raises(ValueError, match=r"num_frames must be 1 or a multiple of 17 .*got 20, use 17"):
        vae.encode(_video(20))
    with pytest.raises(ValueError, match=r"height and width must be positive multiples of 16.*got 20x16"):
        vae.encode(_video(17, 20, 16))
    with pytest.raises(ValueError, match=r"latent frames must be 1 or a multiple of 3"):
        vae.decode(torch.randn(1, 4, 4, 1, 1))
    with pytest.raises(ValueError, match="z_channels=4"):
        vae.decode(torch.randn(1, 3, 8, 1, 1))


def test_size_helpers():
    assert snap_video_size(210, 550, 1000) == (204, 544, 992)
    assert snap_video_size(5, 8, 8) == (1, 16, 16)
    assert [latent_frames(n) for n in (1, 17, 68, 136, 204)] == [1, 3, 12, 24, 36]
    check_video_size(204, 544, 992)


def test_pixel_unshuffle_layout_and_inverse():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(1, 2, 3, 4, 4)
    u = pixel_unshuffle_3d(x, 2)  # one zero frame in front: T 3 -> 4 -> 2
    assert u.shape == (1, 16, 2, 2, 2)
    # channel c*8 + ft*4 + fh*2 + fw at (t, h, w) holds padded[c, 2t+ft, 2h+fh, 2w+fw]
    padded = torch.cat([torch.zeros(1, 2, 1, 4, 4), x], dim=2)
    assert u[0, 1 * 8 + 1 * 4 + 0 * 2 + 1, 1, 0, 1] == padded[0, 1, 3, 0, 3]
    torch.testing.assert_close(pixel_shuffle_3d(u, 2), x)  # shuffle drops the padded frame again


def test_mix_chunk_borders_formula():
    v = torch.arange(6, dtype=torch.float32).reshape(1, 6)
    out = mix_chunk_borders(v, 3)
    back = 0.6 * 3 + 0.4 * 2
    assert out[0, 3].item() == pytest.approx(back)
    assert out[0, 2].item() == pytest.approx(0.6 * 2 + 0.4 * back)


def test_large_tensor_slicing_is_exact():
    from model.vae import CausalConv3d, per_frame

    torch.manual_seed(0)
    x = torch.randn(1, 4, 7, 5, 5)
    for k in (3, 1):
        conv = CausalConv3d(4, 6, k)
        torch.testing.assert_close(conv(x, max_elements=300), conv(x), rtol=1e-5, atol=1e-6)
    conv2d = torch.nn.Conv2d(4, 4, 3, padding=1)
    torch.testing.assert_close(per_frame(conv2d, x, max_elements=200), per_frame(conv2d, x), rtol=1e-5, atol=1e-6)
