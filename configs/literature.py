"""tiny's architecture (4+4 layers, d_model 128, d_ff 256, 4 heads, shared embeddings)
with the recipe of the best published text-only baseline at that size, Wu et al. 2021
(41.02 tokenized BLEU on test_2016_flickr): lowercased tokenized data, post-LN, dropout
0.3 on embeddings and sublayer outputs, Adam with an inverse-sqrt schedule, about 8k
tokens per update for 8000 updates, the last 10 epoch checkpoints averaged, lenpen 1.

Variant: `--config=configs/literature.py:rfb_kwta_dropout` (default `dropout`); a
variant's chain on attention weights (dropout, or Smart Inhibition in its place) moves to
the embeddings, as in that recipe; `classic` and `kwta` have no dropout anywhere.
Evaluate with `eval.py --average_last=10` (the config's beam and length penalty).
"""

from homeojax import config as config_lib


def get_config(variant: str = "dropout"):
  c = config_lib.apply_variant(config_lib.base_config(), variant)
  for stack in ("encoder", "decoder"):
    sites = c.sites[stack]
    sites.embedding, sites.attn_weights = sites.attn_weights, ""  # Embeddings, not attention.
  c.model.d_model = 128  # Residual stream width.
  c.model.d_ff = 256  # Feed-forward width.
  c.model.heads = 4  # Attention heads.
  c.model.encoder_layers = 4  # Encoder blocks.
  c.model.decoder_layers = 4  # Decoder blocks.
  c.model.pre_ln = False  # Post-LN, as fairseq's transformer.
  c.data.convention = "tok"  # Train and decode on lc.norm.tok; score tokenized BLEU.
  c.data.vocab_size = 10_000  # Joint vocabulary of 10k pieces (theirs: 10k joint BPE).
  c.data.tokens_per_batch = 4096  # Padded tokens per batch (theirs: --max-tokens 4096).
  c.mechanisms.dropout.rate = 0.3  # On embeddings and sublayer outputs.
  c.optim.schedule = "inverse_sqrt"  # fairseq's inverse_sqrt.
  c.optim.learning_rate = 5e-3  # Peak rate.
  c.optim.warmup_steps = 2000  # Updates of linear warmup.
  c.optim.grad_accumulation = 2  # 2 batches per update (theirs: 2 GPUs).
  c.optim.b1, c.optim.b2 = 0.9, 0.98  # Adam betas.
  c.optim.weight_decay = 0.0  # Adam, no weight decay.
  c.optim.grad_clip = 25.0  # Their --clip-norm.
  c.num_train_steps = 16_000  # Batches: 8000 updates.
  c.checkpoint_every = 154  # An epoch (154 batches of 4096 tokens, 77 updates).
  c.keep_checkpoints = 10  # The last 10, for eval.py --average_last=10.
  c.eval_every = 1_000  # Validation BLEU (greedy) every 500 updates.
  c.decode.penalty = "fairseq"  # Length normalisation |y|^alpha ...
  c.decode.length_penalty = 1.0  # ... with their --lenpen 1.
  return c
