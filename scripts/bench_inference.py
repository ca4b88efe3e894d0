"""Benchmark chapter 10 on the offline SmolLM2-135M-Instruct; prints every number in one run.

Ratios (targets from the chapter's issue):

* KV cache vs no cache, greedy, 256 new tokens: tokens/s ratio (target ≥ 5×);
* our greedy loop (course_utils.inference.greedy_generate) vs ``model.generate``: tokens/s (≥ 0.9×);
* prompt-lookup speculative decoding vs plain greedy on input-grounded prompts (answering from a
  pasted document): wall-clock speed-up with identical output (≥ 1.5×); beside it the self-draft and
  quantized-copy drafts, and transformers' ``prompt_lookup_num_tokens=`` / ``assistant_model=``;
* perplexity on the Python language reference (held out) of fp32, RTN-4/3 and GPTQ-4/3 (g128,
  calibrated on standard-library docstrings): GPTQ-4's increase ≤ half of RTN-4's, GPTQ-3 well ahead
  of RTN-3 (plus AWQ-4 unless ``--no-awq``);
* the memory estimator vs the measured footprint at fp32/bf16/fp16/int8/NF4 and the GGUF file
  (within 10 %), and vs the measured peak of ``generate`` at several batch sizes and contexts.

Medians over ``--repeats`` runs for the generation timings (the no-cache baseline runs once: it is
the slow one). Usage: ``python scripts/bench_inference.py [--threads 2] [--quick]``; ``--quick``
shrinks every size for a check that the script runs (its ratios mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import time


def timed(fn, repeats: int):
    """(last result, median seconds) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def grounded_prompts(tokenizer, n: int, chars: int) -> list:
    """Chat prompts that paste a language-reference topic and ask to quote from it."""
    from course_utils.text_corpus import pydoc_topics

    topics = [d for d in pydoc_topics() if len(d.text) > chars][:n]
    prompts = []
    for doc in topics:
        text = doc.text[:chars]
        message = (f"Here is a document:\n\n{text}\n\nCopy the first paragraph of the document above, word for word.")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        prompts.append(ids)
    return prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--no-awq", action="store_true")
    ap.add_argument("--ppl-windows", type=int, default=32, help="held-out windows of 512 tokens for perplexity")
    ap.add_argument("--calibration", type=int, default=32, help="calibration sequences of 256 tokens")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from course_utils.inference import (
        ModelDraft,
        ModelShape,
        PromptLookupDraft,
        build_variant,
        calibration_ids,
        generate_extra_bytes,
        greedy_generate,
        heldout_ids,
        peak_allocated_bytes,
        perplexity,
        self_draft,
        shipped_gguf_path,
        speculative_generate,
        variant_bytes,
        weight_bytes,
    )
    from course_utils.models import load_causal_lm

    quick = args.quick
    model, tokenizer = load_causal_lm(device="cpu")
    shape = ModelShape.from_config(model.config, "SmolLM2-135M")
    rows: list[tuple[str, str, str, str]] = []  # (what, measured, target, ok)
    print(f"SmolLM2-135M-Instruct, torch threads {torch.get_num_threads()}, repeats {args.repeats}"
          f"{' (QUICK: sizes too small for the ratios to mean anything)' if quick else ''}")

    # 1. KV cache vs none, and our loop vs model.generate
    prompt = tokenizer("The Python language reference describes", return_tensors="pt")["input_ids"]
    n_new = 16 if quick else 256
    no_eos: set[int] = set()
    cached, t_cache = timed(lambda: greedy_generate(model, prompt, n_new, eos_token_ids=no_eos), args.repeats)
    uncached, t_nocache = timed(lambda: greedy_generate(model, prompt, n_new, use_cache=False, eos_token_ids=no_eos), 1)
    assert cached == uncached, "cache and no-cache greedy disagree"
    ratio = t_nocache / t_cache
    print(f"KV cache: {n_new / t_cache:.1f} tok/s vs no cache {n_new / t_nocache:.1f} tok/s → {ratio:.1f}×")
    rows.append((f"KV cache vs no cache ({n_new} new tokens)", f"{ratio:.1f}×", "≥ 5×", str(ratio >= 5)))

    def hf_generate():
        with torch.no_grad():
            return model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                  max_new_tokens=n_new, min_new_tokens=n_new)[0, prompt.shape[1]:].tolist()

    ref, t_hf = timed(hf_generate, args.repeats)
    assert ref == cached, "our greedy loop disagrees with model.generate"
    ratio = t_hf / t_cache
    print(f"model.generate: {n_new / t_hf:.1f} tok/s; ours / generate = {ratio:.2f}× (identical tokens)")
    rows.append(("our greedy loop vs model.generate (tokens/s)", f"{ratio:.2f}×", "≥ 0.9×", str(ratio >= 0.9)))

    # 2. speculative decoding on input-grounded prompts
    prompts = grounded_prompts(tokenizer, 2 if quick else 3, 300 if quick else 700)
    n_spec = 24 if quick else 96
    eos = {tokenizer.eos_token_id}
    drafts = {"prompt lookup (k=10)": (PromptLookupDraft(3), 10),
              "self-draft (first 8 of 30 layers, k=4)": (ModelDraft(self_draft(model, 8)), 4)}
    if not quick:
        drafts["quantized copy (RTN-4 g128, k=4)"] = (ModelDraft(build_variant("RTN-4 g128", model)), 4)
    base_times, plain = [], []
    for ids in prompts:
        out, t = timed(lambda ids=ids: greedy_generate(model, ids, n_spec, eos_token_ids=eos), args.repeats)
        plain.append(out)
        base_times.append(t)
    base_total = sum(base_times)
    for name, (draft, k) in drafts.items():
        total, accepted, drafted, calls, tokens, same = 0.0, 0, 0, 0, 0, True
        for ids, ref_tokens in zip(prompts, plain):
            res, t = timed(lambda ids=ids, draft=draft, k=k: speculative_generate(model, draft, ids, n_spec, k=k,
                                                                                 eos_token_ids=eos), args.repeats)
            total += t
            accepted, drafted, calls, tokens = (accepted + res.accepted, drafted + res.drafted,
                                                calls + res.target_calls, tokens + len(res.tokens))
            same &= res.tokens == ref_tokens
        speedup = base_total / total
        print(f"speculative, {name}: acceptance {accepted / max(drafted, 1):.2f}, {tokens / calls:.2f} tokens per "
              f"target pass, speed-up {speedup:.2f}×, identical output: {same}")
        target = "≥ 1.5×, identical" if name.startswith("prompt lookup") else "(reported)"
        ok = str(speedup >= 1.5 and same) if name.startswith("prompt lookup") else str(same)
        rows.append((f"speculative greedy, {name}", f"{speedup:.2f}× (acc. {accepted / max(drafted, 1):.2f})", target, ok))

    def hf_run(ids, **kw):
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n_spec,
                                  **kw)[0, ids.shape[1]:].tolist()

    for name, kw in [("transformers prompt_lookup_num_tokens=10", {"prompt_lookup_num_tokens": 10}),
                     ("transformers assistant_model=self-draft(8)", {"assistant_model": self_draft(model, 8)})]:
        base_hf = sum(timed(lambda ids=ids: hf_run(ids), args.repeats)[1] for ids in prompts)
        total, same = 0.0, True
        for ids, ref_tokens in zip(prompts, plain):
            out, t = timed(lambda ids=ids, kw=kw: hf_run(ids, **kw), args.repeats)
            total += t
            same &= out[: len(ref_tokens)] == ref_tokens
        print(f"{name}: speed-up {base_hf / total:.2f}× over generate, same tokens as ours: {same}")
        rows.append((name, f"{base_hf / total:.2f}×", "(reported)", str(same)))

    # 3. perplexity: RTN vs GPTQ (and AWQ)
    heldout = heldout_ids(tokenizer)
    seq_len, windows = (128, 4) if quick else (512, args.ppl_windows)
    calib = calibration_ids(tokenizer, 4 if quick else args.calibration, 64 if quick else 256)
    n_layers = 2 if quick else None
    ppl = {"fp32": perplexity(model, heldout, seq_len, max_windows=windows)}
    names = ["RTN-4 g128", "GPTQ-4 g128", "RTN-3 g128", "GPTQ-3 g128"] + ([] if args.no_awq or quick else ["AWQ-4 g128"])
    for name in names:
        t0 = time.perf_counter()
        variant = build_variant(name, model, calib, n_layers=n_layers, progress=False)
        t_build = time.perf_counter() - t0
        ppl[name] = perplexity(variant, heldout, seq_len, max_windows=windows)
        print(f"{name}: perplexity {ppl[name]:.3f} (fp32 {ppl['fp32']:.3f}); built in {t_build:.0f} s")
        del variant
    inc = {k: v - ppl["fp32"] for k, v in ppl.items()}
    rows.append(("GPTQ-4 g128 ppl increase / RTN-4's", f"{inc['GPTQ-4 g128'] / inc['RTN-4 g128']:.2f}", "≤ 0.5",
                 str(inc["GPTQ-4 g128"] <= 0.5 * inc["RTN-4 g128"])))
    rows.append(("GPTQ-3 g128 ppl increase / RTN-3's", f"{inc['GPTQ-3 g128'] / inc['RTN-3 g128']:.2f}", "well below 1",
                 str(inc["GPTQ-3 g128"] <= 0.5 * inc["RTN-3 g128"])))
    if "AWQ-4 g128" in inc:
        rows.append(("AWQ-4 g128 ppl increase / RTN-4's", f"{inc['AWQ-4 g128'] / inc['RTN-4 g128']:.2f}", "(reported)",
                     str(inc["AWQ-4 g128"] < inc["RTN-4 g128"])))

    # 4. memory estimator vs measurements
    worst = 0.0
    measured = {"fp32": model.get_memory_footprint()}
    for dtype, key in [(torch.bfloat16, "bf16"), (torch.float16, "fp16")]:
        measured[key] = build_variant("fp32", model).to(dtype).get_memory_footprint()
    for key, variant in [("int8", "int8 (bitsandbytes)"), ("nf4", "NF4 (bitsandbytes)")]:
        measured[key] = build_variant(variant, model).get_memory_footprint()
    for key, value in measured.items():
        keep = key if key in ("bf16", "fp16") else "fp32"
        estimate = weight_bytes(shape, key, keep_dtype=keep)
        err = estimate / value - 1
        worst = max(worst, abs(err))
        print(f"footprint {key}: measured {value / 1e6:.1f} MB, estimated {estimate / 1e6:.1f} MB ({err:+.1%})")
    gguf_size = shipped_gguf_path().stat().st_size
    est = variant_bytes(shape, "GGUF Q4_1 (shipped)")
    err = est / gguf_size - 1
    worst = max(worst, abs(err))
    print(f"GGUF Q4_1 file: {gguf_size / 1e6:.1f} MB, estimated weights {est / 1e6:.1f} MB ({err:+.1%}; "
          "the file also holds the tokenizer)")
    rows.append(("memory estimator vs measured footprint (worst of fp32/bf16/fp16/int8/NF4/GGUF)", f"{worst:.1%}",
                 "≤ 10%", str(worst <= 0.10)))
    worst_gen = 0.0
    for batch, context in ([(1, 32)] if quick else [(1, 128), (4, 128), (1, 512), (4, 512)]):
        ids = torch.randint(0, shape.vocab, (batch, context), generator=torch.Generator().manual_seed(0))
        n = 8 if quick else 32

        def run(ids=ids, n=n):
            with torch.no_grad():
                return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=n, min_new_tokens=n)

        _, peak = peak_allocated_bytes(run)
        estimate = generate_extra_bytes(shape, context, n, batch, "fp32")
        err = estimate / peak - 1
        worst_gen = max(worst_gen, abs(err))
        print(f"generate peak, batch {batch}, prompt {context} + {n}: measured {peak / 1e6:.1f} MB, "
              f"estimated {estimate / 1e6:.1f} MB ({err:+.1%})")
    rows.append(("memory estimator vs generate's measured peak (worst)", f"{worst_gen:.1%}", "(reported)", "-"))

    print("\n| measurement | result | target | met |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
