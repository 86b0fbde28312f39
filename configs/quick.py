"""A few minutes on a CPU: a small model that visibly learns (the README's main job).

Variant: `--config=configs/quick.py:rfb_kwta_dropout` (default `dropout`).
"""

from homeojax import config as config_lib


def get_config(variant: str = "dropout"):
  c = config_lib.apply_variant(config_lib.base_config(), variant)
  c.model.d_model = 64  # Narrow residual stream.
  c.model.d_ff = 128  # Narrow feed-forward layer.
  c.model.heads = 4  # Heads of width 16.
  c.model.encoder_layers = 2  # Shallow encoder.
  c.model.decoder_layers = 2  # Shallow decoder.
  c.data.vocab_size = 2000  # Small vocabulary: a cheap softmax.
  c.data.max_len = 40  # Drop the few longer pairs.
  c.data.tokens_per_batch = 2048  # Small batches, many updates.
  c.data.eval_sentences = 300  # Validation BLEU on a subset, to keep evaluation short.
  c.optim.learning_rate = 2e-3  # Higher rate for the small model.
  c.optim.warmup_steps = 200  # Short warmup.
  c.num_train_steps = 1200  # A few minutes.
  c.log_every = 50  # Frequent logs.
  c.eval_every = 600  # Two validations.
  c.checkpoint_every = 600  # Two checkpoints.
  c.decode.beam_size = 4  # A smaller beam for eval.py.
  return c
