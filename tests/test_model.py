"""Model shapes and masking, search correctness, and learning a synthetic task."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import homeojax as hj
from homeojax import config as config_lib
from homeojax import decode, experiment
from homeojax.configs import tiny
from homeojax.layers import HOMEOSTASIS
from homeojax.mechanisms import parse_chain
from homeojax.model import SITE_NAMES, Sites, Transformer, TransformerConfig

KEY = jax.random.PRNGKey(0)
SITES = Sites(attn_weights="rfb_kwta(sparsity=0.5)", attn_output="kwta(sparsity=0.3)",
              ffn_hidden="rfb_kwta(sparsity=0.5, method=statistical)",
              block_output="kwta(sparsity=0.2), dropout(rate=0.1)",
              embedding="smart_inhibition(sparsity=0.1)",
              layer_output="rfb_kwta(sparsity=0.5, by=magnitude)")


def small(**kwargs):
  defaults = dict(vocab_size=40, d_model=32, d_ff=64, heads=4, encoder_layers=2,
                  decoder_layers=2, max_len=32)
  return TransformerConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def model_and_vars():
  model = Transformer(small(encoder_sites=SITES, decoder_sites=SITES))
  src = jnp.array([[5, 6, 7, 3, 0, 0], [8, 9, 3, 0, 0, 0]])
  tgt = jnp.array([[2, 10, 11, 12, 0], [2, 13, 0, 0, 0]])
  return model, jax.jit(model.init)(KEY, src, tgt), src, tgt


def apply(model, *args, **kwargs):
  """Jitted `model.apply` (eager Flax is slow)."""
  return jax.jit(lambda *a: model.apply(*a, **kwargs))(*args)


def test_shapes_and_state(model_and_vars):
  model, variables, src, tgt = model_and_vars
  assert apply(model, variables, src, tgt).shape == (2, 5, 40)
  enc = variables[HOMEOSTASIS]["encoder_layers_0"]["self_attention"]["attn_weights"]
  assert enc["rfb_kwta_0"]["duty"].shape == (4, 32)  # Heads x max_len.


def test_padding_does_not_change_real_outputs(model_and_vars):
  model, variables, src, tgt = model_and_vars
  longer = apply(model, variables, jnp.pad(src, ((0, 0), (0, 5))),
                 jnp.pad(tgt, ((0, 0), (0, 3))))
  short = apply(model, variables, src, tgt)
  valid = np.asarray(tgt != 0)[..., None]
  np.testing.assert_allclose(np.where(valid, longer[:, :5], 0), np.where(valid, short, 0),
                             atol=2e-5)


def test_decoder_is_causal(model_and_vars):
  model, variables, src, tgt = model_and_vars
  changed = tgt.at[0, 3].set(20)
  a, b = apply(model, variables, src, tgt), apply(model, variables, src, changed)
  np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-6)
  assert not np.allclose(a[0, 3:4], b[0, 3:4])


def test_training_updates_statistics_and_eval_does_not(model_and_vars):
  model, variables, src, tgt = model_and_vars
  _, updates = jax.jit(lambda v: model.apply(v, src, tgt, train=True, mutable=[HOMEOSTASIS],
                                             rngs={"dropout": KEY}))(variables)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables[HOMEOSTASIS],
                         updates[HOMEOSTASIS])
  assert any(jax.tree.leaves(changed))
  _, frozen = apply(model, variables, src, tgt, mutable=[HOMEOSTASIS])
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                   variables[HOMEOSTASIS], frozen[HOMEOSTASIS]))


def test_empty_sites_compile_to_the_plain_transformer():
  plain = Transformer(small())
  variables = plain.init(KEY, jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))
  assert set(variables) == {"params"}


def test_layer_output_site_is_what_the_next_layer_reads_after_add_and_norm():
  """Post-LN: kWTA at `layer_output` leaves exactly k of d_model features in every valid
  row of each layer's output (the encoder's output is the last one); without it, none is
  zero: the site sits after the LayerNorm, not before it."""
  src = jnp.array([[5, 6, 7, 3, 0, 0], [8, 9, 3, 0, 0, 0]])
  valid = np.asarray(src != 0)
  for chain, nonzero in (("kwta(sparsity=0.75)", 8), ("", 32)):
    model = Transformer(small(pre_ln=False, encoder_sites=Sites(layer_output=chain)))
    variables = model.init(KEY, src, src[:, :3])
    encoded = apply(model, variables, src, method=Transformer.encode)
    assert (np.count_nonzero(np.asarray(encoded), axis=-1)[valid] == nonzero).all()


@pytest.mark.parametrize("bad, message", [
    ({"d_model": 30}, "not divisible by heads=4"), ({"vocab_size": 4}, "vocab_size=4"),
    ({"heads": 0}, "heads=0")])
def test_bad_model_config(bad, message):
  with pytest.raises(ValueError, match=message):
    small(**bad)


def chains(variant: str, **overrides) -> dict[str, tuple]:
  """The encoder's parsed chains of a variant of the base config, with `overrides` of
  `config.mechanisms` ("rfb_kwta.sparsity": 0.5)."""
  c = config_lib.apply_variant(config_lib.base_config(), variant)
  c.data.vocab_size = 100
  for key, value in overrides.items():
    group, field = key.split(".")
    c.mechanisms[group][field] = value
  sites = config_lib.validate(c).encoder_sites
  return {name: getattr(sites, name) for name in SITE_NAMES}


def test_variants_parse_into_typed_mechanisms_and_magnitude_changes_only_by():
  paper = {v: chains(v) for v in config_lib.VARIANTS if v != "rfb_kwta_magnitude_dropout"}
  assert all(isinstance(m, hj.Mechanism) for sites in paper.values()
             for chain in sites.values() for m in chain)
  assert all(getattr(m, "by", "value") == "value"
             for sites in paper.values() for chain in sites.values() for m in chain)
  magnitude, best = chains("rfb_kwta_magnitude_dropout"), paper["rfb_kwta_dropout"]
  assert magnitude["attn_weights"] == best["attn_weights"]
  (rfb, drop), (best_rfb, best_drop) = magnitude["block_output"], best["block_output"]
  assert drop == best_drop and rfb == dataclasses.replace(best_rfb, by="magnitude")


def test_knobs_are_independent():
  base = chains("rfb_kwta_smart_inhibition")
  (base_rfb, base_smart) = base["block_output"]
  # The dropout rate changes no Smart Inhibition or RFB-kWTA setting.
  assert chains("rfb_kwta_smart_inhibition", **{"dropout.rate": 0.45}) == base
  changed = chains("rfb_kwta_dropout", **{"dropout.rate": 0.45})["block_output"]
  assert changed[1].rate == 0.45 and changed[0] == base_rfb
  # RFB-kWTA's sparsity and beta change no Smart Inhibition setting, and vice versa.
  rfb, smart = chains("rfb_kwta_smart_inhibition", **{"rfb_kwta.sparsity": 0.7,
                                                       "rfb_kwta.beta": 4.0})["block_output"]
  assert (rfb.sparsity, rfb.beta, smart) == (0.7, 4.0, base_smart)
  rfb, smart = chains("rfb_kwta_smart_inhibition", **{"smart_inhibition.sparsity": 0.2,
                                                       "smart_inhibition.beta": 2.0,
                                                       "smart_inhibition.period": 10}
                      )["block_output"]
  assert (rfb, smart.sparsity, smart.beta, smart.period) == (base_rfb, 0.2, 2.0, 10)
  # One site's explicit option beats the group's, at that site only.
  c = config_lib.apply_variant(config_lib.base_config(), "rfb_kwta_dropout")
  c.data.vocab_size = 100
  c.sites.encoder.block_output = "rfb_kwta(sparsity=0.9), dropout"
  cfg = config_lib.validate(c)
  assert cfg.encoder_sites.block_output[0].sparsity == 0.9
  assert cfg.decoder_sites.block_output[0].sparsity == base_rfb.sparsity


def test_eval_scale_override_sets_only_smart_inhibition_and_trains_alike():
  def model_cfg(variant):
    c = config_lib.apply_variant(config_lib.base_config(), variant)
    c.data.vocab_size = 100
    return config_lib.validate(c)

  cfg = model_cfg("rfb_kwta_smart_inhibition_v1")
  new = config_lib.with_eval_scale(cfg, "expected_gain")
  for stack in ("encoder_sites", "decoder_sites"):
    for name in SITE_NAMES:
      old_chain, new_chain = getattr(getattr(cfg, stack), name), getattr(getattr(new, stack), name)
      assert [m.name for m in new_chain] == [m.name for m in old_chain]
      for old_m, new_m in zip(old_chain, new_chain):
        is_smart = isinstance(old_m, hj.SmartInhibition)
        assert new_m == (dataclasses.replace(old_m, eval_scale="expected_gain") if is_smart
                         else old_m)
        assert new_m.settings() == old_m.settings()  # An eval-only option.
  assert new.decoder_sites.block_output[1].eval_scale == "expected_gain"
  with pytest.raises(ValueError, match="eval_scale='expected_gain': the run has no Smart "
                     "Inhibition site"):
    config_lib.with_eval_scale(model_cfg("rfb_kwta_dropout"), "expected_gain")
  with pytest.raises(ValueError, match="eval_scale='expected_gain' corrects version 1"):
    config_lib.with_eval_scale(model_cfg("smart_inhibition"), "expected_gain")
  with pytest.raises(ValueError, match="eval_scale='unbiased' is not one of"):
    config_lib.with_eval_scale(cfg, "unbiased")


def test_checkpoint_config_round_trips_and_v1_chains_upgrade():
  cfg = config_lib.validate(config_lib.apply_variant(config_lib.base_config(),
                                                     "rfb_kwta_smart_inhibition"))
  saved = cfg.to_dict()
  assert TransformerConfig(**{**saved, "encoder_sites": Sites(**saved["encoder_sites"]),
                              "decoder_sites": Sites(**saved["decoder_sites"])}) == cfg
  # homeojax 0.1 saved placeholders and Smart Inhibition took the dropout rate and beta.
  old = {"regularizer": {"dropout": 0.3, "sparsity": 0.1, "beta": 4.0, "beta_decay": 0.5,
                         "method": "exact", "period": 1000},
         "sites": {"encoder": {"block_output": "rfb_kwta(sparsity={sparsity}, beta={beta}), "
                                               "smart_inhibition(sparsity={dropout}, beta={beta})"},
                   "decoder": {}}}
  upgraded = config_lib.with_defaults(old)
  assert "regularizer" not in upgraded
  rfb, smart = parse_chain(upgraded.sites.encoder.block_output)
  assert (rfb.sparsity, rfb.beta, rfb.beta_decay) == (0.1, 4.0, 0.5)
  assert (smart.sparsity, smart.beta, smart.scaling, smart.beta_decay, smart.method) == (
      0.3, 4.0, "uniform", 0.5, "exact")


@pytest.mark.parametrize("beam", [1, 3])
def test_cache_and_no_cache_decode_alike(model_and_vars, beam):
  model, variables, src, _ = model_and_vars
  ids, scores = decode.translate(model, variables, src, beam=beam, n_best=beam)
  ids_without, scores_without = decode.translate(model, variables, src, beam=beam,
                                                 use_cache=False, n_best=beam)
  np.testing.assert_array_equal(ids, ids_without)
  np.testing.assert_allclose(scores, scores_without, rtol=1e-5)
  assert ids.shape[:2] == scores.shape == (src.shape[0], beam)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # Best first.


def test_beam_one_equals_greedy(model_and_vars):
  model, variables, src, _ = model_and_vars
  ids, scores = decode.translate(model, variables, src, beam=1)
  ids0, logp = decode.translate(model, variables, src, beam=1, alpha=0.0)
  np.testing.assert_array_equal(ids, ids0)
  lengths = decode._hypothesis_lengths(ids[:, 0])  # pylint: disable=protected-access
  np.testing.assert_allclose(scores[:, 0], logp[:, 0] / ((5 + lengths) / 6) ** 0.6, rtol=1e-6)
  # beam_search itself at beam 1 without length penalty is greedy, with the same score.
  table = jax.nn.log_softmax(jax.random.normal(KEY, (6, 6)) * 2)
  step = lambda tokens, cache: (table[tokens[:, 0]], cache)
  greedy, greedy_logp = decode.greedy_search(step, (), batch=1, max_len=5, bos_id=0, eos_id=1)
  beam, beam_scores = decode.beam_search(step, (), batch=1, beam=1, max_len=5, alpha=0.0,
                                         bos_id=0, eos_id=1)
  np.testing.assert_array_equal(greedy, beam[:, 0])
  np.testing.assert_allclose(greedy_logp, beam_scores[:, 0], rtol=1e-6)


@pytest.mark.parametrize("beam", [1, 3])
def test_scores_are_length_normalised_log_probabilities(model_and_vars, beam):
  """Each hypothesis' score, rescored by the model with teacher forcing."""
  model, variables, src, _ = model_and_vars
  ids, scores = decode.translate(model, variables, src, beam=beam, alpha=0.6, n_best=beam)
  ids, scores = np.asarray(ids), np.asarray(scores)
  batch, _, max_len = ids.shape
  # Every hypothesis teacher-forced in one batch; the decoder is causal, so the padding
  # after a hypothesis changes nothing before it.
  hyps = ids.reshape(batch * beam, max_len)
  lengths = np.asarray(decode._hypothesis_lengths(hyps))  # pylint: disable=protected-access
  tgt_in = np.zeros_like(hyps)
  tgt_in[:, 0] = 2
  for i, length in enumerate(lengths):
    tgt_in[i, 1:length] = hyps[i, :length - 1]
  logits = apply(model, variables, jnp.repeat(src, beam, axis=0), jnp.asarray(tgt_in))
  logits = logits.at[..., jnp.array([0, 2])].set(decode.NEG_INF)  # Never output.
  token_logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), hyps[..., None],
                                  axis=-1)[..., 0]
  logp = np.array([token_logp[i, :n].sum() for i, n in enumerate(lengths)])
  np.testing.assert_allclose(scores.reshape(-1), logp / ((5 + lengths) / 6) ** 0.6, rtol=2e-4)


