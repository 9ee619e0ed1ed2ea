"""Tiny randomly initialised NeMo models, built from a config and saved as ``.nemo`` files.

They let the NeMo backends run the real NeMo engine (``restore_from``, ``transcribe``,
``generate_spectrogram``, ``convert_spectrogram_to_audio``) on a CPU without downloading
anything: the same model classes as the production models, a few thousand weights each.
What they say is noise, so tests check shapes, order, batching and streaming, not words.

* ASR: character models with a one-layer encoder: CTC (``EncDecCTCModel`` on a Conformer)
  and TDT (``EncDecRNNTModel`` with a TDT loss on a FastConformer: Parakeet-TDT's design).
  Parakeet differs in size and in its SentencePiece vocabulary (``EncDecRNNTBPEModel``,
  which needs a tokenizer file); all go through ``ASRModel.restore_from`` and ``transcribe``.
* TTS: FastPitch with a character tokenizer (``EnglishCharsTokenizer``: no G2P dictionary to
  download) and HiFi-GAN with a tiny generator. HiFi-GAN's discriminators (used in training
  only) have a fixed size that no config shrinks, so the vocoder file is about 280 MB.

Needs ``nemo_toolkit[asr,tts]``; import this module only after ``tests.engines.require_engine``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SEED = 1234
ASR_RATE = 16_000
TTS_RATE = 22_050
N_MELS = 80
HOP = 256  # FastPitch's frame step; HiFi-GAN's upsampling rates multiply to it
FRAMES_PER_TOKEN = 6  # what the tiny FastPitch predicts for every character

_CHARS = list(" abcdefghijklmnopqrstuvwxyz'")
_ASR_FEATURES = 32
_ASR_WIDTH = 32
_TTS_TARGETS = "nemo.collections.tts"


def build_tiny_ctc(path: Path) -> Path:
    """A character CTC model (``EncDecCTCModel``) on the tiny encoder, saved to ``path``."""
    import torch
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    decoder = {
        "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
        "feat_in": _ASR_WIDTH,
        "num_classes": len(_CHARS),
        "vocabulary": _CHARS,
    }
    # Conformer's 4x subsampling (as in stt_en_conformer_ctc): with FastConformer's 8x, this
    # random CTC head folds every utterance into the same character or two.
    cfg = OmegaConf.create({**_asr_common("striding", 4), "decoder": decoder})
    return _save(EncDecCTCModel(cfg=cfg), path)


def build_tiny_tdt(path: Path) -> Path:
    """A character TDT model (``EncDecRNNTModel`` with a TDT loss), saved to ``path``.

    Parakeet-TDT's decoder family: an LSTM prediction network, a joint network with extra
    duration outputs (skip 0-4 frames) and NeMo's batched greedy TDT decoding.
    """
    import torch
    from nemo.collections.asr.models import EncDecRNNTModel
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    durations = [0, 1, 2, 3, 4]
    width = _ASR_WIDTH
    cfg = OmegaConf.create(
        {
            **_asr_common("dw_striding", 8),  # FastConformer's, as in Parakeet
            "model_defaults": {"enc_hidden": width, "pred_hidden": width, "joint_hidden": width},
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {"pred_hidden": width, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": False,
                "jointnet": {"joint_hidden": width, "activation": "relu", "dropout": 0.0},
                "num_extra_outputs": len(durations),
            },
            "decoding": {
                "strategy": "greedy_batch",
                "model_type": "tdt",
                "durations": durations,
                "greedy": {"max_symbols": 10},
            },
            "loss": {
                "loss_name": "tdt",
                "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": durations}
                | {"sigma": 0.02, "omega": 0.1},
            },
        }
    )
    return _save(EncDecRNNTModel(cfg=cfg), path)


def _asr_common(subsampling: str, factor: int) -> dict[str, Any]:
    """Sample rate, labels, features and a one-layer Conformer encoder."""
    return {
        "sample_rate": ASR_RATE,  # transcribe() needs it for in-memory audio
        "labels": _CHARS,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": ASR_RATE,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "features": _ASR_FEATURES,
            "n_fft": 512,
            "dither": 0.0,
            "pad_to": 0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": _ASR_FEATURES,
            "n_layers": 1,
            "d_model": _ASR_WIDTH,
            "n_heads": 2,
            "subsampling": subsampling,
            "subsampling_factor": factor,
            "subsampling_conv_channels": 16,
            "ff_expansion_factor": 2,
            "conv_kernel_size": 9,
            "self_attention_model": "rel_pos",
        },
    }


def build_tiny_fastpitch(path: Path) -> Path:
    """A FastPitch (learnt alignment, character tokens) 32 wide, one layer deep, saved to ``path``.

    Its duration predictor's bias is set so that each character lasts about
    ``FRAMES_PER_TOKEN`` frames: with random weights alone most characters get no frame at
    all, and a sentence would be a few milliseconds of audio.
    """
    import torch
    from nemo.collections.tts.models import FastPitchModel
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    width = 32
    fft = {"n_layer": 1, "n_head": 1, "d_model": width, "d_head": 16, "d_inner": 64, "kernel_size": 3}
    fft |= {"dropout": 0.1, "dropatt": 0.1, "dropemb": 0.0}
    predictor = {
        "_target_": "nemo.collections.tts.modules.fastpitch.TemporalPredictor",
        "input_size": width,
        "kernel_size": 3,
        "filter_size": 32,
        "dropout": 0.1,
        "n_layers": 1,
    }
    cfg = OmegaConf.create(
        {
            "learn_alignment": True,
            "n_speakers": 1,
            "max_token_duration": 75,
            "symbols_embedding_dim": width,
            "pitch_embedding_kernel_size": 3,
            "n_mel_channels": N_MELS,
            "sample_rate": TTS_RATE,
            "pitch_mean": 212.35,
            "pitch_std": 68.52,
            "text_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers."
                "EnglishCharsTokenizer",
                "punct": True,
                "apostrophe": True,
                "pad_with_space": True,
            },
            # FastPitch reads the dataset class to choose its tokenizer path; no data is set up.
            "train_ds": {
                "dataset": {"_target_": f"{_TTS_TARGETS}.data.dataset.TTSDataset"},
                "defer_setup": True,
            },
            "preprocessor": _mel_preprocessor(
                "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
            ),
            "input_fft": {"_target_": f"{_TTS_TARGETS}.modules.transformer.FFTransformerEncoder", **fft}
            | {"d_embed": width},
            "output_fft": {"_target_": f"{_TTS_TARGETS}.modules.transformer.FFTransformerDecoder", **fft},
            "alignment_module": {
                "_target_": f"{_TTS_TARGETS}.modules.aligner.AlignmentEncoder",
                "n_text_channels": width,
                "n_mel_channels": N_MELS,
                "n_att_channels": 16,
            },
            "duration_predictor": predictor,
            "pitch_predictor": predictor,
        }
    )
    model = FastPitchModel(cfg=cfg)
    with torch.no_grad():
        # log_to_duration: frames = exp(log_duration) - 1
        model.fastpitch.duration_predictor.fc.bias.fill_(math.log(1 + FRAMES_PER_TOKEN))
    return _save(model, path)


def build_tiny_hifigan(path: Path) -> Path:
    """A HiFi-GAN vocoder with a 32-channel generator (upsampling 8 x 8 x 4 = 256), saved to ``path``."""
    import torch
    from nemo.collections.tts.models import HifiGanModel
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    preprocessor = _mel_preprocessor("nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures")
    cfg = OmegaConf.create(
        {
            "preprocessor": preprocessor,
            "generator": {
                "_target_": f"{_TTS_TARGETS}.modules.hifigan_modules.Generator",
                "resblock": 2,
                "upsample_rates": [8, 8, 4],
                "upsample_kernel_sizes": [16, 16, 8],
                "upsample_initial_channel": 32,
                "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3]],
            },
            "train_ds": {
                "dataset": {"_target_": f"{_TTS_TARGETS}.data.dataset.VocoderDataset"},
                "defer_setup": True,
            },
        }
    )
    return _save(HifiGanModel(cfg=cfg), path)


def _mel_preprocessor(target: str) -> dict[str, Any]:
    """The 80-mel, 22.05 kHz, hop-256 features FastPitch and HiFi-GAN share (NeMo's recipes).

    ``AudioToMelSpectrogramPreprocessor`` (FastPitch) and ``FilterbankFeatures`` (HiFi-GAN)
    name a few settings differently, so each gets its own.
    """
    common = {
        "_target_": target,
        "sample_rate": TTS_RATE,
        "n_fft": 1024,
        "n_window_size": 1024,
        "n_window_stride": HOP,
        "lowfreq": 0,
        "window": "hann",
        "normalize": None,
        "preemph": None,
        "dither": 0.0,
        "frame_splicing": 1,
        "log": True,
        "log_zero_guard_value": 1e-05,
        "mag_power": 1.0,
    }
    if target.endswith("FilterbankFeatures"):
        extra = {"nfilt": N_MELS, "highfreq": 8000, "pad_to": 0, "pad_value": -11.52}
        extra |= {"log_zero_guard_type": "clamp", "use_grads": False, "exact_pad": True}
    else:
        extra = {"features": N_MELS, "highfreq": None, "window_size": False, "window_stride": False}
        extra |= {"pad_to": 1, "pad_value": 0, "log_zero_guard_type": "add"}
    return common | extra


def _save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path
