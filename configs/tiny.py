"""4+4 layers, d_model 128, d_ff 256, 4 heads: the size at which the best published
text-only Transformer on Multi30K reaches 41.0 tokenized BLEU on test_2016_flickr.

Variant: `--config=configs/tiny.py:rfb_kwta_dropout` (default `dropout`).
"""

from homeojax import config as config_lib


def get_config(variant: str = "dropout"):
  c = config_lib.apply_variant(config_lib.base_config(), variant)
  c.model.d_model = 128  # Residual stream width.
  c.model.d_ff = 256  # Feed-forward width.
  c.model.heads = 4  # Attention heads.
  c.model.encoder_layers = 4  # Encoder blocks.
  c.model.decoder_layers = 4  # Decoder blocks.
  c.data.vocab_size = 5000  # Joint en+de SentencePiece vocabulary (a cheap softmax on CPU).
  c.data.tokens_per_batch = 2048  # Small batches: more updates per epoch on small data.
  c.mechanisms.dropout.rate = 0.3  # Strong dropout: the data set is small.
  c.mechanisms.smart_inhibition.sparsity = 0.3  # Its own knob, at dropout's share here.
  c.optim.learning_rate = 2e-3  # Peak rate; pre-LN keeps it stable.
  c.num_train_steps = 6_000  # About 20 epochs, an hour on a 2-core CPU.
  c.eval_every = 1_500  # Validation BLEU (greedy) every 1500 steps.
  return c
