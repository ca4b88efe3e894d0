"""course_utils.alignment: LoRA vs PEFT, DPO vs TRL, PPO pieces, reward loss, chat masking, data."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from course_utils.alignment import (
    IGNORE_INDEX,
    LoRALinear,
    adaptive_kl_coef,
    apply_lora,
    bradley_terry_loss,
    chosen_nll,
    count_parameters,
    dpo_loss,
    format_llama2,
    gae,
    judge,
    kl_penalty,
    load_preferences,
    load_sft,
    lora_parameter_count,
    merge_lora,
    ppo_clip_loss,
    sequence_logprobs,
    shaped_rewards,
    tokenize_for_sft,
    value_loss,
    win_rate,
)


def tiny_llama(vocab_size: int = 96, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import offline_model_dir

    return AutoTokenizer.from_pretrained(offline_model_dir())


# ---------------------------------------------------------------- LoRA


def test_lora_linear_shapes_and_zero_init():
    base = nn.Linear(12, 7)
    lora = LoRALinear(base, r=3, alpha=6)
    assert lora.lora_A.shape == (3, 12) and lora.lora_B.shape == (7, 3)
    assert lora.scaling == 2.0 and torch.all(lora.lora_B == 0)
    x = torch.randn(5, 12)
    torch.testing.assert_close(lora(x), base(x))  # B = 0: starts at the pretrained function
    assert not base.weight.requires_grad and lora.lora_A.requires_grad


def test_lora_linear_equals_peft_on_a_llama():
    from peft import LoraConfig, get_peft_model

    ours = tiny_llama()
    theirs = copy.deepcopy(ours)
    base_model = copy.deepcopy(ours)
    r, alpha = 4, 8
    apply_lora(ours, ("q_proj", "v_proj"), r=r, alpha=alpha)
    peft_model = get_peft_model(theirs, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                   target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    n_layers = 0
    for name, mod in ours.named_modules():
        if isinstance(mod, LoRALinear):
            mod.lora_B.data.normal_()  # nonzero B so the update matters
            peft_mod = peft_model.base_model.model.get_submodule(name)
            peft_mod.lora_A["default"].weight.data.copy_(mod.lora_A.data)
            peft_mod.lora_B["default"].weight.data.copy_(mod.lora_B.data)
            n_layers += 1
    assert n_layers == 4
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        ours_out = ours(ids).logits
        peft_out = peft_model(input_ids=ids).logits
        base_out = base_model(ids).logits
    torch.testing.assert_close(ours_out, peft_out, atol=1e-5, rtol=1e-5)
    assert (ours_out - base_out).abs().max() > 1e-3  # the adapters do change the output
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert count_parameters(ours)["trainable"] == trainable == 4 * lora_parameter_count(32, 32, r) // 2 + \
        2 * lora_parameter_count(32, 16, r)


def test_merge_preserves_outputs_and_unmerge_restores():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    w0 = base.weight.detach().clone()
    lora = LoRALinear(base, r=4, alpha=4)
    lora.lora_B.data.normal_()
    x = torch.randn(3, 16)
    before = lora(x)
    lora.merge()
    torch.testing.assert_close(lora(x), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(base(x), before, atol=1e-5, rtol=1e-5)  # the plain layer now carries it
    with pytest.raises(RuntimeError):
        lora.merge()
    lora.unmerge()
    torch.testing.assert_close(base.weight, w0, atol=1e-6, rtol=1e-6)


def test_merge_lora_on_a_model_keeps_logits():
    model = tiny_llama()
    apply_lora(model, ("q_proj", "k_proj", "v_proj", "o_proj"), r=2, alpha=4)
    for mod in model.modules():
        if isinstance(mod, LoRALinear):
            mod.lora_B.data.normal_(std=0.1)
    ids = torch.randint(0, 96, (2, 8))
    with torch.no_grad():
        before = model(ids).logits
        merge_lora(model)
        after = model(ids).logits
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- QLoRA with PEFT (lab03's references)


def _random_adapters(peft_model, seed: int = 0, std: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def test_qlora_lora_config_adapts_every_linear_layer_of_the_blocks():
    from peft import LoraConfig, get_peft_model

    from course_utils.alignment.qlora import LLAMA_LINEAR_LAYERS, lora_config

    config = lora_config(16)
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (16, 32, 0.0, "none")
    assert set(config.target_modules) == set(LLAMA_LINEAR_LAYERS) and config.task_type == "CAUSAL_LM"
    model = tiny_llama()
    linears = [m for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.split(".")[-1] in LLAMA_LINEAR_LAYERS]
    assert len(linears) == 2 * 7
    peft_model = get_peft_model(model, lora_config(4))
    expected = sum(lora_parameter_count(m.in_features, m.out_features, 4) for m in linears)
    assert peft_model.get_nb_trainable_parameters()[0] == count_parameters(peft_model)["trainable"] == expected
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="r must be a positive int"):
            lora_config(bad)


def test_merge_adapters_equals_peft_merge_and_unload():
    from peft import get_peft_model

    from course_utils.alignment.qlora import lora_config, merge_adapters

    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = get_peft_model(copy.deepcopy(base), lora_config(4))
    _random_adapters(peft_model)
    merged = merge_adapters(peft_model, base)
    reference = copy.deepcopy(peft_model).merge_and_unload()  # PEFT's own merge
    assert not merged.training and not any("lora" in name for name, _ in merged.named_parameters())
    ref_state = reference.state_dict()
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], atol=1e-6, rtol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items()), "base must not change"
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
        assert (merged(ids).logits - base(ids).logits).abs().max() > 1e-3
    with pytest.raises(ValueError, match="no LoRA adapter"):
        merge_adapters(base, base)
    with pytest.raises(ValueError, match="does not match"):
        merge_adapters(peft_model, _wider_llama())


def _wider_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_merge_adapters_from_a_4bit_base_into_fp32(tmp_path):
    """QLoRA: adapters trained on an NF4 model are folded into the full-precision weights."""
    pytest.importorskip("bitsandbytes")
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from course_utils.alignment.qlora import lora_config, merge_adapters
    from course_utils.models import nf4_config

    base = tiny_llama(vocab_size=128)
    base.save_pretrained(tmp_path)
    nf4 = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=nf4_config(), device_map={"": "cpu"})
    qlora = get_peft_model(nf4, lora_config(4))
    _random_adapters(qlora, seed=2)
    merged = merge_adapters(qlora, base)
    layer = "model.layers.1.mlp.down_proj"
    adapter = qlora.get_base_model().get_submodule(layer)
    delta = adapter.lora_B["default"].weight @ adapter.lora_A["default"].weight * adapter.scaling["default"]
    torch.testing.assert_close(merged.get_submodule(layer).weight, base.get_submodule(layer).weight + delta,
                               atol=1e-6, rtol=1e-6)
    assert merged.get_submodule(layer).weight.dtype == torch.float32


def test_lora_bad_input():
    with pytest.raises(TypeError, match="base"):
        LoRALinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="r must"):
        LoRALinear(nn.Linear(2, 2), r=0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(tiny_llama(), ("nonexistent",))


# ---------------------------------------------------------------- sequence log-probs and DPO


def test_sequence_logprobs_matches_a_direct_loop_and_shift():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 1]])
    got = sequence_logprobs(logits, labels, mask)
    logp = torch.log_softmax(logits, -1)
    want = torch.stack([sum(logp[b, t - 1, labels[b, t]] for t in range(1, 6) if mask[b, t]) for b in range(3)])
    torch.testing.assert_close(got, want)
    avg = sequence_logprobs(logits, labels, mask, average=True)
    torch.testing.assert_close(avg, want / torch.tensor([3.0, 5.0, 1.0]))
    # labels may hold -100 where the mask is off
    torch.testing.assert_close(sequence_logprobs(logits, labels.masked_fill(mask == 0, -100), mask), want)


def test_sequence_logprobs_equals_the_models_own_loss():
    model = tiny_llama()
    ids = torch.randint(0, 96, (2, 9))
    mask = torch.zeros_like(ids)
    mask[:, 4:] = 1
    with torch.no_grad():
        out = model(ids, labels=ids.masked_fill(mask == 0, -100))
    total = sequence_logprobs(out.logits, ids, mask).sum()
    torch.testing.assert_close(-total / mask[:, 1:].sum(), out.loss, atol=1e-5, rtol=1e-5)


def test_sequence_logprobs_errors():
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    with pytest.raises(ValueError, match="labels"):
        sequence_logprobs(logits, labels[:, :4], torch.ones(2, 4))
    with pytest.raises(ValueError, match="loss_mask"):
        sequence_logprobs(logits, labels, torch.ones(2, 4))
    with pytest.raises(ValueError, match="logits"):
        sequence_logprobs(logits[0], labels, torch.ones(2, 5))
    mask = torch.ones(2, 5)
    mask[1] = 0
    mask[1, 0] = 1  # only position 0: nothing predicts it
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sequence_logprobs(logits, labels, mask)
    with pytest.raises(ValueError, match="token ids"):
        sequence_logprobs(logits, torch.full((2, 5), -100), torch.ones(2, 5))


def test_dpo_loss_formulas():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6) * 3 for _ in range(4))
    h = (pc - rc) - (pr - rr)
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=0.2)
    torch.testing.assert_close(losses, -torch.log(torch.sigmoid(0.2 * h)))
    torch.testing.assert_close(cr, 0.2 * (pc - rc))
    torch.testing.assert_close(rj, 0.2 * (pr - rr))
    smooth, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.2, label_smoothing=0.1)
    torch.testing.assert_close(smooth, -0.9 * torch.log(torch.sigmoid(0.2 * h)) - 0.1 * torch.log(torch.sigmoid(-0.2 * h)))
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="hinge")[0], torch.relu(1 - 0.2 * h))
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="ipo")[0], (h - 2.5) ** 2)
    # equal policy and reference: loss log 2 for sigmoid
    z = torch.zeros(3)
    torch.testing.assert_close(dpo_loss(z, z, z, z)[0], torch.full((3,), math.log(2)))


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.zeros(4, requires_grad=True)
    pr = torch.zeros(4, requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.zeros(4), torch.zeros(4))
    losses.mean().backward()
    assert torch.all(pc.grad < 0) and torch.all(pr.grad > 0)


def test_dpo_loss_errors():
    x = torch.zeros(3)
    for beta in (0, -0.5):
        with pytest.raises(ValueError, match="beta"):
            dpo_loss(x, x, x, x, beta=beta)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(x, torch.zeros(4), x, x)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        dpo_loss([0.0], x, x, x)


def test_dpo_loss_equals_trl_on_the_same_model_and_batch(tokenizer, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy = tiny_llama(vocab_size=len(tokenizer), seed=0)
    reference = tiny_llama(vocab_size=len(tokenizer), seed=1)
    rows = load_preferences("train")[:4]
    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, beta=0.3, use_cpu=True,
                     report_to="none", max_length=64, loss_type=["sigmoid"], logging_steps=1)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        mask = batch["completion_mask"]
        pol = sequence_logprobs(policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                batch["input_ids"], mask * batch["attention_mask"])
        ref = sequence_logprobs(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                batch["input_ids"], mask * batch["attention_mask"])
        avg_pol = sequence_logprobs(policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                    batch["input_ids"], mask, average=True)
        avg_ref = sequence_logprobs(reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                    batch["input_ids"], mask, average=True)
        for loss_type in ("sigmoid", "hinge", "ipo"):
            trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
            trl_loss = trainer.compute_loss(policy, batch)
            p, r = (avg_pol, avg_ref) if loss_type == "ipo" else (pol, ref)  # TRL's IPO averages per token
            ours, _, _ = dpo_loss(p[:4], p[4:], r[:4], r[4:], beta=0.3, loss_type=loss_type)
            torch.testing.assert_close(ours.mean(), trl_loss, atol=1e-5, rtol=1e-5)
        assert abs(trl_loss.item()) > 0
        # RPO: DPO + alpha * NLL of the chosen responses = TRL's loss_type=["sigmoid", "sft"]
        trainer.loss_types, trainer.loss_weights = ["sigmoid", "sft"], [1.0, 0.7]
        trl_loss = trainer.compute_loss(policy, batch)
        counts = (mask * batch["attention_mask"])[:4, 1:].sum(dim=1)
        ours, _, _ = dpo_loss(pol[:4], pol[4:], ref[:4], ref[4:], beta=0.3)
        torch.testing.assert_close(ours.mean() + 0.7 * chosen_nll(pol[:4], counts), trl_loss, atol=1e-5, rtol=1e-5)


def test_train_dpo_sft_weight_keeps_the_chosen_likelihood_up(tokenizer):
    from course_utils.alignment.train import batch_logps, preference_examples, train_dpo

    pairs = preference_examples(tokenizer, load_preferences("train")[:8])
    reference = tiny_llama(vocab_size=len(tokenizer), seed=0)
    chosen_logp = {}
    for weight in (0.0, 5.0):
        policy = copy.deepcopy(reference)
        history = train_dpo(policy, reference, pairs, steps=6, batch_size=4, lr=1e-2, sft_weight=weight,
                            pad_token_id=tokenizer.pad_token_id)
        assert set(history) >= {"loss", "nll", "margin", "accuracy"} and len(history["nll"]) == 6
        with torch.no_grad():
            chosen_logp[weight] = batch_logps(policy, pairs, tokenizer.pad_token_id)[0].mean().item()
    assert chosen_logp[5.0] > chosen_logp[0.0] + 1.0
    with pytest.raises(ValueError, match="sft_weight"):
        train_dpo(policy, reference, pairs, steps=1, sft_weight=-1.0)


def test_chosen_nll_is_the_token_mean_and_checks_input():
    logps, counts = torch.tensor([-2.0, -6.0]), torch.tensor([1, 3])
    assert chosen_nll(logps, counts).item() == pytest.approx(2.0)        # (2 + 6) / (1 + 3)
    with pytest.raises(ValueError, match="same shape"):
        chosen_nll(logps, torch.tensor([1]))
    with pytest.raises(ValueError, match=">= 1"):
        chosen_nll(logps, torch.tensor([1, 0]))


# ---------------------------------------------------------------- reward model and PPO


def test_bradley_terry_loss_equals_direct_formula():
    a, b = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5])
    want = sum(-math.log(1 / (1 + math.exp(-(x - y)))) for x, y in zip(a.tolist(), b.tolist())) / 3
    assert bradley_terry_loss(a, b).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(a, b[:2])


def test_gae_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.tensor([0.5, 1.0, 1.5])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.8)
    # δ2 = 2 − 1.5 = 0.5; δ1 = 0 + 0.9·1.5 − 1 = 0.35; δ0 = 1 + 0.9·1 − 0.5 = 1.4
    # A2 = 0.5; A1 = 0.35 + 0.72·0.5 = 0.71; A0 = 1.4 + 0.72·0.71 = 1.9112
    torch.testing.assert_close(adv, torch.tensor([1.9112, 0.71, 0.5]))
    torch.testing.assert_close(ret, torch.tensor([2.4112, 1.71, 2.0]))
    # λ = 1: advantages are Monte-Carlo returns minus the values
    adv1, ret1 = gae(rewards, values, gamma=0.9, lam=1.0)
    torch.testing.assert_close(ret1, torch.tensor([1 + 0.81 * 2, 0.9 * 2, 2.0]))


def test_gae_right_padding_equals_unpadded():
    r = torch.tensor([[1.0, 0.0, 2.0, 9.0]])
    v = torch.tensor([[0.5, 1.0, 1.5, 7.0]])
    adv, _ = gae(r, v, gamma=0.9, lam=0.8, mask=torch.tensor([[1, 1, 1, 0]]))
    torch.testing.assert_close(adv[0, :3], gae(r[0, :3], v[0, :3], gamma=0.9, lam=0.8)[0])
    assert adv[0, 3] == 0


def test_ppo_clip_behaviour():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    new = torch.log(torch.tensor([1.5, 1.1, 0.5, 0.9])).requires_grad_(True)
    loss, clipfrac = ppo_clip_loss(new, old, adv, clip_eps=0.2)
    # token 0: ratio 1.5 > 1.2 with A > 0 → clipped at 1.2; token 2: ratio 0.5 < 0.8 with A < 0 → clipped at 0.8
    assert loss.item() == pytest.approx(-(1.2 + 1.1 - 0.8 - 0.9) / 4)
    assert clipfrac.item() == pytest.approx(0.5)
    loss.backward()
    assert new.grad[0] == 0 and new.grad[2] == 0  # clipped tokens give no gradient
    assert new.grad[1] < 0 and new.grad[3] > 0
    # pessimistic: a ratio that makes things worse is not clipped (A < 0, ratio 1.5)
    worse, _ = ppo_clip_loss(torch.log(torch.tensor([1.5])), torch.zeros(1), torch.tensor([-1.0]))
    assert worse.item() == pytest.approx(1.5)


def test_value_loss_clipping():
    v, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert value_loss(v, old, ret, clip_eps=None).item() == pytest.approx(0.5)
    # clipped prediction 0.2 is farther from 3 → the max picks it: 0.5·2.8²
    assert value_loss(v, old, ret, clip_eps=0.2).item() == pytest.approx(0.5 * 2.8 ** 2)


def test_kl_penalty_and_shaped_rewards():
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    ref = torch.log(torch.tensor([[0.5, 0.4, 0.3]]))
    k3 = kl_penalty(lp, ref, "k3")
    assert torch.all(k3 >= 0) and k3[0, 0] == 0
    torch.testing.assert_close(kl_penalty(lp, ref), lp - ref)
    mask = torch.tensor([[1, 1, 0]])
    rewards = shaped_rewards(torch.tensor([2.0]), lp, ref, mask, kl_coef=0.1)
    want = -0.1 * (lp - ref) * mask
    want[0, 1] += 2.0
    torch.testing.assert_close(rewards, want)
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(lp, ref, "k9")


def test_adaptive_kl_coef_moves_toward_the_target():
    assert adaptive_kl_coef(0.1, observed_kl=4.0, target=4.0) == pytest.approx(0.1)
    assert adaptive_kl_coef(0.1, observed_kl=4.4, target=4.0) == pytest.approx(0.11)      # e = 0.1
    assert adaptive_kl_coef(0.1, observed_kl=40.0, target=4.0) == pytest.approx(0.12)     # e clipped to 0.2
    assert adaptive_kl_coef(0.1, observed_kl=0.0, target=4.0, rate=0.5) == pytest.approx(0.09)
    with pytest.raises(ValueError, match="target"):
        adaptive_kl_coef(0.1, 1.0, target=0.0)
    with pytest.raises(ValueError, match="rate"):
        adaptive_kl_coef(0.1, 1.0, target=1.0, rate=0.0)


# ---------------------------------------------------------------- chat formatting


def test_llama2_format_is_the_syllabus_layout():
    text = format_llama2("What is the capital of France?", "The capital of France is Paris.",
                         system="You are a helpful assistant.")
    assert text == ("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
                    "What is the capital of France? [/INST] The capital of France is Paris. </s>")


@pytest.mark.parametrize("template", ["chat", "llama2"])
def test_sft_labels_mask_the_prompt(tokenizer, template):
    ex = tokenize_for_sft(tokenizer, "Add the two numbers.\n\n2 + 3", "5", system="Be brief.", template=template)
    labels, ids = ex["labels"], ex["input_ids"]
    n_prompt = labels.count(IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    response = tokenizer.decode(ids[n_prompt:])
    assert response.lstrip().startswith("5")
    assert ("<|im_end|>" in response) if template == "chat" else response.strip().endswith("</s>")
    assert "2 + 3" in tokenizer.decode(ids[:n_prompt])


# ---------------------------------------------------------------- data


def test_datasets_sizes_split_and_judge():
    train, held = load_sft("train"), load_sft("heldout")
    assert len(train) >= 1600 and len(train) + len(held) >= 2000
    assert not {r["input"] for r in train} & {r["input"] for r in held}
    assert all(judge(r["output"], r["answer"])["strict"] for r in train + held)
    prefs = load_preferences("train") + load_preferences("heldout")
    assert len(prefs) >= 1000
    assert all(judge(p["chosen"], p["answer"])["strict"] and not judge(p["rejected"], p["answer"])["strict"]
               for p in prefs)
    chat = load_sft("train", chat=True)[0]["messages"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]


def test_generator_is_deterministic_and_matches_the_shipped_files():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("make_alignment_data", root / "scripts" / "make_alignment_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    splits = module.generate(0)
    assert splits == module.generate(0)
    shipped = [json.loads(x) for x in (root / "course_utils/data/alignment/pref_heldout.jsonl").read_text().splitlines()]
    assert splits["pref_heldout"] == shipped


def test_judge_and_win_rate():
    assert judge("1200", 1200) == {"correct": True, "formatted": True, "strict": True}
    assert judge("The answer is 1,200 m.", 1200) == {"correct": True, "formatted": False, "strict": False}
    assert judge("12", 1200)["correct"] is False
    wr = win_rate(["5", "x", "7"], ["5 apples", "6", "7"], [5, 6, 7])
    assert (wr["wins"], wr["losses"], wr["ties"]) == (1, 1, 1) and wr["win_rate"] == pytest.approx(0.5)


def test_general_text_windows_and_sources(tokenizer):
    from course_utils.alignment.train import general_text_examples

    topics = general_text_examples(tokenizer, n=3, seq_len=16)
    docstrings = general_text_examples(tokenizer, n=3, seq_len=16, source="docstrings")
    for ex in topics + docstrings:
        assert len(ex["input_ids"]) == 16 and ex["labels"] == ex["input_ids"] and ex["attention_mask"] == [1] * 16
    assert [e["input_ids"] for e in topics] != [e["input_ids"] for e in docstrings]
    assert general_text_examples(tokenizer, n=2, seq_len=16, offset=1)[0] == topics[1]
    with pytest.raises(ValueError, match="source"):
        general_text_examples(tokenizer, n=1, source="wikipedia")
    with pytest.raises(ValueError, match="too much"):
        general_text_examples(tokenizer, n=10**6, seq_len=64)


@pytest.mark.gpu
def test_cuda_qlora_sft_and_dpo_steps():
    """On CUDA: QLoRA (bitsandbytes NF4 + PEFT LoRA) learns a batch, and a DPO step with our loss runs and
    moves the margin; the sequence log-probabilities equal the CPU computation."""
    from peft import LoraConfig, get_peft_model

    from course_utils.alignment.quantized import load_quantized
    from course_utils.alignment.train import preference_examples, sft_examples, train_dpo, train_lm
    from course_utils.models import load_causal_lm

    nf4, tokenizer = load_quantized("smollm2-135m-instruct", "nf4", device="cuda")
    qlora = get_peft_model(nf4, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                           task_type="CAUSAL_LM"))
    batch = sft_examples(tokenizer, load_sft("train")[:8])
    losses = train_lm(qlora, batch, steps=6, batch_size=8, lr=2e-3, pad_token_id=tokenizer.pad_token_id)
    assert losses[-1] < 0.8 * losses[0]

    reference, _ = load_causal_lm("smollm2-135m-instruct", device="cuda")
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = apply_lora(copy.deepcopy(reference), ("q_proj", "v_proj"), r=8, alpha=16)
    pairs = preference_examples(tokenizer, load_preferences("train")[:8])
    history = train_dpo(policy, reference, pairs, steps=4, batch_size=8, lr=1e-3, sft_weight=1.0,
                        pad_token_id=tokenizer.pad_token_id)
    assert all(math.isfinite(x) for x in history["loss"]) and history["margin"][-1] > history["margin"][0]

    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels, mask = torch.randint(0, 7, (2, 5)), torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    torch.testing.assert_close(sequence_logprobs(logits.cuda(), labels.cuda(), mask.cuda()).cpu(),
                               sequence_logprobs(logits, labels, mask), atol=1e-5, rtol=1e-5)