def plain_beam_search(model, variables, src, beam, alpha):
  """Beam search as `decode.beam_search` defines it, in NumPy over teacher-forced model
  calls (no cache, every source repeated per beam): the reference that pins the fast path."""
  batch, max_len = src.shape[0], decode.max_decode_length(src.shape[1], model.cfg.max_len)
  forward = jax.jit(lambda tgt: model.apply(variables, jnp.repeat(src, beam, axis=0), tgt))
  penalty = lambda length: ((5 + length) / 6) ** alpha
  seqs = np.zeros((batch, beam, max_len + 1), np.int32)
  seqs[..., 0] = 2
  live = np.tile(np.array([0.0] + [decode.NEG_INF] * (beam - 1), np.float32), (batch, 1))
  fin_seqs, fin_scores = seqs.copy(), np.full((batch, beam), decode.NEG_INF, np.float32)
  fin_flags = np.zeros((batch, beam), bool)
  for i in range(max_len):
    logits = np.array(forward(jnp.asarray(seqs[..., :max_len].reshape(batch * beam, -1))))
    logits[..., [0, 2]] = decode.NEG_INF
    logp = np.asarray(jax.nn.log_softmax(logits[:, i])).reshape(batch, beam, -1)
    cand = (live[..., None] + logp).reshape(batch, -1)
    top = np.argsort(-cand, axis=1, kind="stable")[:, :2 * beam]
    parent, token = top // logp.shape[-1], top % logp.shape[-1]
    top_logp = np.take_along_axis(cand, top, 1)
    new = np.take_along_axis(seqs, parent[..., None], 1)
    new[..., i + 1] = token
    eos = token == 3
    pick = np.argsort(-np.where(eos, decode.NEG_INF, top_logp), 1, kind="stable")[:, :beam]
    live, seqs = np.take_along_axis(np.where(eos, decode.NEG_INF, top_logp), pick, 1), \
        np.take_along_axis(new, pick[..., None], 1)
    scores = np.concatenate([fin_scores, np.where(eos, top_logp / penalty(i + 1),
                                                  decode.NEG_INF)], 1)
    pick = np.argsort(-scores, 1, kind="stable")[:, :beam]
    fin_scores = np.take_along_axis(scores, pick, 1)
    fin_seqs = np.take_along_axis(np.concatenate([fin_seqs, new], 1), pick[..., None], 1)
    fin_flags = np.take_along_axis(np.concatenate([fin_flags, eos], 1), pick, 1)
    worst = np.where(fin_flags, fin_scores, -decode.NEG_INF).min(1)
    if np.all(fin_flags.all(1) & (worst >= live[:, 0] / penalty(max_len))):
      break
  return np.where(fin_flags.any(1)[:, None, None], fin_seqs, seqs)[..., 1:]


