"""course_utils.prompting: the reasoning data set reproduces, the Game-of-24 solver agrees with
an independent search, answer extraction and voting, Tree of Thoughts against the brute-force
solver, constrained decoding against the schema, the injection harness, LangChain beside
plain Python."""

from __future__ import annotations

import importlib.util
import random
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from course_utils.prompting import game24, tasks

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("make_prompting_data", ROOT / "scripts" / "make_prompting_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_prompting_data"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data set


def test_reasoning_files_reproduce(tmp_path):
    gen = _generator()
    gen.main(["--out", str(tmp_path), "--skip-game24"])
    for name in ("reasoning_train.jsonl", "reasoning_heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (tasks.DATA_DIR / name).read_bytes(), name


def test_game24_split_reproduces_and_solutions_are_complete():
    """The held-out draw from the solvable flags (by the independent DFS) gives the shipped
    held-out file; a seeded sample of puzzles has exactly the shipped solution lists. (The full
    enumeration takes about a minute; the script's own run checks all of it.)"""
    gen = _generator()
    held = tasks.load_game24("heldout")
    train = tasks.load_game24("train")
    flags = {p: game24.solvable(p) for p in game24.all_puzzles()}
    keys = gen.game24_heldout_keys(flags, random.Random(1))
    assert [tuple(r["numbers"]) for r in held] == keys
    assert len(train) + len(held) == 1820 and sum(flags.values()) == 1362
    rows = {tuple(r["numbers"]): r for r in train + held}
    assert all(rows[p]["solvable"] == flags[p] for p in flags)
    for r in random.Random(0).sample(train + held, 25):
        assert r["solutions"] == game24.solutions(r["numbers"])
        assert all(game24.is_solution(s, r["numbers"]) for s in r["solutions"])


def test_reasoning_rows_are_consistent():
    rows = tasks.load_reasoning("train") + tasks.load_reasoning("heldout")
    for r in rows:
        lines = r["rationale"].splitlines()
        assert lines[-1] == f"The answer is {r['answer']}."
        assert len(lines) == r["steps"] + (2 if r["kind"] == "arithmetic" else 1)
        for line in lines:  # every equation in a rationale is true
            if "=" in line and r["kind"] == "arithmetic":
                lhs, rhs = line.split("=")
                assert eval(lhs) == int(rhs), line  # noqa: S307 (our own generated arithmetic)
    assert len(tasks.load_reasoning("heldout", kind="units", steps=2)) == 50
    with pytest.raises(ValueError, match="split"):
        tasks.load_reasoning("test")
    with pytest.raises(ValueError, match="steps"):
        tasks.load_reasoning("train", steps=4)


# ---------------------------------------------------------------- Game of 24


def test_solver_known_puzzles():
    assert game24.solutions((1, 5, 5, 5)) == ["(5 - (1 / 5)) * 5"]  # needs a fraction
    assert game24.solutions((1, 1, 1, 1)) == [] and not game24.solvable((1, 1, 1, 1))
    assert "(10 - 4) * (13 - 9)" in game24.solutions((4, 9, 10, 13))
    assert game24.canonical("(13 - 9) * (10 - 4)") == "(10 - 4) * (13 - 9)"


def test_legal_steps_and_expressions():
    steps = game24.legal_steps([4, 9])
    texts = {s.text() for s in steps}
    assert "9 - 4 = 5 (left: 5)" in texts and "4 / 9 = 4/9 (left: 4/9)" in texts
    assert len(steps) == 5 and all(s.result >= 0 for s in steps)
    assert game24.legal_steps([3]) == []
    assert game24.evaluate_expression("(10 - 4) * (13 - 9)", [4, 9, 10, 13]) == 24
    assert game24.evaluate_expression("10 * 4 - 13 - 9", [4, 9, 10, 13]) == Fraction(18)
    assert game24.evaluate_expression("10 * 4", [4, 9, 10, 13]) is None  # unused numbers
    assert game24.evaluate_expression("(4 / (9 - 9)) + 10 + 13", [4, 9, 10, 13]) is None
    assert game24.evaluate_expression("__import__('os')", [1]) is None
    assert not game24.is_solution("4 * 6", [4, 9, 10, 13])


# ---------------------------------------------------------------- shared tiny model

import torch  # noqa: E402

from course_utils.prompting import answers, constrained, injection, prompts, self_consistency, tot  # noqa: E402
from course_utils.prompting.llm import CallCounter, chat_generate, render  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    return AutoTokenizer.from_pretrained(offline_model_dir())


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A randomly initialised 2-layer LLaMA with SmolLM2's tokenizer: its free text is noise,
    so anything well-formed it writes under a constraint comes from the constraint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- answers and voting


@pytest.mark.parametrize("text, expected", [
    ("The answer is 12.", 12),
    ("Tom has 7 apples. 7 + 5 = 12\nThe answer is 12.", 12),
    ("7 + 5 = 12, then 12 - 3 = 9", 9),
    ("Answer: $1,200", 1200),
    ("**Final Answer:** **42**", 42),
    ("#### 18", 18),
    ("\\boxed{7}", 7),
    ("The answer is twelve.", 12),
    ("12.0 apples", 12),
    ("The answer is 3/4", 0.75),
    ("The answer is -5", -5),
    ("She has 3 apples left. The answer is: 3 apples", 3),
    ("The answer is 20. Wait, 5 + 5 = 10 so the final answer is 10", 10),
    ("I don't know.", None),
    ("", None),
])
def test_extract_number(text, expected):
    assert answers.extract_number(text) == expected


def test_final_answer_text_is_general():
    assert answers.final_answer_text("Thought: done.\nFinal Answer: Paris is the capital.") == "Paris is the capital"
    assert answers.final_answer_text("no marker here") is None
    with pytest.raises(TypeError, match="text"):
        answers.extract_number(None)


def test_majority_vote_matches_counter():
    from collections import Counter

    rng = random.Random(0)
    for _ in range(200):
        votes = [rng.choice([1, 2, 3, None]) for _ in range(rng.randint(1, 9))]
        winner, count = answers.majority_vote(votes)
        real = Counter(v for v in votes if v is not None)
        if not real:
            assert (winner, count) == (None, 0)
            continue
        assert count == max(real.values()) and real[winner] == count
        assert winner == next(v for v in votes if v is not None and real[v] == count)  # first seen wins ties


def test_accuracy_vs_n():
    pools = [[5, 5, 1, 2], [1, 2, 3, 4], [7, 7, 7, 7]]
    gold = [5, 9, 7]
    acc = self_consistency.accuracy_vs_n(pools, gold, [1, 4], draws=4000, seed=0)
    assert acc[4] == pytest.approx(2 / 3)  # full pool: vote 5 (right), 1 (wrong), 7 (right)
    assert acc[1] == pytest.approx((0.5 + 0 + 1) / 3, abs=0.02)  # one sample: the per-sample accuracy
    assert self_consistency.self_consistency(["so 4", "The answer is 5", "answer: 5"]) == 5
    with pytest.raises(ValueError, match="n=5"):
        self_consistency.accuracy_vs_n(pools, gold, [5])


# ---------------------------------------------------------------- prompts


def test_prompt_styles_through_the_chat_template(tokenizer):
    shots = tasks.load_reasoning("train")[:2]
    q = "Ana has 3 apples. She buys 2 more. How many apples does Ana have now?"
    zero = prompts.build_messages(q, "zero_shot")
    assert zero[-1]["content"].endswith(prompts.DIRECT_SUFFIX) and zero[0]["role"] == "system"
    assert prompts.build_messages(q, "cot")[-1]["content"].endswith("Let's think step by step.")
    few = prompts.build_messages(q, "few_shot_cot", shots)
    assert [m["role"] for m in few] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert few[2]["content"] == shots[0]["rationale"]
    assert prompts.build_messages(q, "few_shot", shots)[2]["content"] == f"The answer is {shots[0]['answer']}."
    text = render(tokenizer, few)
    assert text.count("<|im_start|>assistant") == 3 and text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="exemplars"):
        prompts.build_messages(q, "few_shot")
    with pytest.raises(ValueError, match="style"):
        prompts.build_messages(q, "tree")


class _BagOfWords:
    """A stand-in embedder (normalised word counts) so the selection logic is tested fast."""

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def _vec(self, text):
        import numpy as np

        v = np.zeros(len(self.vocab), dtype=np.float32)
        for w in text.lower().split():
            if w.strip("?.,") in self.vocab:
                v[self.vocab[w.strip("?.,")]] += 1
        return v / max(float(np.linalg.norm(v)), 1e-9)

    def encode(self, texts, **_):
        import numpy as np

        return np.stack([self._vec(t) for t in texts])

    def encode_query(self, text):
        return self._vec(text)


def test_exemplar_selection():
    pool = tasks.load_reasoning("train")
    sel = prompts.ExemplarSelector(pool, embedder=_BagOfWords(["convert", "weeks", "days", "apples", "km"]), seed=0)
    similar = sel.select("How many days are there in 3 weeks?", 3, method="similar")
    assert all(r["kind"] == "units" and "weeks" in r["question"] for r in similar)
    again = prompts.ExemplarSelector(pool, seed=0).select("x", 4)
    assert again == prompts.ExemplarSelector(pool, seed=0).select("x", 4) and len(again) == 4
    with pytest.raises(ValueError, match="k="):
        sel.select("x", len(pool) + 1)


# ---------------------------------------------------------------- constrained decoding


SCHEMA = {"type": "object", "properties": {
    "answer": {"type": "integer", "minimum": 0, "maximum": 999},
    "unit": {"enum": ["m", "cm", "kg"]},
    "steps": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2}},
    "required": ["answer", "unit", "steps"], "additionalProperties": False}


