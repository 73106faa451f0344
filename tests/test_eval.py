"""The evaluation stage's checks: lm-eval on our task files scores what it should, agrees with a direct
transformers computation, and refuses bad input before loading any model. Tiny models, trained here in seconds."""
import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from sec_nb.config import load_preset
from sec_nb.evalsets import write_set
from sec_nb import lmeval
from sec_nb.lmeval import (EvalInputError, check_inputs, evaluate, generate_task, load_lm, load_tasks, mc_task,
                           ppl_task, rouge1, run_eval, write_tasks)

GEN = [("Q: ten plus two?\nAnswer:", "12"), ("Q: three times three?\nAnswer:", "9"),
       ("Q: revenue 2014 minus 2013?\nAnswer:", "-25"), ("Q: share of 5 in 20?\nAnswer:", "0.25")]
# a model that opens its answer with a blank line (the smol CPT model's summaries did): FinBen stops only at EOS
# and strips, so the answer counts; a "\n" stop sequence would have cut it to nothing
LEADING_BLANK = ("Q: four plus four?\nAnswer:", "8")
MC = [("Sentence: we expect growth.\nLabel:", ["premise", "claim"], 1),      # two labels, like FinArg
      ("Sentence: sales were 10 million.\nLabel:", ["premise", "claim"], 0),
      ("Sentence: margins rose 2 points.\nLabel:", ["premise", "claim"], 0),
      ("Sentence: this is the best plan.\nLabel:", ["premise", "claim"], 1),
      ("Sentence: we will win share.\nLabel:", ["premise", "claim"], 1),
      ("Sentence: debt fell by 5 percent.\nLabel:", ["premise", "claim"], 0)]
DOCS = ["Net revenue increased 12 percent to $4.2 billion, driven by higher volumes in every segment.",
        "The company repurchased 3 million shares during the quarter and paid a dividend of $0.25 per share."]


