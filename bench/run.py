"""Benchmarks: per-site op cost, train-step time and memory per variant, input wait and
compilations of the training loop, decoding throughput. Writes JSON and Markdown tables.

  python bench/run.py --data_dir=../shared/data/multi30k --run_dir=runs/tiny_dropout

Every ratio compares variants measured in the same process, interleaved round by round,
so that a noisy machine slows all of them alike. Times are medians over rounds.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # The configs/ package of this checkout.

from configs import base as base_config, tiny as tiny_config  # noqa: E402
from homeojax import config as config_lib, decode, eval_lib, experiment, sharding  # noqa: E402
from homeojax import process, train_lib  # noqa: E402
from homeojax.data import batching, multi30k, tokenizer  # noqa: E402
from homeojax.layers import HOMEOSTASIS, Site  # noqa: E402

_SECTIONS = flags.DEFINE_list("sections", ["ops", "train", "loop", "decode"], "What to run.")
_CONFIGS = flags.DEFINE_list("configs", ["tiny", "base"], "Configs for ops and train.")
_ROUNDS = flags.DEFINE_integer("rounds", 9, "Interleaved measurement rounds.")

_DATA_DIR = flags.DEFINE_string("data_dir", os.environ.get("HOMEOJAX_MULTI30K", ""),
                                "Local Multi30K copy (loop and decode sections).")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Trained run to decode with (else an "
                               "untrained tiny model, which decodes to the length limit).")
_NO_CACHE_SENTENCES = flags.DEFINE_integer("no_cache_sentences", 40, "Sentences decoded "
                                           "without the KV cache (the first ones).")
_DECODE_TOKENS = flags.DEFINE_integer(
    "decode_tokens_per_batch", config_lib.base_config().decode.tokens_per_batch,
    "Source tokens per decoding batch.")
_DECODE_PASSES = flags.DEFINE_integer("decode_passes", 4, "Warm decoding passes after the "
                                      "first; their median is reported.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 1, "CPU devices (decoding runs one batch "
                                    "per device; eval.py uses one per core).", lower_bound=1)
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/homeojax_bench", "Scratch (data, vocab).")
_OUT = flags.DEFINE_string("out", str(ROOT / "bench" / "results"), "Output path prefix "
                           "(.json and .md are written).")

CONFIGS = {"tiny": tiny_config.get_config, "base": base_config.get_config}
# Site mechanisms compared with dropout, at the rates of the paper's variants.
SITE_CHAINS = {
    "dropout": "dropout(rate=0.1)",
    "kwta exact": "kwta(sparsity=0.3, method=exact)",
    "kwta top_k": "kwta(sparsity=0.3, method=top_k)",
    "kwta statistical": "kwta(sparsity=0.3, method=statistical)",
    "rfb_kwta exact": "rfb_kwta(sparsity=0.3, method=exact)",
    "rfb_kwta statistical": "rfb_kwta(sparsity=0.3, method=statistical)",
    "smart_inhibition bernoulli": "smart_inhibition(sparsity=0.1)",
    "smart_inhibition exact_k": "smart_inhibition(sparsity=0.1, sampling=exact_k)",
    "smart_inhibition exact": "smart_inhibition(sparsity=0.1, method=exact)",
    "smart_inhibition v1": "smart_inhibition(sparsity=0.1, scaling=uniform, method=exact)",
}
# Train-step variants: (paper variant, kWTA threshold method).
STEP_VARIANTS = {
    "classic": ("classic", "exact"),
    "dropout": ("dropout", "exact"),
    "kwta exact": ("kwta", "exact"),
    "kwta statistical": ("kwta", "statistical"),
    "rfb_kwta+dropout exact": ("rfb_kwta_dropout", "exact"),
    "rfb_kwta+dropout statistical": ("rfb_kwta_dropout", "statistical"),
    "smart_inhibition": ("smart_inhibition", "statistical"),
    "smart_inhibition exact": ("smart_inhibition", "exact"),
    "smart_inhibition v1": ("smart_inhibition_v1", "exact"),
}
_VARIANTS = flags.DEFINE_list("variants", list(STEP_VARIANTS), "Train-step variants "
                              "(classic and dropout, the references, are always measured).")
PEAK = "2048² matmul"  # The reference timed in the train rounds.
SEQ_LEN = 32  # Length of the synthetic batches (Multi30K's common bucket).


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int,
                min_seconds: float = 1.0) -> dict[str, float]:
  """Median seconds per call of each (compiled, warm) function, measured in rounds (each
  in a new order); a round times enough calls to last about `min_seconds`."""
  calls = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    jax.block_until_ready(fn())
    calls[name] = max(1, math.ceil(min_seconds / (time.perf_counter() - start)))
  times: dict[str, list[float]] = {name: [] for name in fns}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for name in order.permutation(list(fns)):  # A new order each round.
      fn = fns[name]
      start = time.perf_counter()
      for _ in range(calls[name]):
        out = fn()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - start) / calls[name])
  return {name: statistics.median(t) for name, t in times.items()}


def site_shapes(c) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
  """Site name -> (activation shape, valid-mask shape, statistics shape) for a config."""
  b, l, m = c.data.tokens_per_batch // SEQ_LEN, SEQ_LEN, c.model
  return {"block_output": ((b, l, m.d_model), (b, l, 1), (m.d_model,)),
          "ffn_hidden": ((b, l, m.d_ff), (b, l, 1), (m.d_ff,)),
          "attn_weights": ((b, l, m.heads, l), (b, l, 1, l), (m.heads, m.max_len))}


def bench_ops(rounds: int) -> list[dict]:
  """Forward + backward (+ statistics update) of one site, per mechanism and shape."""
  rows = []
  for config_name in _CONFIGS.value:
    c = CONFIGS[config_name]()
    for site_name, (shape, valid_shape, stat_shape) in site_shapes(c).items():
      x = jax.random.normal(jax.random.PRNGKey(0), shape)
      g = jax.random.normal(jax.random.PRNGKey(1), shape)
      valid = jnp.ones(valid_shape, bool)
      fns = {}
      for mech, chain in SITE_CHAINS.items():
        site = Site(chain, stat_shape=stat_shape)
        variables = site.init(jax.random.PRNGKey(2), x, valid)

        def loss(x, variables, site=site):
          y, updates = site.apply(variables, x, valid, train=True, mutable=[HOMEOSTASIS],
                                  rngs={"dropout": jax.random.PRNGKey(3)})
          return jnp.sum(y * g), updates

        step = jax.jit(jax.grad(loss, has_aux=True))
        jax.block_until_ready(step(x, variables))
        fns[mech] = lambda step=step, variables=variables: step(x, variables)
      times = interleaved(fns, rounds)
      for mech, seconds in times.items():
        rows.append({"config": config_name, "site": site_name, "shape": list(shape),
                     "mechanism": mech, "ms": seconds * 1e3,
                     "vs_dropout": seconds / times["dropout"]})
  return rows


def synthetic_batch(c, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A training batch of the config's size: random ids, a tenth of the tail padded."""
  b = c.data.tokens_per_batch // SEQ_LEN
  lengths = rng.integers(SEQ_LEN * 6 // 10, SEQ_LEN + 1, size=b)
  ids = rng.integers(4, c.data.vocab_size, size=(3, b, SEQ_LEN)).astype(np.int32)
  ids[:, np.arange(SEQ_LEN)[None, :] >= lengths[:, None]] = 0
  return {"src": ids[0], "tgt_in": ids[1], "tgt_out": ids[2]}


def compiled_bytes(compiled) -> int | None:
  """Peak memory XLA plans for a compiled step (arguments + outputs + temporaries)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled function, from XLA's cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # Older JAX: one dict per computation.
    analysis = analysis[0] if analysis else None
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def matmul_call(n: int = 2048) -> tuple[Callable[[], Any], float]:
  """A jitted n x n float32 matmul and its FLOPs: this machine's practical peak, timed in
  the same rounds as the steps it is compared with, so that the host's drift cancels."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
  matmul = jax.jit(jnp.matmul)
  return lambda: matmul(a, b), 2.0 * n ** 3


def page_faults(fn: Callable[[], Any], calls: int = 5) -> float:
  """Minor page faults per call of a warm function (memory the allocator mapped afresh)."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    jax.block_until_ready(fn())
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def bench_train(rounds: int) -> list[dict]:
  """Train-step time, tokens/s, share of the matmul peak and planned memory per variant,
  relative to dropout."""
  rows, mesh = [], sharding.make_mesh()
  for config_name in _CONFIGS.value:
    fns, memory, flops, steps = {}, {}, {}, {}
    for label, (variant, method) in STEP_VARIANTS.items():
      if label not in _VARIANTS.value and label not in ("classic", "dropout"):
        continue
      c = CONFIGS[config_name](variant)
      for name in ("kwta", "rfb_kwta", "smart_inhibition"):
        c.mechanisms[name].method = method
      exp = experiment.build(c, mesh)
      state, shardings = exp.init_state()
      batch = sharding.shard_batch(synthetic_batch(c, np.random.default_rng(0)), mesh)
      step = exp.jit_train_step(shardings)
      compiled = step.lower(state, batch).compile()
      memory[label], flops[label] = compiled_bytes(compiled), compiled_flops(compiled)
      holder = {"state": state}

      def run(step=step, holder=holder, batch=batch):
        holder["state"], stats = step(holder["state"], batch)
        return stats["loss"]

      jax.block_until_ready(run())
      fns[label], steps[label] = run, step
    matmul, matmul_flops = matmul_call()
    times = interleaved({**fns, PEAK: matmul}, rounds, min_seconds=2.0)
    peak = matmul_flops / times.pop(PEAK)
    faults = {label: page_faults(fn) for label, fn in fns.items()}
    tokens = CONFIGS[config_name]().data.tokens_per_batch
    for label, seconds in times.items():
      rows.append({"config": config_name, "variant": label, "step_ms": seconds * 1e3,
                   "target_tokens_per_s": tokens / seconds,
                   "vs_dropout": seconds / times["dropout"],
                   "planned_memory_mb": (memory[label] or 0) / 2**20,
                   "gflops_per_step": (flops[label] or 0) / 1e9,
                   # The model's FLOPs (classic's): a mechanism's ops are cost, not work.
                   "share_of_peak": (flops["classic"] or 0) / seconds / peak,
                   "matmul_peak_gflops": peak / 1e9,
                   "page_faults_per_step": faults[label],
                   "compilations": steps[label]._cache_size()})  # pylint: disable=protected-access
  return rows


def bench_loop(steps: int = 40) -> dict:
  """The real training loop's input pipeline on Multi30K (tiny, dropout): the share of
  time spent waiting for batches, compilations (all before the first step, one per batch
  shape) and implicit device-to-host transfers in the step loop (the guard would raise)."""
  c = tiny_config.get_config("dropout")
  c.data.local_dir = _DATA_DIR.value
  c.data.tfds_dir = str(Path(_WORK_DIR.value) / "tfds")
  exp = experiment.build(c)
  mesh = exp.mesh
  data = train_lib.prepare_data(c, Path(_WORK_DIR.value), ())
  state, shardings = exp.init_state()
  batcher = batching.Batcher(*data.ids["train"], c.data.tokens_per_batch, c.data.max_len,
                             multiple_of=mesh.shape["data"], seed=c.seed)
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **_: compiles.append(seconds) if "backend_compile" in event
      else None)
  start = time.perf_counter()
  train_steps = exp.compile_train_steps(state, shardings, batcher)
  compile_seconds, compiled_before = time.perf_counter() - start, len(compiles)

  def timed(get_batch: Callable[[], dict]) -> tuple[float, float]:
    """Wall seconds of `steps` steps, and the host's time building and placing batches."""
    nonlocal state
    host, start = 0.0, time.perf_counter()
    with jax.transfer_guard_device_to_host("disallow"):
      for _ in range(steps):
        t = time.perf_counter()
        batch = get_batch()
        host += time.perf_counter() - t
        state, _ = train_steps[batch["src"].shape](state, batch)
    jax.block_until_ready(state)
    return time.perf_counter() - start, host

  fresh = batcher.train_batches(0)
  prebuilt = [sharding.shard_batch(b, mesh) for b, _ in
              zip(batcher.train_batches(0), range(steps))]
  timed(lambda: sharding.shard_batch(next(batcher.train_batches(0)), mesh))  # Warm-up.
  with_input = without_input = host = 0.0
  for _ in range(3):  # Alternated, so that drifts of the machine hit both alike.
    seconds, host_seconds = timed(lambda: sharding.shard_batch(next(fresh), mesh))
    with_input, host = with_input + seconds, host + host_seconds
    replay = iter(prebuilt)
    without_input += timed(lambda: next(replay))[0]
  return {"steps": steps, "batch_shapes": len(train_steps),
          "compilations_before_training": compiled_before,
          "compile_seconds_before_training": compile_seconds,
          "compilations_during_steps": len(compiles) - compiled_before,
          "seconds_with_input": with_input, "seconds_with_prebuilt_batches": without_input,
          "host_batch_seconds": host,
          "input_wait_share": max(0.0, 1 - without_input / with_input),
          "implicit_device_to_host_transfers": 0}


def bench_decode() -> list[dict]:
  """Sentences/s decoding test_2016_flickr: greedy and beam 5, with and without cache."""
  if _RUN_DIR.value:
    run = eval_lib.Translator.from_workdir(_RUN_DIR.value)
    model, variables, sp, c, mesh = run.model, run.variables, run.sp, run.config, run.mesh
    texts = eval_lib.split_texts(run, Path(_RUN_DIR.value), "test_2016_flickr",
                                 _DATA_DIR.value or None)["source"]
  else:
    c = tiny_config.get_config("dropout")
    c.data.local_dir = _DATA_DIR.value
    c.data.tfds_dir = str(Path(_WORK_DIR.value) / "tfds")
    data = train_lib.prepare_data(c, Path(_WORK_DIR.value), ())
    exp = experiment.build(c)
    model, sp, mesh = exp.model, data.sp, exp.mesh
    src = jnp.ones((1, 8), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), src, src)
    texts = multi30k.load(c.data.source_lang, c.data.target_lang, ("test_2016_flickr",),
                          c.data.tfds_dir, _DATA_DIR.value or None)["test_2016_flickr"]["source"]
  sources = tokenizer.encode(sp, texts)
  rows = []
  for beam in (1, 5):
    for use_cache in (True, False):
      # Without the cache every step re-runs the decoder on the whole prefix: a subset.
      subset = sources if use_cache else sources[:_NO_CACHE_SENTENCES.value]
      seconds = []
      # The first pass includes compilation; the first warm one is often slower than the rest.
      for _ in range(1 + _DECODE_PASSES.value):
        start = time.perf_counter()
        decode.translate_split(model, variables, subset, sp, beam=beam,
                               alpha=c.decode.length_penalty, penalty=c.decode.penalty,
                               tokens_per_batch=_DECODE_TOKENS.value, mesh=mesh,
                               use_cache=use_cache)
        seconds.append(time.perf_counter() - start)
      warm = statistics.median(seconds[1:])
      rows.append({"beam": beam, "kv_cache": use_cache, "sentences": len(subset),
                   "tokens_per_batch": _DECODE_TOKENS.value,
                   "seconds_first": seconds[0], "seconds": warm, "seconds_warm": seconds[1:],
                   "sentences_per_s": len(subset) / warm,
                   "trained": bool(_RUN_DIR.value), "vocab_size": model.cfg.vocab_size,
                   "run": Path(_RUN_DIR.value).name if _RUN_DIR.value else "untrained tiny"})
  return rows


