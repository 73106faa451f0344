"HF Llama <-> Megatron-Core GPTModel conversion: equal logits in fp32, exact round trip, clear errors."
import dataclasses
import pytest
import numpy as np
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


@pytest.mark.parametrize("shape", [SHAPE, TIED], ids=["untied", "tied"])
def test_streaming_both_ways(tmp_path, megatron, shape):
    "Streamed HF -> torch_dist -> HF: Megatron's own loader reads it with the HF logits; the way back is exact."
    from transformers import LlamaForCausalLM
    from sec_nb.convert import stream_checkpoint_to_hf, stream_hf_to_checkpoint
    from sec_nb.trainer import build_model, load_checkpoint, transformer_config
    hf = random_hf(shape, seed=7)
    hf.save_pretrained(tmp_path / "hf")
    stream_hf_to_checkpoint(tmp_path / "hf", tmp_path / "ck")
    assert str(tmp_path).encode() not in (tmp_path / "ck" / ".metadata").read_bytes()      # reruns: same bytes
    mc = build_model(shape, transformer_config(shape))
    load_checkpoint(tmp_path / "ck", mc)
    ids = torch.randint(0, shape.vocab_size, (2, shape.seq_len), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(): ref = hf(ids).logits
    assert (megatron_logits(mc.eval(), ids) - ref).abs().max().item() <= 1e-4
    stream_checkpoint_to_hf(tmp_path / "ck", tmp_path / "back", shape)
    import json as _json
    assert _json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]  # mergekit needs it
    a, b = load_hf_state(tmp_path / "hf"), load_hf_state(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()(ids).logits, ref)
    # bf16 in, bf16 checkpoint, bf16 out, bit for bit (the source dtype is kept, never widened)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "hf16")
    stream_hf_to_checkpoint(tmp_path / "hf16", tmp_path / "ck16")
    stream_checkpoint_to_hf(tmp_path / "ck16", tmp_path / "back16", shape, shard_bytes=20_000)   # several shards
    a, b = load_hf_state(tmp_path / "hf16"), load_hf_state(tmp_path / "back16")
    assert len(list((tmp_path / "back16").glob("*.safetensors"))) > 1 and (tmp_path / "back16" / "model.safetensors.index.json").exists()
    assert all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)


PEAK_SCRIPT = r"""
import json, resource, sys, torch
from sec_nb.config import ModelShape
from sec_nb.convert import init_megatron, stream_checkpoint_to_hf, stream_hf_to_checkpoint
shape, what, src, dst = ModelShape(**json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
init_megatron()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if what == "to_megatron": stream_hf_to_checkpoint(src, dst, shape)
elif what == "to_hf": stream_checkpoint_to_hf(src, dst, shape)
print(json.dumps({"base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def test_streaming_peak_memory_8b_shape(tmp_path):
    """Llama-3-8B's widths and vocabulary with 2 layers, bf16 (3 GB of weights): the conversion's peak resident
    memory above the imports stays under twice the largest tensor (the 1.05 GB embedding) plus 0.5 GB."""
    import json as _json, subprocess, sys
    from safetensors.torch import save_file
    from sec_nb.config import LLAMA3_8B
    from sec_nb.convert import _hf_shapes, hf_config
    shape = dataclasses.replace(LLAMA3_8B, n_layers=2)
    hf = tmp_path / "hf"; hf.mkdir()
    shapes = _hf_shapes(shape)
    for name, s in shapes.items():                       # one file per tensor: never the model in this process
        save_file({name: torch.zeros(s, dtype=torch.bfloat16)}, str(hf / f"{name}.safetensors"))
    hf_config(shape).save_pretrained(str(hf))
    largest = max(np.prod(s) for s in shapes.values()) * 2
    total = sum(np.prod(s) for s in shapes.values()) * 2
    peaks = {}
    for what, src, dst in (("to_megatron", hf, tmp_path / "ck"), ("to_hf", tmp_path / "ck", tmp_path / "back")):
        r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, _json.dumps(dataclasses.asdict(shape)), what, str(src), str(dst)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        m = _json.loads(r.stdout.strip().splitlines()[-1])
        peaks[what] = m["peak"] - m["base"]
    print(f"largest tensor {largest/1e9:.2f} GB, weights {total/1e9:.2f} GB, peak above imports: "
          + ", ".join(f"{k} {v/1e9:.2f} GB" for k, v in peaks.items()))
    for v in peaks.values(): assert v <= 2 * largest + 0.5e9, (peaks, largest)
    assert load_hf_state(tmp_path / "back").keys() == set(shapes)


TORCHRUN_SCRIPT = r"""
import json, sys, torch.distributed as dist
from sec_nb.config import ModelShape
from sec_nb.convert import SafetensorsSource, _CheckpointReader, stream_checkpoint_to_hf, stream_hf_to_checkpoint
shape, hf, ck1, ck, back, out = ModelShape(**json.loads(sys.argv[1])), *sys.argv[2:7]
reader = _CheckpointReader(ck1)            # first the way back, from the 1-process checkpoint: no group exists yet
stream_checkpoint_to_hf(ck1, back, shape, shard_bytes=20_000, reader=reader)
src = SafetensorsSource(hf)
stream_hf_to_checkpoint(hf, ck, shape, source=src)
json.dump({"world": dist.get_world_size(), "names": src.names_read, "bytes": src.bytes_read,
           "chunk_bytes": reader.bytes_read, "chunks": reader.chunks_read},
          open(f"{out}/rank{dist.get_rank()}.json", "w"))
