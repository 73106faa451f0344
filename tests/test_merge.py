"The merge stage: the paper's TIES merge through mergekit, checked against an independent TIES, and bad input."
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sec_nb.config import MergeSpec, ModelShape
from sec_nb.convert import load_hf_state
from sec_nb.merge import (MergeInputError, check_models, paper_merge_config, planned_weights, run_merge,
                          sweep_configs, toy_merge_inputs, validate_config)

# 4 layers, so the gradients [a, b, c, d] land exactly on layers 0..3
SHAPE = ModelShape(n_layers=4, hidden=32, ffn_hidden=64, n_heads=4, n_kv_heads=2, vocab_size=256, seq_len=32)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    models = toy_merge_inputs(root, SHAPE, seed=0)
    args = [models[r] for r in ("base", "cpt", "instruct")]
    bf16 = run_merge(paper_merge_config(*args), root / "merge" / "ties", tokenizer_from=models["instruct"])
    fp32_cfg = {**paper_merge_config(*args), "dtype": "float32"}
    run_merge(fp32_cfg, root / "merge" / "ties_fp32")
    print(f"TIES merge (bf16): {bf16['seconds']:.2f} s")
    sd = {r: load_hf_state(models[r]) for r in models}
    return root, models, sd


def independent_ties(base, models, weights, densities):
    "TIES (Yadav et al. 2023) as mergekit configures it: magnitude trim, sign of the weighted sum, disjoint weighted mean."
    tvs = []
    for t, d in zip(models, densities):
        tv = (t - base).flatten()
        k = max(1, int(d * tv.numel())) if d < 1 else tv.numel()
        kept = torch.zeros_like(tv)
        idx = torch.topk(tv.abs(), k).indices
        kept[idx] = tv[idx]
        tvs.append(kept)
    tvs = torch.stack(tvs)
    w = torch.tensor(weights).unsqueeze(1)
    sign = torch.sign((tvs * w).sum(0))
    sign[sign == 0] = 1
    agree = (torch.sign(tvs) == sign).float()
    num = (tvs * w * agree).sum(0)
    den = (w * agree).sum(0)
    den[den == 0] = 1
    return base + (num / den).reshape(base.shape)


def test_zero_cpt_weight_gives_instruct(toy):
    root, _, sd = toy
    merged = load_hf_state(root / "merge" / "ties")
    last = [k for k in merged if k.startswith("model.layers.3.self_attn.")]
    assert len(last) == 4
    for k in last:
        want = sd["instruct"][k].to(torch.bfloat16).float()
        scale = torch.maximum(sd["instruct"][k].abs(), sd["base"][k].abs())
        assert ((merged[k].float() - want).abs() <= 2 * 2.0 ** -7 * scale + 1e-30).all(), k
        # control: the same tensor in layer 0 (CPT weight 0.25) is not the instruct model's
        k0 = k.replace("layers.3", "layers.0")
        assert (merged[k0].float() - sd["instruct"][k0].float()).abs().max() > 1e-3
    fp32 = load_hf_state(root / "merge" / "ties_fp32")
    for k in last: assert torch.allclose(fp32[k], sd["instruct"][k], atol=1e-6), k


@pytest.mark.parametrize("name,w_cpt", [("model.layers.1.mlp.down_proj.weight", 0.5),
                                        ("model.layers.0.self_attn.q_proj.weight", 0.25),
                                        ("model.embed_tokens.weight", 0.25)])
def test_independent_ties_agrees_with_mergekit(toy, name, w_cpt):
    root, _, sd = toy
    got = load_hf_state(root / "merge" / "ties_fp32")[name]
    want = independent_ties(sd["base"][name], [sd["cpt"][name], sd["instruct"][name]], [w_cpt, 1 - w_cpt], [0.75, 1.0])
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()
    # and the merge is really a mixture, not one of its inputs
    assert (got - sd["instruct"][name]).abs().max() > 1e-3 and (got - sd["cpt"][name]).abs().max() > 1e-3