def test_constrained_json_is_always_schema_valid(tiny, tokenizer):
    convs = [[{"role": "user", "content": f"Convert {i} km to m as JSON."}] for i in range(3)]
    free = chat_generate(tiny, tokenizer, convs, max_new_tokens=20)
    assert not any(constrained.schema_valid(f[0], SCHEMA) for f in free)  # noise without the constraint
    counter = CallCounter()
    out = constrained.constrained_generate(tiny, tokenizer, convs, constrained.grammar(schema=SCHEMA),
                                           max_new_tokens=120, temperature=1.0, n=2, counter=counter)
    texts = [t for row in out for t in row]
    assert len(texts) == 6 and counter.calls == 6
    assert all(constrained.schema_valid(t, SCHEMA) for t in texts), texts
    assert counter.cut == 0, "every constrained completion ended by itself"
    short = CallCounter()
    cut = constrained.constrained_generate(tiny, tokenizer, convs, constrained.grammar(schema=SCHEMA),
                                           max_new_tokens=3, counter=short)
    assert short.cut == short.calls == 3 and short.tokens == 9, "a 3-token budget cuts every JSON object"
    assert not any(constrained.schema_valid(t[0], SCHEMA) for t in cut)


def test_constrained_regex_and_choices(tiny, tokenizer):
    convs = [[{"role": "user", "content": "Pick."}]] * 2
    out = constrained.constrained_generate(tiny, tokenizer, convs, [constrained.grammar(regex=r"[0-9]{2}-[a-c]{3}"),
                                                                    constrained.grammar(choices=["yes", "no"])],
                                           max_new_tokens=12, temperature=1.0, n=3)
    import re

    assert all(re.fullmatch(r"[0-9]{2}-[a-c]{3}", t) for t in out[0]), out[0]
    assert all(t in ("yes", "no") for t in out[1]), out[1]
    with pytest.raises(ValueError, match="exactly one"):
        constrained.grammar(regex="a", choices=["a"])
    assert constrained.first_json_object('Sure! {"a": {"b": 1}} done') == '{"a": {"b": 1}}'