def markdown(results: dict) -> str:
  """The results as Markdown tables."""
  kept = ("kept for reuse" if results.get("freed_memory_kept") else "returned to the system "
          "(HOMEOJAX_KEEP_FREED_MEMORY=0 or not glibc)")
  out = [f"Machine: {results['machine']}; freed memory {kept}", ""]
  if "ops" in results:
    out += ["### Per-site op, forward + backward + statistics update", "",
            "| config | site | shape | mechanism | ms | vs dropout |", "|---|---|---|---|---|---|"]
    out += [f"| {r['config']} | {r['site']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['mechanism']} | {r['ms']:.2f} | {r['vs_dropout']:.2f}x |"
            for r in results["ops"]]
  if "train" in results:
    out += ["", "### Train step", "",
            "Share of peak: the model's FLOPs per step (XLA's cost analysis of the classic "
            "step, the same work for every variant: a mechanism's own operations, which the "
            "GFLOP column counts, are cost, not work) per second, over a 2048² float32 "
            f"matmul's {results['train'][0]['matmul_peak_gflops']:.0f} GFLOP/s in the same "
            "process.", "",
            "| config | variant | step ms | target tokens/s | vs dropout | GFLOP per step | "
            "share of peak | planned memory MB | page faults per step | compilations |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['config']} | {r['variant']} | {r['step_ms']:.0f} | "
            f"{r['target_tokens_per_s']:.0f} | {r['vs_dropout']:.3f}x | "
            f"{r['gflops_per_step']:.1f} | {100 * r['share_of_peak']:.0f}% | "
            f"{r['planned_memory_mb']:.0f} | {r['page_faults_per_step']:.0f} | "
            f"{r['compilations']} |" for r in results["train"]]
  if "loop" in results:
    r = results["loop"]
    out += ["", "### Training loop (tiny, dropout, Multi30K batches)", "",
            f"- {3 * r['steps']} steps: {r['seconds_with_input']:.1f} s with the input pipeline, "
            f"{r['seconds_with_prebuilt_batches']:.1f} s replaying prebuilt batches: "
            f"input wait share {100 * r['input_wait_share']:.1f}% (host batch building "
            f"{r['host_batch_seconds']:.2f} s).",
            f"- Compilations: {r['compilations_before_training']} before the first step "
            f"({r['batch_shapes']} batch shapes, {r['compile_seconds_before_training']:.0f} s "
            f"on {os.cpu_count()} threads), {r['compilations_during_steps']} during "
            f"{7 * r['steps']} steps.",
            "- Implicit device-to-host transfers inside the step loop: 0 (run under "
            "`jax.transfer_guard_device_to_host('disallow')`)."]
  if "decode" in results:
    first = results["decode"][0]
    out += ["", f"### Decoding test_2016_flickr ({first.get('run', 'tiny')}, vocabulary "
            f"{first.get('vocab_size', 5000)}, batches of {first['tokens_per_batch']} source "
            "tokens)", "",
            "| search | KV cache | sentences | seconds (median of the warm passes) | warm "
            "passes s | sentences/s | first pass (with compilation) s |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {'greedy' if r['beam'] == 1 else 'beam ' + str(r['beam'])} | "
            f"{'yes' if r['kv_cache'] else 'no'} | {r['sentences']} | {r['seconds']:.1f} | "
            f"{' / '.join(f'{x:.1f}' for x in r.get('seconds_warm', [r['seconds']]))} | "
            f"{r['sentences_per_s']:.1f} | {r['seconds_first']:.1f} |"
            for r in results["decode"]]
  return "\n".join(out) + "\n"


