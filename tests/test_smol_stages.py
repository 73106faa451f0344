"The smol preset's tokens and models stages, run through `sec-nb run --only` on a small data folder of real text."
import gzip
import json
import subprocess

import pytest

from conftest import SEC_NB

SEC = ["Item 1A. Risk Factors. Our revenue depends on a small number of customers; the loss of any of them could "
       "adversely affect our results of operations.", "The Company files annual reports on Form 10-K with the SEC."]
GENERAL = ["The river rose after three days of rain, and the bridge was closed.", "Bread rises because yeast makes gas."]


def _jsonl_gz(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for i, t in enumerate(texts): f.write(json.dumps({"id": str(i), "text": t}) + "\n")


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smol")
    _jsonl_gz(run / "data" / "sec_train" / "00000.jsonl.gz", SEC)
    _jsonl_gz(run / "data" / "general_train" / "00000.jsonl.gz", GENERAL)
    (run / "data" / "instruct").mkdir(parents=True)
    (run / "data" / "instruct" / "train.jsonl").write_text(
        json.dumps({"id": "0", "prompt": "What is a 10-K?", "response": "An annual report."}) + "\n")
    for stage in ("tokens", "models"):
        r = subprocess.run([SEC_NB, "run", "--preset", "smol", "--run-dir", str(run), "--only", stage, "--no-progress"],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
    return run


def test_tokens_stage_uses_the_models_own_tokenizer(smol_run):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer
    rec = json.loads((smol_run / "tokens" / "stage.json").read_text())
    tok = AutoTokenizer.from_pretrained(smol_run / "tokens" / "tokenizer")
    assert len(tok) == rec["vocab_size"] == 49152 and rec["tokenizer"] == "smollm2_135m_instruct"
    assert rec["eod_token"] == "<|endoftext|>" and rec["eod_id"] == tok.convert_tokens_to_ids("<|endoftext|>") == 0
    ds = IndexedDataset(str(smol_run / "tokens" / "sec_train_text_document"))
    assert len(ds) == len(SEC)
    for i, text in enumerate(SEC):     # each document: the model's own ids of the text, then <|endoftext|>
        assert ds[i].tolist() == tok(text, add_special_tokens=False)["input_ids"] + [0]
    inst_ds = IndexedDataset(str(smol_run / "tokens" / "instruct_text_document"))    # kept: items view its mmap
    mask_ds = IndexedDataset(str(smol_run / "tokens" / "instruct_text_document_mask"))
    inst, mask = inst_ds[0].tolist(), mask_ds[0].tolist()
    assert tok.decode([i for i, m in zip(inst, mask) if m]) == "An annual report.<|im_end|>"   # ChatML's end of turn


def test_models_stage_imports_the_instruct_model_and_no_base(smol_run):
    rec = json.loads((smol_run / "models" / "stage.json").read_text())
    assert rec["status"] == "ok" and rec["source"] == "package" and rec["base"] is None
    assert not (smol_run / "models" / "base").exists()
    cfg = json.loads((smol_run / "models" / "instruct" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["tie_word_embeddings"] and "quantization_config" not in cfg
    answer = next(iter(rec["instruct_answer"].values()))
    assert len(answer.split()) >= 5