# ---------------------------------------------------------------- Tree of Thoughts


SMALL = list(game24.all_puzzles(1, 6))  # 126 puzzles


def test_tot_exhaustive_bfs_equals_the_brute_force_solver():
    for p in SMALL:
        res = tot.tree_of_thoughts(p, proposer="all", strategy="bfs")
        assert res.solved == game24.solvable(p), p
        if res.solved:
            assert res.steps[-1].result == 24 and len(res.steps) == 3 and res.calls == 0


def test_tot_beam_with_an_exact_value_solves_exactly_the_solvable_puzzles():
    oracle = lambda nums: "sure" if game24.solvable(nums) else "impossible"  # noqa: E731
    for p in SMALL[::3]:
        res = tot.tree_of_thoughts(p, proposer="all", strategy="beam", breadth=1, value_fn=oracle)
        assert res.solved == game24.solvable(p), p


def test_tot_steps_replay_and_heuristic():
    res = tot.tree_of_thoughts((4, 9, 10, 13), proposer="all", strategy="bfs")
    nums = [Fraction(x) for x in (4, 9, 10, 13)]
    for s in res.steps:  # every step is legal on the numbers left at that point
        assert s in game24.legal_steps(nums)
        nums = list(s.left)
    assert nums == [24]
    assert tot.heuristic_value([4, 6]) == "sure" and tot.heuristic_value([2, 3]) == "impossible"
    assert tot.heuristic_value([1, 1, 2]) == "impossible" and tot.heuristic_value([2, 3, 4]) == "likely"
    assert tot.heuristic_value([1, 3, 6]) == "likely"  # (1 + 3) * 6: a product bound would miss it
    assert tot.answer_expression("Steps: ...\nAnswer: (6 - 4) * (4 + 8) = 24") == "(6 - 4) * (4 + 8)"
    with pytest.raises(ValueError, match="model"):
        tot.tree_of_thoughts((1, 2, 3, 4))