def test_planned_weights_follow_listing_1(toy):
    _, models, _ = toy
    plan = planned_weights(paper_merge_config(models["base"], models["cpt"], models["instruct"]))
    cpt = plan[plan.model == str(models["cpt"])].set_index("tensor")
    assert cpt.weight["model.layers.3.self_attn.o_proj.weight"] == 0
    assert cpt.weight["model.layers.3.mlp.up_proj.weight"] == 0.25
    assert cpt.weight["model.layers.2.self_attn.o_proj.weight"] == 0.5
    assert cpt.weight["lm_head.weight"] == 0.25 and (cpt.density == 0.75).all()


def test_merged_model_loads_in_transformers_and_megatron(toy):
    root, _, _ = toy
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from sec_nb.convert import init_megatron, megatron_from_hf, megatron_logits
    folder = root / "merge" / "ties"
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tok("Net revenue increased")["input_ids"]])
    with torch.no_grad(): a = hf(ids).logits
    init_megatron()
    b = megatron_logits(megatron_from_hf(folder).eval(), ids)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a - b).abs().max() < 1e-4


def test_bad_input_stops_before_compute(toy, tmp_path):
    root, models, _ = toy
    good = paper_merge_config(models["base"], models["cpt"], models["instruct"])
    out = tmp_path / "out"
    bad = copy.deepcopy(good); bad["models"][0]["model"] = str(tmp_path / "missing")
    with pytest.raises(MergeInputError, match="missing does not exist"): run_merge(bad, out)
    # a model with another vocabulary size
    other = toy_merge_inputs(tmp_path / "v", ModelShape(**{**SHAPE.__dict__, "vocab_size": 300}))
    bad = copy.deepcopy(good); bad["models"][0]["model"] = str(other["cpt"])
    with pytest.raises(MergeInputError, match="vocabulary size"): run_merge(bad, out)
    # another architecture
    cfg = json.loads((other["instruct"] / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral", vocab_size=SHAPE.vocab_size)
    (other["instruct"] / "config.json").write_text(json.dumps(cfg))
    bad = copy.deepcopy(good); bad["models"][1]["model"] = str(other["instruct"])
    with pytest.raises(MergeInputError, match="architecture"): run_merge(bad, out)
    # invalid configurations
    bad = copy.deepcopy(good); bad["models"][0]["parameters"]["density"] = 1.5
    with pytest.raises(MergeInputError, match="density"): run_merge(bad, out)
    with pytest.raises(MergeInputError, match="unknown merge_method"): validate_config({**good, "merge_method": "tie"})
    with pytest.raises(MergeInputError, match="invalid merge configuration"):
        validate_config({**good, "dtype": 3, "models": "x"})
    assert not out.exists()                                   # nothing was merged
    assert check_models(models)["base"]["vocab_size"] == SHAPE.vocab_size


def test_sweep_configs_are_valid_and_run(toy, tmp_path):
    _, models, _ = toy
    m = MergeSpec(sweep_methods=("linear", "slerp", "task_arithmetic", "dare_ties"),
                  sweep_cpt_weights=(0.25, 0.5), sweep_densities=(0.75, 1.0))
    cfgs = sweep_configs(models["base"], models["cpt"], models["instruct"], m)
    assert list(cfgs) == ["linear", "slerp", "task_arithmetic", "dare_ties", "ties_w0.25_d0.75", "ties_w0.5_d0.75",
                          "ties_w0.5_d1"]
    for name in ("slerp", "ties_w0.5_d1"):
        run_merge(cfgs[name], tmp_path / name, m)
        assert torch.isfinite(load_hf_state(tmp_path / name)["lm_head.weight"].float()).all()
    assert (tmp_path / "slerp" / "merge_config.yaml").exists()


def test_stage_runs_in_pipeline(tmp_path):
    "sec-nb run --only merge on a run directory holding stand-in models, with a one-merge sweep."
    toy_merge_inputs(tmp_path, ModelShape(n_layers=2, hidden=32, ffn_hidden=64, n_heads=4, n_kv_heads=2,
                                          vocab_size=256, seq_len=32))
    r = subprocess.run([str(Path(sys.executable).parent / "sec-nb"), "run", "--no-progress", "--preset", "micro", "--only", "merge",
                        "--run-dir", str(tmp_path), "-p", "merge.sweep_methods=linear"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rec = json.loads((tmp_path / "merge" / "stage.json").read_text())
    assert rec["status"] == "ok" and rec["merge_config"]["merge_method"] == "ties"
    assert (tmp_path / "merge" / "ties" / "merge_config.yaml").read_text() == rec["merge_config_yaml"]
    sweep = json.loads((tmp_path / "merge" / "sweep.json").read_text())
    assert [s["name"] for s in sweep] == ["linear"] and (tmp_path / sweep[0]["path"] / "config.json").exists()
    assert rec["metrics"]["check_loads"]["megatron_finite"]


def test_ties_with_the_instruct_model_as_reference_is_instruct_plus_trimmed_update(toy, tmp_path):
    "No base model (smol): TIES referenced to the instruct model = instruct + trim(CPT - instruct); weights cancel."
    from sec_nb.merge import merge_positions, no_base_configs
    _, models, sd = toy
    m = MergeSpec(dtype="float32")
    cfgs = no_base_configs(models["cpt"], models["instruct"], m)
    assert cfgs["ties_self_reference"]["base_model"] == str(models["instruct"])
    merged = {}
    for name, c in cfgs.items():
        run_merge(c, tmp_path / name, m)
        merged[name] = load_hf_state(tmp_path / name)
    ins, cpt = sd["instruct"], sd["cpt"]
    for k in ("model.layers.0.mlp.up_proj.weight", "model.layers.2.self_attn.q_proj.weight", "model.embed_tokens.weight"):
        want = independent_ties(ins[k], [cpt[k], ins[k]], [0.5, 0.5], [0.75, 1.0])   # any non-zero weights: they cancel
        assert torch.allclose(merged["ties_self_reference"][k], want, atol=1e-6), k
    for k in [k for k in ins if k.startswith("model.layers.3.self_attn.")]:          # CPT weight 0: the instruct model
        assert torch.equal(merged["ties_self_reference"][k], ins[k])
    pos = merge_positions(merged, ins, cpt, SHAPE.n_layers)
    assert pos.loc["middle layer mlp", "linear"] == pytest.approx(0.5, abs=1e-3)
    assert pos.loc["first layer mlp", "slerp"] == pytest.approx(0.25, abs=0.02)
    assert pos.loc["first layer mlp", "ties_self_reference"] > 0.9


def test_stage_without_a_base_model(tmp_path):
    "sec-nb run --preset smol --only merge where the run has no models/base: linear stands in for Listing 1."
    toy_merge_inputs(tmp_path, ModelShape(n_layers=2, hidden=32, ffn_hidden=64, n_heads=4, n_kv_heads=2,
                                          vocab_size=256, seq_len=32))
    import shutil
    shutil.rmtree(tmp_path / "models" / "base")
    r = subprocess.run([str(Path(sys.executable).parent / "sec-nb"), "run", "--no-progress", "--preset", "smol", "--only", "merge",
                        "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rec = json.loads((tmp_path / "merge" / "stage.json").read_text())
    assert rec["no_base_model"] and rec["paper_merge_stand_in"] == "linear" and rec["merge_config"]["merge_method"] == "linear"
    sweep = {s["name"]: s for s in json.loads((tmp_path / "merge" / "sweep.json").read_text())}
    assert set(sweep) == {"slerp", "ties"} and sweep["ties"]["config"]["base_model"] == "./models/instruct"   # the instruct model, relative to the run
    pos = rec["positions_instruct0_cpt1"]
    assert abs(pos["ties"]["last layer self_attn"]) < 0.01 and pos["ties"]["first layer mlp"] > 0.9
    assert abs(pos["linear (merge/ties)"]["first layer mlp"] - 0.25) < 0.01
    assert rec["metrics"]["check_ties_tensor"]["frac_beyond_bf16_rounding"] <= 0.01


def test_model_card_lists_models_in_one_order(tmp_path):
    "mergekit's card lists the merged models from a set: two processes may write them in either order."
    from sec_nb.merge import _sort_card_models
    head, tail = "# merge\n\nThe following models were included in the merge:\n", "\n### Configuration\n"
    cards = []
    for order in (["* ./cpt/hf", "* ./models/instruct"], ["* ./models/instruct", "* ./cpt/hf"]):
        p = tmp_path / f"card{len(cards)}.md"
        p.write_text(head + "\n".join(order) + "\n" + tail)
        _sort_card_models(p)
        cards.append(p.read_text())
    assert cards[0] == cards[1] and cards[0].index("./cpt/hf") < cards[0].index("./models/instruct")
    assert cards[0].endswith(tail)
