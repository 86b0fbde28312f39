"""Experiment configuration: the base config, the paper's variants, and validation.

Site chains name mechanisms in the compact syntax (`"rfb_kwta, dropout"`); an option a
chain does not name comes from the mechanism's group in `config.mechanisms`, so
`--config.mechanisms.rfb_kwta.sparsity=0.5` changes every RFB-kWTA site and nothing else,
and `--config.sites.encoder.block_output="rfb_kwta(sparsity=0.7), dropout"` changes one
site. Chains are parsed once, here, into `homeojax.mechanisms` objects.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from homeojax import ops, paths
from homeojax.decode import PENALTIES
from homeojax.metrics import CONVENTIONS
from homeojax.data.multi30k import LANGUAGES, SPLIT_FILES
from homeojax.mechanisms import (MECHANISMS, Boosted, SmartInhibition, chain_text, make,
                                 parse_chain)
from homeojax.model import SITE_NAMES, Sites, TransformerConfig

SCHEDULES = ("cosine", "inverse_sqrt")  # Learning-rate schedules (train_lib).
SPEC_VERSION = 2  # Of the mechanisms (shared/docs/homeostasis.md), saved in checkpoints.
_SMART_V1 = "smart_inhibition(scaling='uniform', method='exact')"  # As homeojax 0.1 ran it.

# The paper's variants, the chain of each site (the same for encoder and decoder), and
# rfb_kwta_magnitude_dropout: the paper's best with winners by magnitude (docs/results.md).
# The `_v1` variants are Smart Inhibition version 1 (biased), only to reproduce its runs.
VARIANTS: dict[str, dict[str, str]] = {
    "classic": {},
    "dropout": {"attn_weights": "dropout", "block_output": "dropout"},
    "kwta": {"block_output": "kwta"},
    "rfb_kwta_dropout": {"attn_weights": "dropout", "block_output": "rfb_kwta, dropout"},
    "smart_inhibition": {"attn_weights": "smart_inhibition",
                         "block_output": "smart_inhibition"},
    "rfb_kwta_smart_inhibition": {"attn_weights": "smart_inhibition",
                                  "block_output": "rfb_kwta, smart_inhibition"},
    "rfb_kwta_magnitude_dropout": {"attn_weights": "dropout",
                                   "block_output": "rfb_kwta(by='magnitude'), dropout"},
    "smart_inhibition_v1": {"attn_weights": _SMART_V1, "block_output": _SMART_V1},
    "rfb_kwta_smart_inhibition_v1": {"attn_weights": _SMART_V1,
                                     "block_output": f"rfb_kwta, {_SMART_V1}"},
}


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every experiment; `configs/*.py` override them."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, dropout and data order.
  c.variant = "classic"  # Name of the variant the site chains came from (for reports).

  c.data = ml_collections.ConfigDict()
  c.data.source_lang = "en"  # Source language: en, de, fr or cs.
  c.data.target_lang = "de"  # Target language.
  c.data.local_dir = os.environ.get("HOMEOJAX_MULTI30K", "")  # Offline copy; "" downloads.
  c.data.tfds_dir = ""  # Where TFDS prepares the data; "" is WORKDIR/tfds.
  c.data.convention = "raw"  # raw: cased text, sacreBLEU; tok: lc.norm.tok (the literature's).
  c.data.vocab_size = 8000  # Joint SentencePiece vocabulary size.
  c.data.max_len = 64  # Training pairs longer than this (in tokens, with EOS) are dropped.
  c.data.tokens_per_batch = 4096  # Padded tokens per training batch (per side).
  c.data.bucket_step = 8  # Batch lengths: multiples of this up to 64 (4 pads less, compiles more).
  c.data.eval_split = "validation"  # Split for periodic validation loss and BLEU.
  c.data.eval_sentences = 0  # Validation BLEU on the first N sentences; 0 is all.

  c.model = ml_collections.ConfigDict()
  c.model.d_model = 128  # Width of the residual stream.
  c.model.d_ff = 256  # Width of the feed-forward hidden layer.
  c.model.heads = 4  # Attention heads.
  c.model.encoder_layers = 4  # Encoder blocks.
  c.model.decoder_layers = 4  # Decoder blocks.
  c.model.max_len = 128  # Longest sequence the model handles (positions, statistics).
  c.model.pre_ln = True  # LayerNorm before sublayers (False: after the residual add).
  c.model.share_embeddings = True  # Tie source, target and output embeddings.
  c.model.dtype = "float32"  # Compute: float32 or bfloat16 (params, stats stay float32).

  # Each mechanism's options wherever a site chain names it without them (its own knobs:
  # no mechanism reads another's).
  c.mechanisms = ml_collections.ConfigDict()
  c.mechanisms.dropout = ml_collections.ConfigDict()
  c.mechanisms.dropout.rate = 0.1  # Dropout rate.
  c.mechanisms.kwta = ml_collections.ConfigDict()
  c.mechanisms.kwta.sparsity = 0.3  # Share of features zeroed.
  c.mechanisms.kwta.period = 1000  # Duty-cycle averaging period, in steps.
  c.mechanisms.kwta.method = "exact"  # Threshold: exact, top_k or statistical.
  c.mechanisms.kwta.by = "value"  # Winners by value or by magnitude.
  c.mechanisms.rfb_kwta = ml_collections.ConfigDict()
  c.mechanisms.rfb_kwta.sparsity = 0.3  # Share of features zeroed.
  c.mechanisms.rfb_kwta.beta = 1.0  # Boost strength.
  c.mechanisms.rfb_kwta.b_max = 10.0  # Boosts clipped to [1/b_max, b_max].
  c.mechanisms.rfb_kwta.beta_decay = 1.0  # Boost strength multiplied by this every epoch.
  c.mechanisms.rfb_kwta.period = 1000  # Duty-cycle averaging period, in steps.
  c.mechanisms.rfb_kwta.method = "exact"  # Threshold: exact, top_k or statistical.
  c.mechanisms.rfb_kwta.by = "value"  # Winners by value or by magnitude.
  c.mechanisms.rfb_kwta.transmit = "boosted"  # Pass on boosted or raw values of winners.
  c.mechanisms.smart_inhibition = ml_collections.ConfigDict()
  c.mechanisms.smart_inhibition.sparsity = 0.1  # Expected share of features dropped.
  c.mechanisms.smart_inhibition.beta = 1.0  # Strength of the preference for rare features.
  c.mechanisms.smart_inhibition.b_max = 10.0  # Preferences clipped to [1/b_max, b_max].
  c.mechanisms.smart_inhibition.beta_decay = 1.0  # Strength multiplied by this every epoch.
  c.mechanisms.smart_inhibition.period = 1000  # Duty-cycle averaging period, in steps.
  c.mechanisms.smart_inhibition.method = "statistical"  # Threshold of the recorded winners.
  c.mechanisms.smart_inhibition.sampling = "bernoulli"  # bernoulli or exact_k.
  c.mechanisms.smart_inhibition.scaling = "unbiased"  # unbiased (v2) or uniform (v1 only).

  c.sites = ml_collections.ConfigDict()
  for stack in ("encoder", "decoder"):
    c.sites[stack] = ml_collections.ConfigDict({name: "" for name in SITE_NAMES})

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3  # Peak learning rate of AdamW.
  c.optim.schedule = "cosine"  # After warmup: cosine (to end_lr_fraction) or inverse_sqrt.
  c.optim.warmup_steps = 1000  # Linear warmup from 0 to the peak, in updates.
  c.optim.end_lr_fraction = 0.01  # Cosine decay to this share of the peak at the last update.
  c.optim.grad_accumulation = 1  # Batches per update (gradients averaged): larger batches.
  c.optim.b1 = 0.9  # Adam first-moment decay.
  c.optim.b2 = 0.98  # Adam second-moment decay.
  c.optim.weight_decay = 1e-4  # Decoupled weight decay (never on homeostasis state).
  c.optim.label_smoothing = 0.1  # Label smoothing of the cross-entropy.
  c.optim.grad_clip = 1.0  # Global gradient-norm clip; 0 disables.

  c.num_train_steps = 20_000  # Optimizer steps.
  c.log_every = 100  # Steps between metric logs (the only host syncs of the loop).
  c.eval_every = 2_000  # Steps between validation loss + BLEU (and best checkpoint).
  c.checkpoint_every = 1_000  # Steps between checkpoints.
  c.keep_checkpoints = 3  # Latest checkpoints kept (the best one is kept apart).

  c.decode = ml_collections.ConfigDict()
  c.decode.beam_size = 5  # Beam size for eval.py; 1 is greedy.
  c.decode.eval_beam_size = 1  # Beam size for validation BLEU during training.
  c.decode.length_penalty = 0.6  # Length-penalty exponent alpha (fairseq's --lenpen).
  c.decode.penalty = "gnmt"  # Length penalty: gnmt ((5 + |y|) / 6)^alpha, fairseq |y|^alpha.
  c.decode.tokens_per_batch = 128  # Source tokens per decoding batch (rows x beam).

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = False  # Shard parameters and optimizer state over devices (else replicate).
  return c


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """Sets every site chain of `c` to the named paper variant (both stacks)."""
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r} is not one of {tuple(VARIANTS)}")
  c.variant = variant
  for stack in ("encoder", "decoder"):
    for name in SITE_NAMES:
      c.sites[stack][name] = VARIANTS[variant].get(name, "")
  return c


def _check_int(name: str, value, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def model_config(c: ml_collections.ConfigDict) -> TransformerConfig:
  """The model's config, its chains parsed with `c.mechanisms` as the options not named;
  raises ValueError naming the site and the bad value."""
  defaults = c.mechanisms.to_dict()
  stacks = {}
  for stack in ("encoder", "decoder"):
    chains = {}
    for name, chain in c.sites[stack].items():
      try:
        chains[name] = parse_chain(chain, defaults)
      except ValueError as e:
        raise ValueError(f"sites.{stack}.{name}={chain!r}: {e}") from None
    try:
      stacks[stack] = Sites.from_dict(chains)
    except ValueError as e:
      raise ValueError(f"sites.{stack}: {e}") from None
  return TransformerConfig(vocab_size=c.data.vocab_size, encoder_sites=stacks["encoder"],
                           decoder_sites=stacks["decoder"], **c.model)


def with_eval_scale(model_cfg: TransformerConfig, eval_scale: str) -> TransformerConfig:
  """The model with every Smart Inhibition evaluated with `eval_scale`; training is alike."""
  def rescaled(chain):
    return tuple(dataclasses.replace(m, eval_scale=eval_scale)
                 if isinstance(m, SmartInhibition) else m for m in chain)
  stacks = {stack: getattr(model_cfg, stack) for stack in ("encoder_sites", "decoder_sites")}
  if not any(isinstance(m, SmartInhibition) for sites in stacks.values()
             for name in SITE_NAMES for m in getattr(sites, name)):
    raise ValueError(f"eval_scale={eval_scale!r}: the run has no Smart Inhibition site")
  return dataclasses.replace(model_cfg, **{
      stack: Sites(**{name: rescaled(getattr(sites, name)) for name in SITE_NAMES})
      for stack, sites in stacks.items()})


def upgrade_chain(text: str, regularizer: dict) -> str:
  """A chain saved by homeojax 0.1 in today's terms: its `{placeholders}` filled from the
  run's `regularizer`, its boost decay explicit, and Smart Inhibition at version 1."""
  chain = []
  v1_defaults = {"smart_inhibition": {"method": "exact"}}  # 0.1's default.
  for m in parse_chain(text.format(**regularizer), v1_defaults):
    if isinstance(m, SmartInhibition):
      m = dataclasses.replace(m, scaling="uniform")
    if isinstance(m, Boosted):
      m = dataclasses.replace(m, beta_decay=regularizer.get("beta_decay", 1.0))
    chain.append(m)
  return chain_text(tuple(chain))


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by a run, with the fields it predates at their defaults (a run of
  homeojax 0.1 has no `data.convention` or `decode.penalty`: it used `raw` and `gnmt`)
  and its 0.1 chains upgraded (`upgrade_chain`)."""
  if "regularizer" in saved:
    regularizer = saved["regularizer"]
    saved = {**{k: v for k, v in saved.items() if k != "regularizer"}, "sites": {
        stack: {name: upgrade_chain(text, regularizer) for name, text in sites.items()}
        for stack, sites in saved["sites"].items()}}
  def merge(defaults: dict, given: dict) -> dict:
    return {**defaults, **{
        key: merge(defaults[key], value) if isinstance(defaults.get(key), dict) else value
        for key, value in given.items()}}
  return ml_collections.ConfigDict(merge(base_config().to_dict(), saved))


def with_absolute_paths(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `c` whose data directories are absolute (`~` expanded), so a checkpoint's
  config means the same from any directory."""
  c = c.copy_and_resolve_references()
  for name in ("local_dir", "tfds_dir"):
    if c.data[name]:
      c.data[name] = str(paths.absolute(c.data[name]))
  return c


