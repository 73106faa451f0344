"""Wall time of the evaluation stage per model and suite, and the effect of lm-eval's batch size.

Builds a run directory with random Llama models of a preset's shape (the timing does not depend on the
weights), a byte-level BPE tokenizer of the preset's vocabulary, the evaluation sets (sec_nb.evalsets) and
held-out "SEC" text (10-K items of the sec_text_sections dataset), then runs sec_nb.lmeval.run_eval.

    python bench/eval_bench.py --preset tiny --run-dir /tmp/eval-bench --batch-sizes 16
    python bench/eval_bench.py --preset tiny --run-dir /tmp/eval-bench --batch-sizes 1,4,16,64 --suites domain_ppl,gpt4all,truthfulqa
"""
import argparse
import gzip
import json
import time
from pathlib import Path


def make_run(run: Path, preset: str, n_models: int = 1):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from sec_nb.config import load_preset
    from sec_nb.datasets import dataset_dir
    from sec_nb.evalsets import prepare_eval_sets
    m = load_preset(preset).model
    if not (run / "data" / "eval" / "manifest.json").exists():
        prepare_eval_sets(run / "data" / "eval", run / "data" / "ppl", log=None)
    sec = []
    for f in sorted((dataset_dir("sec_text_sections") / "edgar_crawler_10k_items").glob("*.json"))[:40]:
        items = json.loads(f.read_text())
        sec += [{"id": f"{f.stem}-{k}", "text": v} for k, v in items.items() if k.startswith("item_") and isinstance(v, str) and len(v) > 500]
    (run / "data" / "sec_heldout").mkdir(parents=True, exist_ok=True)
    with gzip.open(run / "data" / "sec_heldout" / "00000.jsonl.gz", "wt") as fh:
        for d in sec: fh.write(json.dumps(d) + "\n")
    texts = [json.loads(l)["text"] for l in open(run / "data" / "ppl" / "web.jsonl")] + [d["text"][:5000] for d in sec]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=m.vocab_size, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    for i, rel in enumerate(["models/base", "models/instruct", "cpt/hf", "merge/ties"][:n_models]):
        torch.manual_seed(i)
        cfg = LlamaConfig(vocab_size=m.vocab_size, hidden_size=m.hidden, intermediate_size=m.ffn_hidden,
                          num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads, num_key_value_heads=m.n_kv_heads,
                          max_position_embeddings=m.seq_len, rope_theta=m.rope_theta, bos_token_id=0, eos_token_id=1)
        LlamaForCausalLM(cfg).save_pretrained(run / rel)
        hf.save_pretrained(run / rel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--batch-sizes", default="16")
    ap.add_argument("--suites", default="")
    ap.add_argument("--models", type=int, default=1)
    a = ap.parse_args()
    from sec_nb.config import load_preset
    from sec_nb.lmeval import run_eval
    run = Path(a.run_dir)
    if not (run / "models" / "base").exists(): make_run(run, a.preset, a.models)
    for bs in map(int, a.batch_sizes.split(",")):
        cfg = load_preset(a.preset, {"eval.batch_size": bs})
        t = time.time()
        r = run_eval(run, cfg, out=run / f"eval_bs{bs}", suites=a.suites.split(",") if a.suites else None, log=None)
        print("RESULT " + json.dumps({"preset": a.preset, "batch_size": bs, "limit": cfg.eval.limit,
                                      "suites": a.suites or "all", "total_s": round(time.time() - t, 1),
                                      "timings": r["timings"]}), flush=True)


if __name__ == "__main__":
    main()