def main(argv):
  kept = process.keep_freed_memory()
  process.use_cpu_cores(_CPU_DEVICES.value)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  unknown = set(_SECTIONS.value) - {"ops", "train", "loop", "decode"}
  if unknown or set(_CONFIGS.value) - set(CONFIGS):
    raise app.UsageError(f"unknown sections or configs: {unknown or _CONFIGS.value}")
  if set(_VARIANTS.value) - set(STEP_VARIANTS):
    raise app.UsageError(f"unknown variants {sorted(set(_VARIANTS.value) - set(STEP_VARIANTS))}"
                         f": choose from {list(STEP_VARIANTS)}")
  if {"loop", "decode"} & set(_SECTIONS.value) and not _DATA_DIR.value:
    raise app.UsageError("the loop and decode sections need --data_dir (or HOMEOJAX_MULTI30K)")
  results: dict[str, Any] = {
      "machine": f"{process.cpu_description()}, "
                 f"{jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}",
      "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
      "freed_memory_kept": kept}
  sections = {"ops": lambda: bench_ops(_ROUNDS.value), "train": lambda: bench_train(_ROUNDS.value),
              "loop": bench_loop, "decode": bench_decode}
  Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
  for name in _SECTIONS.value:  # Results are written after each section.
    start = time.time()
    results[name] = sections[name]()
    print(f"{name}: {time.time() - start:.0f} s", flush=True)
    Path(_OUT.value + ".json").write_text(json.dumps(results, indent=1) + "\n")
    Path(_OUT.value + ".md").write_text(markdown(results))
  print(markdown(results))


if __name__ == "__main__":
  app.run(main)
