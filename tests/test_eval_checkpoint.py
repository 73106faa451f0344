"""Any checkpoint joins the evaluation and the report: here a GPT-2 (learned positions, its own tokenizer,
another vocabulary) beside the run's Llama models. Perplexities are compared per word and per byte, never per
token, so different tokenizers stay comparable."""
import math

import pandas as pd
import torch

from test_eval import CFG, make_tokenizer, run_dir, world  # noqa: F401  (pytest fixtures)

from sec_nb.lmeval import context_length, run_eval
from sec_nb.report import figure_3, normalize


def make_gpt2(folder, texts):
    from transformers import GPT2Config, GPT2LMHeadModel
    tok = make_tokenizer(folder, texts)                 # trained on other texts: another vocabulary
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def test_gpt2_with_its_own_tokenizer_joins_the_eval(run_dir, world, tmp_path):  # noqa: F811
    for rel in ("models/base", "models/instruct"):                 # the run's own (Llama) models, working weights
        for f in (world["untrained"]).iterdir(): (run_dir / rel / f.name).write_bytes(f.read_bytes())
    gpt2, tok = make_gpt2(tmp_path / "gpt2", ["Quarterly revenue and margins of the filer.", "A different corpus."])
    assert len(tok) != len(world["tok"])
    res = run_eval(run_dir, CFG, extra_models={"my-gpt2": str(gpt2)}, suites=["domain_ppl"], log=None)
    table = pd.read_csv(run_dir / "eval" / "results.csv")
    mine = table[(table.model == "my-gpt2") & (table.task == "sec_heldout")].set_index("metric")
    assert set(res["models"]) == {"base", "instruct", "my-gpt2"}
    for m in ("word_perplexity", "byte_perplexity"):
        v = mine.loc[m]
        assert math.isfinite(v["value"]) and v["value"] > 1 and v["ci_low"] <= v["value"] <= v["ci_high"]
    assert "token_perplexity" not in set(table.metric)               # per token would not compare across tokenizers
    fig, t = figure_3(normalize(table))
    assert "my-gpt2" in set(t["name"]) and t["metric"].iloc[0] == "word_perplexity"


def test_learned_positions_cap_the_context():
    from transformers import GPT2Config, LlamaConfig
    assert context_length("domain", CFG, GPT2Config(n_positions=128)) == 128       # not 256: GPT-2 has no positions beyond
    assert context_length("domain", CFG, LlamaConfig()) == 256                     # RoPE: the miniature's task context
    assert context_length("domain_ppl", CFG, GPT2Config(n_positions=128)) == CFG.model.seq_len


def test_perplexity_windows_are_the_trained_context_beyond_the_miniatures():
    "smol: 512-token windows (its CPT context), not SmolLM2's 8192; its tasks at the preset's task context; paper scale: the model's own."
    from transformers import LlamaConfig
    from sec_nb.config import load_preset
    smol, big = load_preset("smol"), load_preset("llama3-70b")
    assert context_length("general_ppl", smol, LlamaConfig(max_position_embeddings=8192)) == 512
    assert context_length("gpt4all", smol, LlamaConfig(max_position_embeddings=8192)) == smol.eval.task_context == 2048
    assert context_length("domain", big, LlamaConfig(max_position_embeddings=8192)) is None
    assert context_length("domain_ppl", big, LlamaConfig(max_position_embeddings=8192)) == 8192


def test_heldout_perplexity_does_not_depend_on_its_memory_bound(tmp_path, monkeypatch):
    "The CPT stage's perplexity check batches windows to fit a logits budget: the number is the same either way."
    import sec_nb.cpt as cpt
    texts = [f"Item {i}. The registrant reported revenue of {i * 7} million dollars in fiscal {2000 + i}." for i in range(60)]
    folder, tok = make_gpt2(tmp_path / "m", texts)
    one = cpt.heldout_perplexity(folder, texts, 32, batch=1)
    monkeypatch.setattr(cpt, "LOGITS_BUDGET", 3 * 32 * len(tok))      # three windows a batch
    three = cpt.heldout_perplexity(folder, texts, 32)
    assert one["tokens"] == three["tokens"] > 32 * 10
    assert math.isclose(one["perplexity"], three["perplexity"], rel_tol=1e-5)