def make_tokenizer(folder: Path, texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    hf.save_pretrained(folder)
    return hf


def make_model(folder: Path, tok, seed=0, train_texts=None, steps=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if train_texts:   # (prompt, answer) pairs: learn the answers, then EOS, after their prompts: a model that "knows" them
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
        pairs = [(enc(p), enc(a) + [tok.eos_token_id]) for p, a in train_texts]
        L = max(len(p) + len(a) for p, a in pairs)
        ids = torch.tensor([p + a + [tok.eos_token_id] * (L - len(p) - len(a)) for p, a in pairs])
        labels = torch.tensor([[-100] * len(p) + a + [-100] * (L - len(p) - len(a)) for p, a in pairs])
        mask = torch.tensor([[1] * (len(p) + len(a)) + [0] * (L - len(p) - len(a)) for p, a in pairs])
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(); loss.backward(); opt.step()
        model.eval()
        assert loss.item() < 0.05, f"did not memorize: loss {loss.item()}"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "Task files on a few items, a tokenizer, an untrained model and one trained on the answers."
    d = tmp_path_factory.mktemp("evalw")
    gen_items = [{"id": f"g{i}", "query": q, "answer": a} for i, (q, a) in enumerate(GEN + [LEADING_BLANK])]
    mc_items = [{"id": f"m{i}", "query": q, "choices": c, "gold": g} for i, (q, c, g) in enumerate(MC)]
    write_set(gen_items, d / "sets" / "gen.jsonl", source="test", shuffle=False)
    write_set(mc_items, d / "sets" / "mc.jsonl", source="test", shuffle=False)
    write_set([{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)], d / "sets" / "docs.jsonl", source="test",
              shuffle=False)
    configs = {"gen": generate_task("gen", d / "sets" / "gen.jsonl", "domain", "convfinqa_results", ["exact_match"], 8),
               "mc": mc_task("mc", d / "sets" / "mc.jsonl", "domain", [("f1", "f1"), ("mcc", "matthews_corrcoef")]),
               "ppl": ppl_task("ppl", d / "sets" / "docs.jsonl", "domain_ppl")}
    write_tasks(d / "tasks", configs)
    train = [(q, " " + a) for q, a in GEN] + [(LEADING_BLANK[0], "\n\n" + LEADING_BLANK[1])] + [(q, " " + c[g]) for q, c, g in MC]
    tok = make_tokenizer(d / "tok", [p + a for p, a in train] + DOCS)
    untrained = make_model(d / "untrained", tok, seed=1)
    trained = make_model(d / "trained", tok, seed=0, train_texts=train, steps=150)
    return {"dir": d, "tok": tok, "untrained": untrained, "trained": trained,
            "tasks": load_tasks(["secnb_gen", "secnb_mc", "secnb_ppl"], d / "tasks")}


CFG = load_preset("micro")
torch.set_num_threads(1)   # tiny matmuls: threads only contend on a shared machine


def scores(world, model_dir):
    lm = load_lm(str(model_dir), CFG)
    lm._max_length = 256
    res = evaluate(lm, world["tasks"])["results"]
    return {t[len("secnb_"):]: {k.split(",")[0]: v for k, v in m.items() if "," in k} for t, m in res.items()}


def test_model_that_knows_the_answers_scores_one(world):
    good, bad = scores(world, world["trained"]), scores(world, world["untrained"])
    assert good["gen"]["exact_match"] == 1.0, good
    assert good["mc"]["acc"] == 1.0 and good["mc"]["mcc"] == 1.0, good
    assert bad["gen"]["exact_match"] < 1.0 and bad["mc"]["acc"] < 1.0, bad
    # memorizing the documents was not asked for: the trained model is no oracle on them
    assert good["ppl"]["word_perplexity"] > 1.0


def test_perplexity_equals_direct_transformers(world):
    from transformers import AutoModelForCausalLM
    got = scores(world, world["untrained"])["ppl"]
    model, tok = AutoModelForCausalLM.from_pretrained(world["untrained"]), world["tok"]
    ll, words, nbytes = 0.0, 0, 0
    for text in DOCS:   # shorter than the context: one window, first token predicted after BOS, like lm-eval
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.double(), -1)
        ll += logp[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        words += len(text.split()); nbytes += len(text.encode())
    want = {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / nbytes),
            "bits_per_byte": -ll / nbytes / math.log(2)}
    for k, v in want.items():
        assert abs(got[k] - v) / v < 1e-4, (k, got[k], v)


def test_rouge1_equals_rouge_score_library():
    "ROUGE-1 as FinBen computes it (evaluate's rouge: rouge-score, no stemming); the stemmed one on request."
    from rouge_score import rouge_scorer
    pred, ref = "the cat sat on the mat", "the cat was on the mat"
    lib = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(ref, pred)["rouge1"].fmeasure
    assert rouge1(pred, ref) == lib == pytest.approx(5 / 6)        # 5 shared unigrams out of 6 on each side
    pred, ref = "Revenues rose 5% to $2.1 billion", "revenue rising to 2.1 billion dollars"
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(ref, pred)["rouge1"].fmeasure
    stemmed = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(ref, pred)["rouge1"].fmeasure
    assert rouge1(pred, ref) == plain < stemmed == rouge1(pred, ref, stem=True)   # "revenues"/"revenue" only match stemmed
    assert lmeval.rouge_results({"summary": ref}, [pred]) == {"rouge1": plain, "rouge1_stemmed": stemmed}


# ---- bad input: a clear error before any model is loaded -------------------------------------------------

@pytest.fixture
def run_dir(tmp_path, world):
    "A run directory with a broken model (garbage weights): loading it would fail with another error."
    run = tmp_path / "run"
    for rel in ("models/base", "models/instruct"):
        (run / rel).mkdir(parents=True)
        for f in Path(world["untrained"]).iterdir():
            (run / rel / f.name).write_bytes(b"not weights" if f.suffix == ".safetensors" else f.read_bytes())
    ev, ppl = run / "data" / "eval", run / "data" / "ppl"
    for folder in (ev, ppl):
        folder.mkdir(parents=True)
        e = write_set([{"id": "a", "text": "x"}], folder / "x.jsonl", source="test")
        (folder / "manifest.json").write_text(json.dumps({"files": {"x": e}}))
    (run / "data" / "sec_heldout").mkdir(parents=True)
    with gzip.open(run / "data" / "sec_heldout" / "0.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "s", "text": "held out text"}) + "\n")
    return run


def test_missing_model_folder(run_dir):
    with pytest.raises(EvalInputError, match=r"model 'mine': folder .*nowhere does not exist"):
        run_eval(run_dir, CFG, extra_models={"mine": str(run_dir / "nowhere")}, suites=["domain_ppl"])
    (run_dir / "models" / "base" / "config.json").unlink()
    with pytest.raises(EvalInputError, match=r"model 'base': folder .* lacks config.json"):
        check_inputs({"base": str(run_dir / "models" / "base")}, run_dir, [], [])


def test_rerun_on_fewer_suites_leaves_no_stale_results(run_dir, world):
    for rel in ("models/base", "models/instruct"):           # working weights this time
        for f in Path(world["untrained"]).iterdir(): (run_dir / rel / f.name).write_bytes(f.read_bytes())
    stale = run_dir / "eval" / "base" / "general_ppl.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    res = run_eval(run_dir, CFG, suites=["domain_ppl"], log=None)
    on_disk = sorted(p.relative_to(run_dir / "eval").as_posix() for p in (run_dir / "eval").glob("*/*.json")
                     if p.parent.name not in ("sets", "tasks"))
    assert on_disk == ["base/domain_ppl.json", "instruct/domain_ppl.json"] and len(res["files"]) == 2
    # reproducible outputs: no absolute paths, timestamps or object addresses; tables byte-identical on a rerun
    import re
    tasks = [*(run_dir / "eval" / "tasks").glob("*.yaml"), *(run_dir / "eval" / "tasks" / "harness").glob("*.json")]
    assert tasks
    for f in [*res["files"], run_dir / "eval" / "results.csv", run_dir / "eval" / "harness.json", *tasks]:
        text = Path(f).read_text()
        assert str(run_dir.resolve()) not in text and str(run_dir) not in text, f
        assert not re.search(r'"(date|start_time|end_time)"|0x[0-9a-f]{6,}', text), f
    first = {p.name: p.read_bytes() for p in [*res["files"], run_dir / "eval" / "results.csv", run_dir / "eval" / "items.csv.gz"]}
    res2 = run_eval(run_dir, CFG, suites=["domain_ppl"], log=None)
    again = {p.name: p.read_bytes() for p in [*res2["files"], run_dir / "eval" / "results.csv", run_dir / "eval" / "items.csv.gz"]}
    assert again == first


def test_dataset_not_matching_manifest(run_dir):
    (run_dir / "data" / "eval" / "x.jsonl").write_text('{"id": "a", "text": "edited"}\n')
    with pytest.raises(EvalInputError, match=r"x\.jsonl: sha256 differs from .*manifest\.json"):
        run_eval(run_dir, CFG, suites=["domain_ppl"])


def test_task_file_that_does_not_parse(run_dir, world):
    tasks = run_dir / "tasks"
    write_tasks(tasks, {"ppl": ppl_task("ppl", world["dir"] / "sets" / "docs.jsonl", "domain_ppl")})
    check_inputs({}, tasks, ["secnb_ppl"], [])
    (tasks / "ppl.yaml").write_text("task: secnb_ppl\ndataset_kwargs: {data_files: [unclosed\n")
    with pytest.raises(EvalInputError, match=r"task file .*ppl\.yaml does not parse"):
        check_inputs({}, tasks, ["secnb_ppl"], [])


# ---- the evaluation sets -------------------------------------------------------------------------------

def test_prepare_eval_sets(tmp_path):
    "Every raw release converts in seconds; items are well formed; the manifest catches an edit."
    import time
    from sec_nb.datasets import DataError
    from sec_nb.evalsets import EvalSetError, prepare_eval_sets, verify_sets
    t0 = time.time()
    try: prepare_eval_sets(tmp_path / "eval", tmp_path / "ppl", CFG, log=None)
    except DataError as e: pytest.skip(f"datasets not reachable: {e}")
    assert time.time() - t0 < 60
    man = verify_sets(tmp_path / "eval")["files"]
    assert man["convfinqa"]["records"] == 183 and man["finarg_ecc"]["records"] == 969
    assert len([k for k in man if k.startswith("agieval_")]) == 8 and len([k for k in man if k.startswith("bbh_")]) == 18
    for line in open(tmp_path / "eval" / "finarg_ecc.jsonl"):
        it = json.loads(line)
        assert 0 <= it["gold"] < len(it["choices"]) and it["query"].strip()
    for line in open(tmp_path / "eval" / "bbh_snarks.jsonl"):        # hails/bigbench schema
        it = json.loads(line)
        assert it["targets"][0] in it["multiple_choice_targets"] and sum(it["multiple_choice_scores"]) == 1
    for line in open(tmp_path / "eval" / "arc_easy.jsonl"):          # allenai/ai2_arc schema
        it = json.loads(line)
        assert it["answerKey"] in it["choices"]["label"] and it["question"].strip()
    assert man["truthfulqa"]["records"] == 817                           # v1, as lm-eval and the Nous suite
    conv = [json.loads(l) for l in open(tmp_path / "eval" / "convfinqa.jsonl")]
    later = next(c for c in conv if c["turn"] == 2)
    earlier = next(c for c in conv if c["conversation"] == later["conversation"] and c["turn"] == 1)
    assert f"\nq1: {earlier['question']} {earlier['answer']}\nQuestion: {later['question']}\nAnswer:" in later["query"]   # fed forward
    assert later["query"].startswith("In the context of this series of interconnected finance-related queries")
    assert verify_sets(tmp_path / "ppl")["files"]["wikitext"]["records"] == 62
    with open(tmp_path / "ppl" / "web.jsonl", "a") as f: f.write('{"id": "x", "text": "added"}\n')
    with pytest.raises(EvalSetError, match="web.jsonl: sha256 differs"):
        verify_sets(tmp_path / "ppl")