def validate(c: ml_collections.ConfigDict) -> TransformerConfig:
  """Checks every setting before any expensive work; returns the model config."""
  for lang in ("source_lang", "target_lang"):
    if c.data[lang] not in LANGUAGES:
      raise ValueError(f"data.{lang}={c.data[lang]!r} is not one of {LANGUAGES}")
  if c.data.source_lang == c.data.target_lang:
    raise ValueError(f"data.source_lang and data.target_lang are both {c.data.source_lang!r}")
  if c.data.eval_split not in SPLIT_FILES:
    raise ValueError(f"data.eval_split={c.data.eval_split!r} is not one of {tuple(SPLIT_FILES)}")
  if c.data.local_dir and not paths.absolute(c.data.local_dir).is_dir():
    raise ValueError(f"data.local_dir={c.data.local_dir!r} is not a directory")
  for name in ("num_train_steps", "log_every", "eval_every", "checkpoint_every",
               "keep_checkpoints"):
    _check_int(name, c[name])
  for name in ("max_len", "tokens_per_batch"):
    _check_int(f"data.{name}", c.data[name], 2)
  _check_int("data.bucket_step", c.data.bucket_step)
  _check_int("data.eval_sentences", c.data.eval_sentences, 0)
  _check_int("optim.warmup_steps", c.optim.warmup_steps, 0)
  _check_int("optim.grad_accumulation", c.optim.grad_accumulation)
  ops.check_choice("decode.penalty", c.decode.penalty, PENALTIES)
  ops.check_choice("data.convention", c.data.convention, CONVENTIONS)
  ops.check_choice("optim.schedule", c.optim.schedule, SCHEDULES)
  for name in ("b1", "b2"):
    ops.check_range(f"optim.{name}", c.optim[name], 0.0, 1.0, high_open=True)
  _check_int("decode.beam_size", c.decode.beam_size)
  _check_int("decode.eval_beam_size", c.decode.eval_beam_size)
  unknown = set(c.mechanisms) - set(MECHANISMS)
  if unknown:
    raise ValueError(f"mechanisms.{sorted(unknown)[0]} is not a mechanism; mechanisms are "
                     f"{tuple(MECHANISMS)}")
  for name, options in c.mechanisms.items():
    try:
      make(name, options.to_dict())
    except ValueError as e:
      raise ValueError(f"mechanisms.{name}: {e}") from None
  for name in ("learning_rate", "weight_decay", "label_smoothing", "grad_clip",
               "end_lr_fraction"):
    if not isinstance(c.optim[name], (int, float)) or c.optim[name] < 0:
      raise ValueError(f"optim.{name}={c.optim[name]!r} must be a number >= 0")
  if not c.optim.label_smoothing < 1:
    raise ValueError(f"optim.label_smoothing={c.optim.label_smoothing!r} must be < 1")
  model = model_config(c)
  if c.data.max_len > model.max_len:
    raise ValueError(f"data.max_len={c.data.max_len} exceeds model.max_len={model.max_len}")
  return model