def test_beam_search_equals_a_plain_reference(model_and_vars):
  """Pins the searched hypotheses against caching, beams sharing their source, the cache
  reordering and the key/value layouts."""
  model, variables, _, _ = model_and_vars
  src = jax.random.randint(jax.random.PRNGKey(4), (4, 7), 4, 40).at[:, 5:].set(0)
  ids, _ = decode.translate(model, variables, src, beam=5, alpha=0.6, n_best=5)
  np.testing.assert_array_equal(ids, plain_beam_search(model, variables, src, 5, 0.6))


@pytest.mark.parametrize("alpha, penalty", [(0.0, "gnmt"), (0.6, "gnmt"), (1.0, "fairseq")])
def test_beam_search_finds_the_best_sequence_of_a_toy_scorer(alpha, penalty):
  """A Markov scorer over 4 tokens (EOS = 1); compare with exhaustive search under the
  same length normalisation."""
  lp = {"gnmt": lambda n: ((5 + n) / 6) ** alpha, "fairseq": lambda n: n ** alpha}[penalty]
  for seed in range(3):
    logp = np.asarray(jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(seed),
                                                           (4, 4)) * 3))
    step = lambda tokens, cache: (jnp.asarray(logp)[tokens[:, 0]], cache)
    best, best_seq = -np.inf, None
    for length in range(1, 5):
      for body in itertools.product([0, 2, 3], repeat=length - 1):
        seq, prev, score = (*body, 1), 0, 0.0
        for t in seq:
          score, prev = score + logp[prev, t], t
        if score / lp(len(seq)) > best:
          best, best_seq = score / lp(len(seq)), seq
    seqs, scores = decode.beam_search(step, (), batch=1, beam=16, max_len=4, alpha=alpha,
                                      penalty=penalty, bos_id=0, eos_id=1)
    assert np.isclose(float(scores[0, 0]), best, atol=1e-5)
    np.testing.assert_array_equal(seqs[0, 0, :len(best_seq)], best_seq)