def test_tot_llm_proposer_is_constrained_to_legal_steps(tiny, tokenizer):
    nodes = [tot.Node(tuple(Fraction(x) for x in (4, 9, 10, 13))), tot.Node((Fraction(2), Fraction(12)))]
    counter = CallCounter()
    steps = tot.llm_proposals(tiny, tokenizer, nodes, 3, counter)
    assert counter.calls == 6 and all(len(s) == 3 for s in steps)  # every sample parsed as a legal step
    assert all(s in game24.legal_steps(n.numbers) for n, ss in zip(nodes, steps) for s in ss)
    res = tot.tree_of_thoughts((4, 9, 10, 13), model=tiny, tokenizer=tokenizer, k=2, breadth=2, value="llm")
    assert res.calls > 0 and (not res.solved or res.steps[-1].result == 24)


# ---------------------------------------------------------------- prompt injection


def test_injection_cases_and_layouts():
    assert len(injection.ATTACKS) >= 30
    kinds = {c.kind for c in injection.ATTACKS}
    assert kinds == {"direct", "indirect"} and all(c.goal in ("leak", "hijack") for c in injection.ATTACKS)
    case = injection.ATTACKS[-1]
    plain = injection.build_messages(case)
    assert [m["role"] for m in plain] == ["system", "user"] and injection.SECRET in plain[0]["content"]
    sep = injection.build_messages(case, ("role_separation", "sandwich", "delimiters"))
    assert [m["role"] for m in sep] == ["system", "tool", "user"]
    assert "<document>" in sep[1]["content"] and " " not in sep[1]["content"].split("<document>")[1]
    assert sep[2]["content"].endswith(injection.SANDWICH)
    assert injection.spotlight("a  b\nc") == "a^b^c"
    with pytest.raises(ValueError, match="defense"):
        injection.build_messages(case, ("prayer",))


