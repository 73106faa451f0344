"HF Llama <-> Megatron-Core GPTModel conversion: equal logits in fp32, exact round trip, clear errors."
import dataclasses
import pytest
import torch

from sec_nb.config import ModelShape
from sec_nb.convert import (build_gpt_model, hf_config, hf_to_megatron_state, init_megatron, load_hf_state,
                            load_megatron_state, megatron_from_hf, megatron_logits, megatron_to_hf_state,
                            save_hf_model, shape_from_hf)

# GQA (8 query heads on 2 kv heads), a non-default rotary base and eps
SHAPE = ModelShape(n_layers=3, hidden=64, ffn_hidden=96, n_heads=8, n_kv_heads=2, vocab_size=300, seq_len=32,
                   rope_theta=500_000.0, norm_eps=1e-5)


@pytest.fixture(scope="module")
def megatron():
    init_megatron(seed=0)


def random_hf(shape, seed=0):
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    m = LlamaForCausalLM(hf_config(shape)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n: p.uniform_(0.5, 1.5)
    return m


def test_same_logits_fp32(megatron):
    hf = random_hf(SHAPE)
    mc = load_megatron_state(build_gpt_model(SHAPE), hf_to_megatron_state(hf.state_dict(), SHAPE)).eval()
    ids = torch.randint(0, SHAPE.vocab_size, (3, SHAPE.seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): ref = hf(ids).logits
    out = megatron_logits(mc, ids)
    diff = (ref - out).abs().max().item()
    print(f"max |HF - Megatron| logits = {diff:.3e}")
    assert out.shape == ref.shape and diff < 1e-4
    assert ref.abs().max() > 0.1                    # not a degenerate comparison


def test_megatron_to_hf_logits(megatron):
    "The other direction: a Megatron model's own random weights, converted to HF, give its logits."
    mc = build_gpt_model(SHAPE).eval()
    with torch.no_grad():
        for n, p in mc.named_parameters():
            if "layernorm" in n: p.uniform_(0.5, 1.5)
    from transformers import LlamaForCausalLM
    hf = LlamaForCausalLM(hf_config(SHAPE)).eval()
    hf.load_state_dict(megatron_to_hf_state(mc.state_dict(), SHAPE), strict=True)
    ids = torch.randint(0, SHAPE.vocab_size, (2, SHAPE.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): diff = (hf(ids).logits - megatron_logits(mc, ids)).abs().max().item()
    assert diff < 1e-4, diff


def test_round_trip_is_identity():
    sd = random_hf(SHAPE, seed=3).state_dict()
    back = megatron_to_hf_state(hf_to_megatron_state(sd, SHAPE), SHAPE)
    assert back.keys() == sd.keys()
    for k in sd: assert torch.equal(back[k], sd[k]), k
    # the Transformer-Engine spelling of the fused norms is read too
    te = hf_to_megatron_state(sd, SHAPE, te_names=True)
    assert "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight" in te
    back = megatron_to_hf_state(te, SHAPE)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_folder_round_trip_and_shape(tmp_path, megatron):
    hf = random_hf(SHAPE, seed=4)
    hf.save_pretrained(tmp_path / "a")
    assert shape_from_hf(tmp_path / "a") == SHAPE
    mc = megatron_from_hf(tmp_path / "a")
    save_hf_model(mc.state_dict(), SHAPE, tmp_path / "b")
    a, b = load_hf_state(tmp_path / "a"), load_hf_state(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_named():
    sd = random_hf(SHAPE).state_dict()
    with pytest.raises(ValueError, match="missing"):
        hf_to_megatron_state(sd, dataclasses.replace(SHAPE, n_layers=4))
    with pytest.raises(ValueError, match="unexpected"):
        hf_to_megatron_state(sd, dataclasses.replace(SHAPE, n_layers=2))
    with pytest.raises(FileNotFoundError):
        load_hf_state("/nonexistent/folder")


# SmolLM2 / Llama-3.2 style: tied output layer, 9 query heads on 3 kv heads, rotary base 1e5
TIED = ModelShape(n_layers=2, hidden=72, ffn_hidden=96, n_heads=9, n_kv_heads=3, vocab_size=300, seq_len=32,
                  rope_theta=100_000.0, norm_eps=1e-5, tie_embeddings=True)


def test_tied_gqa_both_directions(tmp_path, megatron):
    from transformers import LlamaForCausalLM
    hf = random_hf(TIED, seed=5)
    assert hf.config.tie_word_embeddings and hf.lm_head.weight is hf.model.embed_tokens.weight
    hf.save_pretrained(tmp_path / "hf")
    assert shape_from_hf(tmp_path / "hf") == TIED                        # tying and rope theta read from config
    assert "lm_head.weight" not in load_hf_state(tmp_path / "hf")         # the file stores the embedding once
    mc = megatron_from_hf(tmp_path / "hf").eval()
    assert "output_layer.weight" not in mc.state_dict()
    ids = torch.randint(0, TIED.vocab_size, (2, TIED.seq_len), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(): ref = hf(ids).logits
    diff = (ref - megatron_logits(mc, ids)).abs().max().item()
    assert diff <= 1e-4 and ref.abs().max() > 0.1, diff
    # and back: the exported folder loads in transformers, tied, with the same logits and tensors
    save_hf_model(mc.state_dict(), TIED, tmp_path / "out")
    back = LlamaForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert back.config.tie_word_embeddings and back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    with torch.no_grad(): assert (back(ids).logits - ref).abs().max().item() <= 1e-4
    a, b = load_hf_state(tmp_path / "hf"), load_hf_state(tmp_path / "out")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tied_head_must_be_the_embedding(tmp_path):
    "An untied checkpoint read with a tied shape, or a tied one with an untied shape, is named, not re-tied."
    with pytest.raises(ValueError, match="differs"):
        hf_to_megatron_state(random_hf(SHAPE).state_dict(), dataclasses.replace(SHAPE, tie_embeddings=True))
    random_hf(TIED).save_pretrained(tmp_path / "tied")
    with pytest.raises(ValueError, match="missing.*lm_head"):
        hf_to_megatron_state(load_hf_state(tmp_path / "tied"), dataclasses.replace(TIED, tie_embeddings=False))


def test_cli_round_trip(tmp_path):
    "`sec-nb convert hf-to-megatron` then `megatron-to-hf`: the same tensors; the checkpoint records its shape."
    import subprocess
    from conftest import SEC_NB
    random_hf(TIED, seed=6).save_pretrained(tmp_path / "hf")
    run = lambda *a: subprocess.run([SEC_NB, "convert", *map(str, a)], capture_output=True, text=True)
    r = run("hf-to-megatron", tmp_path / "hf", tmp_path / "ckpt")
    assert r.returncode == 0, r.stderr
    r = run("megatron-to-hf", tmp_path / "ckpt", tmp_path / "back")
    assert r.returncode == 0, r.stderr
    a, b = load_hf_state(tmp_path / "hf"), load_hf_state(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert shape_from_hf(tmp_path / "back") == TIED
    bad = run("hf-to-megatron", tmp_path / "ckpt", tmp_path / "x")            # a checkpoint is not an HF folder
    assert bad.returncode == 1 and "no config.json" in bad.stderr