"""


def _torchrun(nproc, *args, timeout=600):
    import subprocess, sys
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_streaming_under_torchrun_each_rank_its_share(tmp_path, megatron):
    """2 gloo processes: each rank reads a disjoint half of the HF tensors (together: each once) and writes its own
    file; the checkpoint loads (the trainer's load_checkpoint) to the 1-process conversion's tensors. The way back:
    each rank writes its shards, reading only their chunks, and the folder is the 1-process export byte for byte."""
    import json as _json
    from sec_nb.convert import SafetensorsSource, _CheckpointReader, hf_names, stream_checkpoint_to_hf, stream_hf_to_checkpoint
    from sec_nb.trainer import build_model, load_checkpoint, transformer_config
    random_hf(SHAPE, seed=8).save_pretrained(tmp_path / "hf")
    stream_hf_to_checkpoint(tmp_path / "hf", tmp_path / "ck1", SHAPE)                  # the 1-process references
    ref = _CheckpointReader(tmp_path / "ck1")
    stream_checkpoint_to_hf(tmp_path / "ck1", tmp_path / "back1", SHAPE, shard_bytes=20_000, reader=ref)
    script = tmp_path / "convert2.py"; script.write_text(TORCHRUN_SCRIPT)
    r = _torchrun(2, script, _json.dumps(dataclasses.asdict(SHAPE)), tmp_path / "hf", tmp_path / "ck1",
                  tmp_path / "ck2", tmp_path / "back2", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    st = [_json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert all(s["world"] == 2 for s in st)
    # HF -> Megatron: disjoint shares that cover every tensor once, balanced within the largest tensor
    src = SafetensorsSource(tmp_path / "hf")
    a, b = set(st[0]["names"]), set(st[1]["names"])
    assert not a & b and a | b == hf_names(SHAPE) and len(st[0]["names"]) == len(a) and len(st[1]["names"]) == len(b)
    total, largest = src.nbytes(), max(src.nbytes([n]) for n in src.keys())
    assert st[0]["bytes"] + st[1]["bytes"] == total and abs(st[0]["bytes"] - st[1]["bytes"]) <= largest, (st, total)
    assert st[0]["bytes"] == src.nbytes(a) and st[1]["bytes"] == src.nbytes(b)
    files = sorted(p.name for p in (tmp_path / "ck2").glob("*.distcp"))
    assert files == ["__0_0.distcp", "__1_0.distcp"], files
    print(f"HF -> Megatron, 2 ranks: read {st[0]['bytes']:,} + {st[1]['bytes']:,} of {total:,} bytes "
          f"({len(a)} + {len(b)} tensors)")
    m1, m2 = (build_model(SHAPE, transformer_config(SHAPE)) for _ in range(2))
    load_checkpoint(tmp_path / "ck1", m1); load_checkpoint(tmp_path / "ck2", m2)
    s1, s2 = m1.state_dict(), m2.state_dict()
    keys = [k for k in s1 if not k.endswith("_extra_state")]
    assert keys and all(torch.equal(s1[k], s2[k]) for k in keys)
    assert torch.load(tmp_path / "ck2" / "common.pt", weights_only=False)["shape"] == dataclasses.asdict(SHAPE)
    # Megatron -> HF: the same files as one process wrote, each rank reading less than the whole checkpoint
    one = sorted(p.name for p in (tmp_path / "back1").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "back2").iterdir()) and len(one) > 20
    for n in one: assert (tmp_path / "back1" / n).read_bytes() == (tmp_path / "back2" / n).read_bytes(), n
    got, alone = [s["chunk_bytes"] for s in st], ref.bytes_read         # what the ranks read; one process read
    print(f"Megatron -> HF, 2 ranks: read {got[0]:,} + {got[1]:,} bytes of chunks; one process {alone:,}")
    assert all(0 < g < 0.75 * alone for g in got), (got, alone)
    # only a fused tensor (QKV: one chunk; gate/up: two) whose parts straddle the ranks' shards is read twice
    assert alone <= sum(got) <= alone + 2 * max(i.length for i in ref.md.storage_data.values()), (got, alone)


def test_cli_under_torchrun(tmp_path):
    "`torchrun --nproc_per_node=2 --no-python sec-nb convert hf-to-megatron`: one line per rank, the 1-process tensors."
    from conftest import SEC_NB
    from sec_nb.convert import _CheckpointReader, stream_hf_to_checkpoint
    random_hf(TIED, seed=9).save_pretrained(tmp_path / "hf")
    r = _torchrun(2, "--no-python", SEC_NB, "convert", "hf-to-megatron", tmp_path / "hf", tmp_path / "ck")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == str(tmp_path / "ck")                       # printed once, by rank 0
    import re
    lines = re.findall(r"rank (\d)/2: read (\d+) of (\d+) tensors, ([\d,]+) of ([\d,]+) bytes", r.stderr)
    assert sorted(l[0] for l in lines) == ["0", "1"], r.stderr[-2000:]
    n = [int(l[1]) for l in lines]; b = [int(l[3].replace(",", "")) for l in lines]
    assert sum(n) == int(lines[0][2]) and sum(b) == int(lines[0][4].replace(",", "")) and min(n) > 0
    stream_hf_to_checkpoint(tmp_path / "hf", tmp_path / "ck1", TIED)
    one, two = _CheckpointReader(tmp_path / "ck1"), _CheckpointReader(tmp_path / "ck")
    keys = [k for k, m in one.md.state_dict_metadata.items() if hasattr(m, "chunks")]
    assert keys == [k for k, m in two.md.state_dict_metadata.items() if hasattr(m, "chunks")]
    assert all(torch.equal(one.get(k), two.get(k)) for k in keys if not k.startswith("decoder.layers."))
    for k in (k for k in keys if k.startswith("decoder.layers.")):
        assert all(torch.equal(one.get(k, i), two.get(k, i)) for i in range(TIED.n_layers)), k