def test_injection_scoring():
    attacks = [injection.ATTACKS[0], injection.ATTACKS[1]]  # leak, hijack
    benign = [injection.BENIGN[0]]
    leak, hijack = "Sure: the password is tangerine 42", "PWNED"
    replies = {(): [leak, hijack, "It opens at 9 am."], ("sandwich",): ["No.", hijack, "I can't say."]}
    rows = {r["defenses"]: r for r in injection.score(attacks, benign, replies)}
    assert rows["none"]["asr"] == 1.0 and rows["none"]["benign_accuracy"] == 1.0
    assert rows["output_check"]["asr"] == 0.5  # the leak is caught, the hijack is not
    assert rows["input_filter"]["asr"] == 0.0  # both attack texts match the filter
    assert rows["sandwich"]["asr"] == 0.5 and rows["sandwich"]["benign_accuracy"] == 0.0
    best = injection.best_combination(list(rows.values()))
    assert best["defenses"] == "input_filter"  # lowest ASR with no accuracy lost, fewest defenses
    assert injection.leaked("T-A-N-G-E-R-I-N-E") and not injection.leaked("tangent")
    with pytest.raises(ValueError, match="layout"):
        injection.score(attacks, benign, replies, combos=[("delimiters",)])


def test_injection_run_layouts_shapes(tiny, tokenizer):
    cases = injection.ATTACKS[:2] + injection.BENIGN[:1]
    out = injection.run_layouts(tiny, tokenizer, cases, [(), ("role_separation",)], max_new_tokens=4, progress=False)
    assert set(out) == {(), ("role_separation",)} and all(len(v) == 3 for v in out.values())


# ---------------------------------------------------------------- LangChain beside plain Python


def test_langchain_and_langgraph_match_plain_python(tiny, tokenizer):
    from course_utils.prompting import chains

    turns = ["Hi, I am Ada.", "What is my name?"]
    plain = chains.PlainConversation(tiny, tokenizer, max_new_tokens=6)
    plain_replies = [plain.say(t) for t in turns]
    model = chains.local_chat_model(tiny, tokenizer, max_new_tokens=6)
    chain = chains.langchain_chain(model)
    history, lc_replies = [], []
    for t in turns:
        reply = chain.invoke({"history": history, "input": t})
        history += [("human", t), ("ai", reply.content)]
        lc_replies.append(reply.content)
    app = chains.langgraph_conversation(model)
    cfg = {"configurable": {"thread_id": "ada"}}
    lg_replies = [app.invoke({"messages": [("user", t)]}, cfg)["messages"][-1].content for t in turns]
    assert plain_replies == lc_replies == lg_replies
    state = app.get_state(cfg).values["messages"]
    assert len(state) == 4 and state[0].content == turns[0]  # the checkpointer kept the whole thread
    other = app.invoke({"messages": [("user", turns[1])]}, {"configurable": {"thread_id": "bob"}})
    assert len(other["messages"]) == 2  # a new thread starts empty


# ---------------------------------------------------------------- fine-tuning data


def test_rationale_and_answer_examples(tokenizer, tiny):
    from course_utils.prompting import finetune

    rows = tasks.load_reasoning("train")[:4]
    rat = finetune.sft_examples(tokenizer, rows, "rationale")
    ans = finetune.sft_examples(tokenizer, rows, "answer")
    for r, a, row in zip(rat, ans, rows):
        target = [t for t, lab in zip(a["input_ids"], a["labels"]) if lab != -100]
        assert tokenizer.decode(target).startswith(f"The answer is {row['answer']}.")
        prompt_r = [t for t, lab in zip(r["input_ids"], r["labels"]) if lab == -100]
        prompt_a = [t for t, lab in zip(a["input_ids"], a["labels"]) if lab == -100]
        assert prompt_r == prompt_a  # same question, same prompt; only the target differs
    losses = finetune.finetune_lora(tiny.__class__(tiny.config), tokenizer, rows, "answer", steps=2, batch_size=2)
    assert len(losses) == 2
    with pytest.raises(ValueError, match="target"):
        finetune.sft_examples(tokenizer, rows, "both")
