"""3+3 layers, d_model 512: the paper-like size.

Variant: `--config=configs/base.py:rfb_kwta_dropout` (default `dropout`).
"""

from homeojax import config as config_lib


def get_config(variant: str = "dropout"):
  c = config_lib.apply_variant(config_lib.base_config(), variant)
  c.model.d_model = 512  # Residual stream width.
  c.model.d_ff = 2048  # Feed-forward width.
  c.model.heads = 8  # Attention heads.
  c.model.encoder_layers = 3  # Encoder blocks.
  c.model.decoder_layers = 3  # Decoder blocks.
  c.data.vocab_size = 10_000  # Joint SentencePiece vocabulary.
  c.optim.learning_rate = 5e-4  # Lower peak rate for the wider model.
  c.optim.warmup_steps = 4_000  # Longer warmup.
  c.num_train_steps = 30_000  # About 100 epochs.
  return c
