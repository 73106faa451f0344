"The paper-scale backends are chosen at run time only where they can run; otherwise a clear error says what to do."
import importlib.util

import pytest
import torch

from sec_nb.config import load_preset
from sec_nb.lmeval import EvalInputError, check_backend, lm_args


def test_vllm_without_gpu_or_package_names_the_fix(monkeypatch):
    cfg = load_preset("llama3-70b")
    if not torch.cuda.is_available():
        with pytest.raises(EvalInputError, match=r"needs GPUs .* -p eval.backend=hf"):
            check_backend(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)          # a GPU node without vLLM installed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real(n, *a))
    with pytest.raises(EvalInputError, match=r"install requirements-gpu.txt"):
        check_backend(cfg)
    check_backend(load_preset("micro"))                                    # hf: always available


def test_model_args_per_preset():
    assert lm_args("M", load_preset("micro"), gpu=False) == ("hf", {"pretrained": "M", "dtype": "float32", "device": "cpu", "batch_size": 8})
    name, args = lm_args("M", load_preset("llama3-70b"), gpu=True)
    assert name == "vllm" and args["dtype"] == "bfloat16" and args["tensor_parallel_size"] == 8
    assert lm_args("M", load_preset("micro", {"eval.dtype": "bfloat16"}), gpu=False)[1]["dtype"] == "bfloat16"
    with pytest.raises(EvalInputError, match="unknown eval backend 'tpu'"):
        lm_args("M", load_preset("micro", {"eval.backend": "tpu"}), gpu=False)