def test_greedy_fails_where_beam_succeeds():
  # From BOS (0): token 2 (p=.6) leads to a flat tail; token 3 (p=.4) leads to EOS surely.
  logp = np.log(np.array([[1e-9, 1e-9, 0.6, 0.4], [.25] * 4, [1e-9, .34, .33, .33],
                          [1e-9, 1 - 2e-9, 1e-9, 1e-9]]))
  step = lambda tokens, cache: (jnp.asarray(logp)[tokens[:, 0]], cache)
  greedy, greedy_logp = decode.greedy_search(step, (), batch=1, max_len=3, bos_id=0, eos_id=1)
  seqs, _ = decode.beam_search(step, (), batch=1, beam=2, max_len=3, alpha=0.0, bos_id=0,
                               eos_id=1)
  assert list(np.asarray(greedy[0, :2])) == [2, 1]
  np.testing.assert_allclose(greedy_logp, [np.log(0.6) + np.log(0.34)], rtol=1e-6)
  assert list(np.asarray(seqs[0, 0, :2])) == [3, 1]


def test_tiny_model_learns_to_reverse():
  """Reverse sequences of 3-6 tokens: >= 90% exact greedy decodes on held-out data."""
  c = config_lib.apply_variant(config_lib.base_config(), "classic")
  c.model.update(d_model=64, d_ff=128, heads=4, encoder_layers=2, decoder_layers=2, max_len=16)
  c.data.vocab_size = 16
  c.optim.update(learning_rate=3e-3, warmup_steps=50, label_smoothing=0.0)
  c.num_train_steps = 600
  exp = experiment.build(c)
  model = exp.model
  state, _ = exp.init_state()
  step = jax.jit(exp.train_step())
  rng = np.random.default_rng(0)

  def batch(n):
    lengths = rng.integers(3, 7, n)
    src = np.zeros((n, 8), np.int32)
    tgt_in, tgt_out = src.copy(), src.copy()
    for i, length in enumerate(lengths):
      seq = rng.integers(4, 16, length)
      src[i, :length + 1] = [*seq, 3]
      tgt_in[i, :length + 1] = [2, *seq[::-1]]
      tgt_out[i, :length + 1] = [*seq[::-1], 3]
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}

  for _ in range(600):
    state, _ = step(state, batch(64))
  test = batch(200)
  out = np.asarray(decode.translate(model, {"params": state.params},
                                    jnp.asarray(test["src"]))[0][:, 0])
  lengths = (test["tgt_out"] != 0).sum(1)
  exact = [np.array_equal(out[i, :n], test["tgt_out"][i, :n]) for i, n in enumerate(lengths)]
  assert np.mean(exact) >= 0.9


