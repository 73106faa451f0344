"""The general suites run lm-eval's own task YAMLs on our local files: the prompts, choices and targets lm-eval
builds from our converted rows equal those it builds from rows in the hub datasets' schemas, task by task;
AGIEval's acc and acc_norm differ on real data; WikiText's words are counted on the raw pages."""
import json
import re
from pathlib import Path

import pytest

from sec_nb import evalsets as ES
from sec_nb.lmeval import HARNESS_TASKS, harness_config, harness_task


def harness_view(name: str, rows: list[dict], folder: Path) -> list[tuple]:
    "(prompt, choices, target) that lm-eval's own task for `name` builds from `rows`."
    from lm_eval.tasks import TaskManager, get_task_dict
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{name}.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = next(iter(get_task_dict([harness_config(harness_task(name, f))],
                                   TaskManager(include_path=str(folder), include_defaults=False)).values()))
    return [(task.doc_to_text(d), task.doc_to_choice(d), task.doc_to_target(d)) for d in task.test_docs()]


# ---- fixture rows in the hub datasets' schemas, and what the mirror's re-formatted copies hold for them -----

ARC_HUB = [{"id": "Mercury_1", "question": "Which gas do plants take in for photosynthesis?",
            "choices": {"text": ["oxygen", "carbon dioxide", "nitrogen", "helium"], "label": ["A", "B", "C", "D"]},
            "answerKey": "B"},
           {"id": "NYSEDREGENTS_2", "question": "What is the boiling point of water at sea level?",
            "choices": {"text": ["0 C", "50 C", "100 C", "150 C"], "label": ["1", "2", "3", "4"]}, "answerKey": "3"}]
OBQA_HUB = [{"id": "7-980", "question_stem": "The sun is responsible for",
             "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                                  "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                         "label": ["A", "B", "C", "D"]}, "answerKey": "D"}]
BOOLQ_HUB = [{"question": "is the sky blue on a clear day", "passage": "On a clear day the sky looks blue because "
              "air scatters short wavelengths more.", "idx": 0, "label": 1},
             {"question": "can a penguin fly", "passage": "Penguins are flightless birds.", "idx": 1, "label": 0}]
WINO_HUB = [{"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
             "option1": "Sarah", "option2": "Maria", "answer": "1"},
            {"sentence": "The trophy does not fit into the suitcase because _ is too small.",
             "option1": "the trophy", "option2": "the suitcase", "answer": "2"}]     # options share their first word
HELLA_HUB = [{"ind": 4, "activity_label": "Removing ice from car",
              "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
              "ctx_b": "then", "ctx": "Then, the man writes over the snow covering the window of a car, and a woman "
              "wearing winter clothes smiles. then", "endings": [", the man adds wax to the windshield and cuts it.",
              ", a person board a ski lift.", ", the man puts on a christmas coat.", ", the man continues removing the snow on his car."],
              "split": "val", "label": "3"},
             {"ind": 7, "activity_label": "Baking cookies", "ctx_a": "A female chef in white uniform shows a stack of baking pans in a large kitchen presenting them.",
              "ctx_b": "the pans", "ctx": "A female chef in white uniform shows a stack of baking pans in a large kitchen presenting them. the pans",
              "endings": ["contain egg yolks and baking soda.", "are then sprinkled with brown sugar.",
                          "are placed in a strainer on the counter.", "are filled with pastries and loaded into the oven."],
              "split": "val", "label": "3"}]


def gauntlet_arc(r):       # what MosaicML's eval gauntlet made of an ARC row
    return {"query": f"Question: {r['question']}", "choices": r["choices"]["text"],
            "gold": r["choices"]["label"].index(r["answerKey"])}


def gauntlet_wino(r):
    i = r["sentence"].index("_")
    return {"context_options": [r["sentence"][:i] + r["option1"], r["sentence"][:i] + r["option2"]],
            "continuation": r["sentence"][i + 1:].strip(), "gold": int(r["answer"]) - 1}


