"""Encoder-decoder Transformer with a homeostatic `Site` at each of five places.

Sites (each configured separately for encoder and decoder by a mechanism chain):
`embedding` (scaled token embeddings plus positions), `attn_weights` (attention
probabilities, statistics per head and key position), `attn_output` (concatenated heads,
before the output projection), `ffn_hidden` (after the FFN activation), `block_output`
(the output of every sublayer, before it joins the residual stream: where residual
dropout usually sits) and `layer_output` (the output of each encoder and decoder layer,
after its last residual add and, in post-LN, that add's LayerNorm: what the next layer
reads). Empty chains are the identity, so the default is the plain
Transformer. The decoder has `decode=True` mode with a key/value cache for search.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from homeojax.data.tokenizer import PAD_ID
from homeojax.layers import Site
from homeojax.mechanisms import Chain, chain_text, parse_chain

Array = jax.Array
SITE_NAMES = ("embedding", "attn_weights", "attn_output", "ffn_hidden", "block_output",
              "layer_output")
DTYPES = ("float32", "bfloat16")  # Compute dtypes.


@dataclasses.dataclass(frozen=True)
class Sites:
  """The mechanism chain of each site of a stack (a compact-syntax string given here is
  parsed once, with every option at its mechanism's default where not named)."""
  embedding: Chain = ()
  attn_weights: Chain = ()
  attn_output: Chain = ()
  ffn_hidden: Chain = ()
  block_output: Chain = ()
  layer_output: Chain = ()

  def __post_init__(self):
    for name in SITE_NAMES:
      object.__setattr__(self, name, parse_chain(getattr(self, name)))

  @classmethod
  def from_dict(cls, chains: dict[str, Chain | str]) -> Sites:
    """Builds from a mapping, rejecting unknown site names."""
    unknown = set(chains) - set(SITE_NAMES)
    if unknown:
      raise ValueError(f"unknown site {sorted(unknown)[0]!r}; sites are {SITE_NAMES}")
    return cls(**chains)

  def to_dict(self) -> dict[str, str]:
    """Each site's chain in the compact syntax, every option spelled out."""
    return {name: chain_text(getattr(self, name)) for name in SITE_NAMES}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of the Transformer."""
  vocab_size: int
  d_model: int = 128
  d_ff: int = 256
  heads: int = 4
  encoder_layers: int = 4
  decoder_layers: int = 4
  max_len: int = 128  # Longest sequence: positions and attention statistics.
  pre_ln: bool = True  # LayerNorm before each sublayer (else after the residual add).
  share_embeddings: bool = True  # One embedding for source, target and output logits.
  encoder_sites: Sites = Sites()
  decoder_sites: Sites = Sites()
  dtype: str = "float32"  # Compute dtype (float32 or bfloat16); params stay float32.

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "d_ff", "heads", "encoder_layers",
                 "decoder_layers", "max_len"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    if self.vocab_size < 8:
      raise ValueError(f"vocab_size={self.vocab_size} is too small (at least 8)")
    if self.d_model % self.heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype={self.dtype!r} is not one of {DTYPES}")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  def to_dict(self) -> dict:
    """The fields as JSON-ready values (chains in the compact syntax), for checkpoints."""
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return {**fields, "encoder_sites": self.encoder_sites.to_dict(),
            "decoder_sites": self.decoder_sites.to_dict()}


def sinusoidal_positions(positions: Array, d_model: int) -> Array:
  """Sinusoidal position encodings `[..., d_model]` of integer positions."""
  half = d_model // 2
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / max(half - 1, 1))
  angles = positions[..., None].astype(jnp.float32) * freqs
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, d_model - 2 * half)])


class Attention(nn.Module):
  """Multi-head attention with `attn_weights` and `attn_output` sites.

  `valid_BxQxK` marks allowed (query, key) pairs (broadcastable: `[B, 1, K]` for
  padding). `decode=True` is one step of a search, one query per row; there a `cached`
  (causal self-) attention appends its key and value to a cache and attends to all so far.
  When `x` has G times the rows of `kv` (the G beams of each source in a search), each G
  consecutive rows attend to one row of `kv`, which is then projected once, not G times.
  """
  cfg: TransformerConfig
  sites: Sites
  cached: bool = False

  @nn.compact
  def __call__(self, x_BxQxD: Array, kv_BxKxD: Array, valid_BxQxK: Array | None,
               query_valid_BxQ: Array, *, train: bool, decode: bool = False) -> Array:
    cfg = self.cfg
    head_dim = cfg.d_model // cfg.heads
    dense = lambda name: nn.DenseGeneral((cfg.heads, head_dim), dtype=cfg.compute_dtype,
                                         name=name)
    rows, q_len = x_BxQxD.shape[:2]
    group = rows // kv_BxKxD.shape[0]
    q_BxQxHxd = dense("query")(x_BxQxD).reshape(rows // group, group * q_len, cfg.heads,
                                                head_dim)
    query_valid_BxQ = query_valid_BxQ.reshape(q_BxQxHxd.shape[:2])
    k, v = dense("key")(kv_BxKxD), dense("value")(kv_BxKxD)  # [B, K, H, d]
    # While decoding, keys [B, H, d, K] and values [B, H, K, d] are laid out as the
    # products read them, so that the cache and the (hoisted) cross-attention projections
    # are not transposed at every step; in training that layout costs 5% of a step.
    k_layout, v_layout = ("bhdk", "bhkd") if decode else ("bkhd", "bkhd")
    if decode:
      k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    if decode and self.cached:
      initialized = self.has_variable("cache", "cached_key")
      key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
      value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
      index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
      if initialized:
        i = index.value
        key.value = jax.lax.dynamic_update_slice(key.value, k, (0, 0, 0, i))
        value.value = jax.lax.dynamic_update_slice(value.value, v, (0, 0, i, 0))
        index.value = i + 1
        k, v = key.value, value.value
        valid_BxQxK = (jnp.arange(k.shape[-1]) <= i)[None, None, :]
    logits = jnp.einsum(f"bqhd,{k_layout}->bqhk", q_BxQxHxd, k) / np.sqrt(head_dim)
    valid_BxQx1xK = None
    if valid_BxQxK is not None:  # Broadcast here: XLA fuses a full mask better (8% of a step).
      valid_BxQx1xK = jnp.broadcast_to(valid_BxQxK, logits.shape[:2] + logits.shape[-1:])[
          :, :, None, :]
      logits = jnp.where(valid_BxQx1xK, logits, jnp.finfo(logits.dtype).min)
    weights_BxQxHxK = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(logits.dtype)
    site_valid = query_valid_BxQ[:, :, None, None]
    if valid_BxQx1xK is not None:
      site_valid = site_valid & valid_BxQx1xK
    weights_BxQxHxK = Site(self.sites.attn_weights, stat_shape=(cfg.heads, cfg.max_len),
                           per_vector_valid=True, name="attn_weights")(
                               weights_BxQxHxK, site_valid, train=train)
    out_BxQxHxd = jnp.einsum(f"bqhk,{v_layout}->bqhd", weights_BxQxHxK, v)
    out_BxQxD = out_BxQxHxd.reshape(rows, q_len, cfg.d_model)
    out_BxQxD = Site(self.sites.attn_output, name="attn_output")(
        out_BxQxD, query_valid_BxQ.reshape(rows, q_len, 1), train=train)
    return nn.Dense(cfg.d_model, dtype=cfg.compute_dtype, name="out")(out_BxQxD)


class FeedForward(nn.Module):
  """Dense, ReLU, the `ffn_hidden` site, Dense."""
  cfg: TransformerConfig
  sites: Sites

  @nn.compact
  def __call__(self, x_BxLxD: Array, valid_BxL: Array, *, train: bool) -> Array:
    dtype = self.cfg.compute_dtype
    h_BxLxF = nn.relu(nn.Dense(self.cfg.d_ff, dtype=dtype, name="hidden")(x_BxLxD))
    h_BxLxF = Site(self.sites.ffn_hidden, name="ffn_hidden")(h_BxLxF, valid_BxL[..., None],
                                                             train=train)
    return nn.Dense(self.cfg.d_model, dtype=dtype, name="output")(h_BxLxF)


class Residual(nn.Module):
  """`x + block_output_site(sublayer(LN(x)))` (pre-LN) or `LN(x + site(sublayer(x)))`."""
  cfg: TransformerConfig
  sites: Sites

  @nn.compact
  def __call__(self, x_BxLxD: Array, sublayer, valid_BxL: Array, *, train: bool) -> Array:
    norm = nn.LayerNorm(dtype=self.cfg.compute_dtype, name="norm")
    y = sublayer(norm(x_BxLxD) if self.cfg.pre_ln else x_BxLxD)
    y = Site(self.sites.block_output, name="block_output")(y, valid_BxL[..., None],
                                                           train=train)
    x_BxLxD = x_BxLxD + y
    return x_BxLxD if self.cfg.pre_ln else norm(x_BxLxD)


class Embedder(nn.Module):
  """Scaled token embedding plus sinusoidal positions, then the `embedding` site.

  With `decode=True`, positions continue from a counter in the `"cache"` collection.
  """
  cfg: TransformerConfig
  sites: Sites
  embed: nn.Module

  @nn.compact
  def __call__(self, tokens_BxL: Array, *, train: bool, decode: bool = False) -> Array:
    positions_L = jnp.arange(tokens_BxL.shape[1])
    if decode:
      initialized = self.has_variable("cache", "position")
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      if initialized:
        positions_L = positions_L + position.value
        position.value = position.value + tokens_BxL.shape[1]
    x = self.embed(tokens_BxL) * np.sqrt(self.cfg.d_model)
    x = x + sinusoidal_positions(positions_L, self.cfg.d_model).astype(x.dtype)
    return Site(self.sites.embedding, name="embedding")(x, (tokens_BxL != PAD_ID)[..., None],
                                                        train=train)


class EncoderLayer(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxSxD: Array, valid_BxS: Array, *, train: bool) -> Array:
    cfg, sites = self.cfg, self.cfg.encoder_sites
    attention_valid = jnp.broadcast_to(valid_BxS[:, None, :], valid_BxS.shape + valid_BxS.shape[-1:])
    attend = Attention(cfg, sites, name="self_attention")
    x_BxSxD = Residual(cfg, sites, name="attention_block")(
        x_BxSxD, lambda y: attend(y, y, attention_valid, valid_BxS, train=train), valid_BxS,
        train=train)
    ffn = FeedForward(cfg, sites, name="ffn")
    x_BxSxD = Residual(cfg, sites, name="ffn_block")(
        x_BxSxD, lambda y: ffn(y, valid_BxS, train=train), valid_BxS, train=train)
    return Site(sites.layer_output, name="layer_output")(x_BxSxD, valid_BxS[..., None],
                                                         train=train)


class DecoderLayer(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, y_BxTxD: Array, valid_BxT: Array, encoded_BxSxD: Array,
               src_valid_BxS: Array, *, train: bool, decode: bool) -> Array:
    cfg, sites = self.cfg, self.cfg.decoder_sites
    t = y_BxTxD.shape[1]
    causal_BxTxT = (jnp.tril(jnp.ones((t, t), bool))[None] & valid_BxT[:, None, :])
    self_attend = Attention(cfg, sites, cached=True, name="self_attention")
    cross_attend = Attention(cfg, sites, name="cross_attention")
    ffn = FeedForward(cfg, sites, name="ffn")
    y_BxTxD = Residual(cfg, sites, name="self_attention_block")(
        y_BxTxD, lambda z: self_attend(z, z, causal_BxTxT, valid_BxT, train=train,
                                       decode=decode), valid_BxT, train=train)
    y_BxTxD = Residual(cfg, sites, name="cross_attention_block")(
        y_BxTxD, lambda z: cross_attend(z, encoded_BxSxD, src_valid_BxS[:, None],
                                        valid_BxT, train=train, decode=decode),
        valid_BxT, train=train)
    y_BxTxD = Residual(cfg, sites, name="ffn_block")(
        y_BxTxD, lambda z: ffn(z, valid_BxT, train=train), valid_BxT, train=train)
    return Site(sites.layer_output, name="layer_output")(y_BxTxD, valid_BxT[..., None],
                                                         train=train)


class Transformer(nn.Module):
  """The encoder-decoder. `__call__` gives training logits; `encode`/`decode` search."""
  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    init = nn.initializers.normal(stddev=cfg.d_model ** -0.5)
    dtype = cfg.compute_dtype
    self.source_embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=init, dtype=dtype)
    self.target_embed = (self.source_embed if cfg.share_embeddings else
                         nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=init,
                                  dtype=dtype))
    self.encoder_embedder = Embedder(cfg, cfg.encoder_sites, self.source_embed)
    self.decoder_embedder = Embedder(cfg, cfg.decoder_sites, self.target_embed)
    self.encoder_layers = [EncoderLayer(cfg) for _ in range(cfg.encoder_layers)]
    self.decoder_layers = [DecoderLayer(cfg) for _ in range(cfg.decoder_layers)]
    if cfg.pre_ln:
      self.encoder_norm = nn.LayerNorm(dtype=dtype)
      self.decoder_norm = nn.LayerNorm(dtype=dtype)
    if not cfg.share_embeddings:
      self.output = nn.Dense(cfg.vocab_size, dtype=dtype)

  def encode(self, src_BxS: Array, *, train: bool = False) -> Array:
    """Encoder states `[B, S, D]` of source ids (0 = padding)."""
    valid_BxS = src_BxS != PAD_ID
    x = self.encoder_embedder(src_BxS, train=train)
    for layer in self.encoder_layers:
      x = layer(x, valid_BxS, train=train)
    return self.encoder_norm(x) if self.cfg.pre_ln else x

  def decode(self, encoded_BxSxD: Array, src_BxS: Array, tgt_in_BxT: Array, *,
             train: bool = False, decode: bool = False) -> Array:
    """Next-token logits `[B, T, V]`; with `decode=True`, one step over the cache.

    The source (`encoded`, `src`) may have B / G rows: each G consecutive target rows
    (the beams of a search) then share one source row.
    """
    # While decoding, every fed token counts (finished rows are discarded later).
    valid_BxT = jnp.ones_like(tgt_in_BxT, bool) if decode else tgt_in_BxT != PAD_ID
    y = self.decoder_embedder(tgt_in_BxT, train=train, decode=decode)
    for layer in self.decoder_layers:
      y = layer(y, valid_BxT, encoded_BxSxD, src_BxS != PAD_ID, train=train, decode=decode)
    if self.cfg.pre_ln:
      y = self.decoder_norm(y)
    logits = self.target_embed.attend(y) if self.cfg.share_embeddings else self.output(y)
    return logits.astype(jnp.float32)

  def __call__(self, src_BxS: Array, tgt_in_BxT: Array, *, train: bool = False) -> Array:
    return self.decode(self.encode(src_BxS, train=train), src_BxS, tgt_in_BxT, train=train)