def test_a_saved_config_gets_the_fields_it_predates_at_their_defaults():
  saved = config_lib.base_config().to_dict()
  del saved["decode"]["penalty"], saved["data"]["convention"]  # As homeojax 0.1 saved it.
  saved["decode"]["beam_size"], saved["sites"]["encoder"]["ffn_hidden"] = 3, "kwta"
  c = config_lib.with_defaults(saved)
  assert (c.decode.penalty, c.data.convention) == ("gnmt", "raw")
  assert c.decode.beam_size == 3 and c.sites.encoder.ffn_hidden == "kwta"


def test_bfloat16_compute_keeps_float32_state_and_matches_float32_closely():
  batch = {k: jnp.asarray(np.random.default_rng(i).integers(1, 50, (4, 10)), jnp.int32)
           for i, k in enumerate(("src", "tgt_in", "tgt_out"))}

  def build(variant, dtype):
    c = config_lib.apply_variant(config_lib.base_config(), variant)
    c.model.update(d_model=32, d_ff=64, heads=2, encoder_layers=1, decoder_layers=1,
                   max_len=16, dtype=dtype)
    c.data.vocab_size = 50
    exp = experiment.build(c)
    return exp, exp.init_state()[0]

  def logits(dtype):  # A continuous model: no winners to flip on rounding.
    exp, state = build("classic", dtype)
    return np.asarray(exp.model.apply({"params": state.params}, batch["src"], batch["tgt_in"]))

  error = np.abs(logits("bfloat16") - logits("float32"))
  assert error.mean() < 0.02 * np.abs(logits("float32")).mean() and error.max() < 0.1
  exp, state = build("rfb_kwta_smart_inhibition", "bfloat16")
  state, stats = jax.jit(exp.train_step())(state, batch)
  assert stats["loss"].dtype == jnp.float32 and np.isfinite(float(stats["loss"]))
  for leaf in jax.tree.leaves((state.params, state.opt_state, state.homeostasis)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype  # Kept in float32.
  with pytest.raises(ValueError, match="dtype='float16' is not one of"):
    small(dtype="float16")


def test_run_grid_settings_under_v2_equal_the_v1_grid_runs():
  """results/run_grid.sh's grid settings in 0.2's terms give the v1 grid's mechanisms: the
  0.1 chains (placeholders filled from `regularizer`) read by `config.with_defaults`."""
  v1_chains = {  # homeojax 0.1's variants.
      "dropout": "dropout(rate={dropout})",
      "smart_inhibition": "smart_inhibition(sparsity={dropout}, beta={beta}, period={period})",
      "rfb_kwta": "rfb_kwta(sparsity={sparsity}, beta={beta}, method={method}, period={period})",
      "kwta": "kwta(sparsity={sparsity}, method={method})"}
  v1_sites = {
      "kwta": {"block_output": v1_chains["kwta"]},
      "rfb_kwta_dropout": {"attn_weights": v1_chains["dropout"],
                           "block_output": f"{v1_chains['rfb_kwta']}, {v1_chains['dropout']}"},
      "rfb_kwta_smart_inhibition": {
          "attn_weights": v1_chains["smart_inhibition"],
          "block_output": f"{v1_chains['rfb_kwta']}, {v1_chains['smart_inhibition']}"}}
  regularizer = {"dropout": 0.3, "sparsity": 0.1, "beta": 4.0, "beta_decay": 1.0,
                 "method": "exact", "period": 1000}  # tiny, with the sweeps' choices.
  grid_sets = {"kwta.sparsity": 0.1, "rfb_kwta.sparsity": 0.1, "rfb_kwta.beta": 4.0,
               "smart_inhibition.scaling": "uniform", "smart_inhibition.method": "exact",
               "smart_inhibition.sparsity": 0.3, "smart_inhibition.beta": 4.0}
  for variant, sites in v1_sites.items():
    c = tiny.get_config(variant)
    for key, value in grid_sets.items():
      group, field = key.split(".")
      c.mechanisms[group][field] = value
    now = config_lib.validate(c)
    saved = {"regularizer": regularizer, "data": {"vocab_size": c.data.vocab_size},
             "model": c.model.to_dict(),
             "sites": {stack: {name: sites.get(name, "") for name in SITE_NAMES}
                       for stack in ("encoder", "decoder")}}
    then = config_lib.model_config(config_lib.with_defaults(saved))
    assert then.encoder_sites == now.encoder_sites, variant
    assert then.decoder_sites == now.decoder_sites, variant