def test_arc_rows_and_prompts_equal_the_hub(tmp_path):
    got, _ = ES.arc_items([gauntlet_arc(r) for r in ARC_HUB], "arc_easy")
    assert {k: got[0][k] for k in ("question", "choices", "answerKey")} == {k: ARC_HUB[0][k] for k in ("question", "choices", "answerKey")}
    for name in ("arc_easy", "arc_challenge"):   # numeric labels became letters: the same prompts
        want = harness_view(name, ARC_HUB, tmp_path / "hub")
        assert harness_view(name, got, tmp_path / "ours") == want
        assert want[0] == ("Question: Which gas do plants take in for photosynthesis?\nAnswer:",
                           ["oxygen", "carbon dioxide", "nitrogen", "helium"], 1)


def test_openbookqa_and_boolq_rows_equal_the_hub(tmp_path):
    got, _ = ES.openbookqa_items([{"query": r["question_stem"], "choices": r["choices"]["text"],
                                   "gold": r["choices"]["label"].index(r["answerKey"])} for r in OBQA_HUB])
    assert [{k: g[k] for k in ("question_stem", "choices", "answerKey")} for g in got] == \
           [{k: r[k] for k in ("question_stem", "choices", "answerKey")} for r in OBQA_HUB]
    assert harness_view("openbookqa", got, tmp_path / "o1") == harness_view("openbookqa", OBQA_HUB, tmp_path / "o2")
    gauntlet = [{"query": f"Passage: {r['passage']}\nQuestion: {r['question']}?", "choices": ["no", "yes"], "gold": r["label"]}
                for r in BOOLQ_HUB]
    got, skipped = ES.boolq_items(gauntlet)
    assert got == BOOLQ_HUB and not skipped
    view = harness_view("boolq", got, tmp_path / "b")
    assert view == harness_view("boolq", BOOLQ_HUB, tmp_path / "b2")
    assert view[1] == ("Penguins are flightless birds.\nQuestion: can a penguin fly?\nAnswer:", ["no", "yes"], 0)


def test_winogrande_prompts_equal_the_hub(tmp_path):
    got, _ = ES.winogrande_items([gauntlet_wino(r) for r in WINO_HUB])
    assert got[0] == WINO_HUB[0]
    # the shared first word "the" moved from the options into the sentence; lm-eval's prompts do not change
    assert got[1]["option1"] == "trophy" and got[1]["sentence"].endswith("because the _ is too small.")
    assert harness_view("winogrande", got, tmp_path / "w1") == harness_view("winogrande", WINO_HUB, tmp_path / "w2")


def test_hellaswag_dump_gives_the_harness_query(tmp_path):
    import bz2
    dump = tmp_path / "hs.txt.bz2"
    dump.write_bytes(bz2.compress("".join(f"{r['activity_label']}: {r['ctx']}\n{r['label']}\n" + "".join(e + "\n" for e in r["endings"])
                                          for r in HELLA_HUB).encode()))
    got, _ = ES.hellaswag_items(dump)
    want = harness_view("hellaswag", HELLA_HUB, tmp_path / "h1")
    assert harness_view("hellaswag", got, tmp_path / "h2") == want
    assert want[0][0] == ("Removing ice from car: Then, the man writes over the snow covering the window of a car, "
                          "and a woman wearing winter clothes smiles. Then")


def test_agieval_and_truthfulqa_rows(tmp_path):
    release = {"passage": None, "question": "What is 2 + 3?", "options": ["(A)4", "(B)5", "(C)23"], "label": "B",
               "answer": None, "other": None}
    got, _ = ES.agieval_items([release], "aqua-rat")
    hub = {"query": "Q: What is 2 + 3? Answer Choices: (A)4 (B)5 (C)23\nA: Among A through C, the answer is",
           "choices": ["(A)4", "(B)5", "(C)23"], "gold": [1]}          # hails/agieval-aqua-rat's schema
    assert got == [hub]
    view = harness_view("agieval_aqua_rat", got, tmp_path / "a")
    assert view == [(hub["query"], hub["choices"], [1])]
    tq, _ = ES.truthfulqa_items([{"question": "Is the earth flat?", "mc1_targets": {"No, it is round.": 1, "Yes.": 0},
                                  "mc2_targets": {"No, it is round.": 1, "No.": 1, "Yes.": 0}}])
    assert tq == [{"question": "Is the earth flat?", "mc1_targets": {"choices": ["No, it is round.", "Yes."], "labels": [1, 0]},
                   "mc2_targets": {"choices": ["No, it is round.", "No.", "Yes."], "labels": [1, 1, 0]}}]
    prompt, choices, target = harness_view("truthfulqa_mc2", tq, tmp_path / "t")[0]
    assert prompt.endswith("\n\nQ: Is the earth flat?\nA:") and prompt.startswith("Q: What is human life expectancy")
    assert choices == ["No, it is round.", "No.", "Yes."] and target == 0


def test_every_general_task_is_the_harness_own(tmp_path):
    "Each general task resolves to a YAML shipped in the installed harness, changed only in its dataset source."
    from sec_nb.lmeval import harness_yaml
    for name, h in HARNESS_TASKS.items():
        cfg = harness_config(harness_task(name, tmp_path / "x.jsonl"))
        assert cfg["dataset_path"] == "json" and cfg["metadata"]["harness_task"] == h and harness_yaml(h).endswith(".yaml")
    assert harness_yaml("agieval_aqua_rat") == "agieval/aqua-rat.yaml" and harness_yaml("wikitext") == "wikitext/wikitext.yaml"


# ---- on the real data ------------------------------------------------------------------------------------

def _real(name):
    from sec_nb.datasets import DataError, dataset_dir
    try: return dataset_dir(name)
    except DataError as e: pytest.skip(f"dataset {name} not reachable: {e}")


def test_wikitext_words_are_counted_on_raw_pages(tmp_path):
    raw = (_real("wikitext") / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    pages = ES.wikitext_docs(raw)
    from lm_eval.tasks import TaskManager, get_task_dict
    f = tmp_path / "wikitext.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in pages))
    task = next(iter(get_task_dict([harness_config(harness_task("ppl_wikitext", f))],
                                   TaskManager(include_path=str(tmp_path), include_defaults=False)).values()))
    docs = list(task.test_docs())
    harness_words = sum(task.process_results(d, [-1.0])["word_perplexity"][1] for d in docs)
    raw_words = sum(len(re.split(r"\s+", p["page"])) for p in pages)
    detok_words = sum(len(re.split(r"\s+", task.doc_to_target(d))) for d in docs)
    assert len(docs) == 62 and harness_words == raw_words
    assert 1.15 < raw_words / detok_words < 1.21        # counting on the detokenized text: about 18% fewer words


def test_agieval_acc_differs_from_acc_norm_on_real_items(tmp_path):
    "With the full option strings as choices, length normalisation changes some picks (bare letters never would)."
    import torch
    from test_eval import make_model, make_tokenizer
    from sec_nb.config import load_preset
    from sec_nb.lmeval import evaluate, load_lm
    from lm_eval.tasks import TaskManager, get_task_dict
    lines = [json.loads(l) for l in open(_real("agieval") / "v1" / "logiqa-en.jsonl")][:40]
    items, _ = ES.agieval_items(lines, "logiqa-en")
    f = tmp_path / "logiqa.jsonl"
    f.write_text("".join(json.dumps(it) + "\n" for it in items))
    tok = make_tokenizer(tmp_path / "tok", [it["query"] for it in items[:10]])
    model = make_model(tmp_path / "m", tok, seed=1)
    torch.set_num_threads(1)
    lm = load_lm(str(model), load_preset("micro"))
    lm._max_length = 256
    tasks = get_task_dict([harness_config(harness_task("agieval_logiqa_en", f))],
                          TaskManager(include_path=str(tmp_path), include_defaults=False))
    res = evaluate(lm, tasks)["results"]["secnb_agieval_logiqa_en"]
    assert res["acc,none"] != res["acc_norm,none"], res
