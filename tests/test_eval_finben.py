"""Domain-task scoring on known answers: FinBen's exact match and label extraction as FinBen computes them
(PIXIU's flare.py: QA.process_results, Classification.process_results and its macro-F1/MCC aggregations),
the labelled numeric match, and TAT-QA's official EM/F1 with scale and multi-span answers."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from sec_nb.lmeval import (FINARG_CHOICES, convfinqa_results, finarg_results, finben_exact_match, finben_label,
                           finben_macro_f1, finben_mcc, numeric_match, tatqa_em_f1, tatqa_results)


def pixiu_qa_acc(generation: str, gold: str) -> float:        # PIXIU QA.process_results, restated
    return 1.0 if generation.strip() == gold else 0.0


@pytest.mark.parametrize("gen,gold", [(" -0.13228", "-0.13228"), ("-0.13228\n", "-0.13228"), ("-0.1323", "-0.13228"),
                                      ("164", "164.0"), ("164.0", "164.0"), (" 12.5 million", "12.5")])
def test_finben_exact_match_is_finben(gen, gold):
    assert finben_exact_match(gen, gold) == pixiu_qa_acc(gen, gold)
    assert convfinqa_results({"answer": gold}, [gen])["exact_match"] == pixiu_qa_acc(gen, gold)


def test_numeric_match_normalises_and_rejects_wrong_numbers():
    assert numeric_match("12.5", "12.5", scale="million") == 1.0                 # the table's units
    assert numeric_match("12,500,000", "12.5", scale="million") == 1.0           # plain number for a scaled gold
    assert numeric_match("12.5 million", "12,500,000") == 1.0
    assert numeric_match("12.6 million", "12,500,000") == 0.0
    assert numeric_match("12.4", "12.5", scale="million") == 0.0
    assert numeric_match("23.4%", "23.4", scale="percent") == 1.0 and numeric_match("23.4%", "24.4", scale="percent") == 0.0
    assert numeric_match("164", "164.0") == 1.0 and numeric_match("-0.13228", "-0.13228") == 1.0
    assert numeric_match("(25)", "-25") == 1.0                                   # accounting negative
    # multi-span answers in any order; a missing or extra span fails
    assert numeric_match("2019, 2018", "2018, 2019") == 1.0
    assert numeric_match("Cash and equivalents; Inventories", "inventories, cash and equivalents") == 1.0   # "and" inside a span
    assert numeric_match("2018 and 2019", "2019, 2018") == 1.0 and numeric_match("Cash and equivalents", "", gold_spans=["cash and equivalents"]) == 1.0
    assert numeric_match("inventories, receivables", "receivables, inventories") == 1.0
    assert numeric_match("2019", "2018, 2019") == 0.0 and numeric_match("2017, 2019", "2018, 2019") == 0.0


def test_tatqa_official_em_f1():
    assert tatqa_em_f1("12.5 million", ["12.5"], "million", "arithmetic") == (1.0, 1.0)
    assert tatqa_em_f1("12500000", ["12.5"], "million", "arithmetic") == (1.0, 1.0)
    assert tatqa_em_f1("12.4 million", ["12.5"], "million", "arithmetic") == (0.0, 0.0)      # F1 = EM for arithmetic
    assert tatqa_em_f1("23.42%", ["23.42"], "percent", "arithmetic")[0] == 1.0
    assert tatqa_em_f1("revenue, cost of sales", ["cost of sales", "revenue"], "", "multi-span")[0] == 1.0
    em, f1 = tatqa_em_f1("the modified method", ["the modified retrospective method"], "", "span")
    assert em == 0.0 and 0 < f1 < 1
    doc = {"answer": "12.5", "answers": ["12.5"], "scale": "million", "answer_type": "arithmetic"}
    got = tatqa_results(doc, [" 12.5 million"])
    assert got == {"exact_match": 0.0, "numeric_match": 1.0, "tatqa_em": 1.0, "tatqa_f1": 1.0}


def test_finarg_generated_label_and_metrics_equal_finben():
    gens = ["Claim", "this is a premise.", "I am not sure", "claim: yes", "Premise", "premise or claim"]
    golds = [1, 0, 1, 0, 0, 1]
    docs = [{"choices": FINARG_CHOICES, "gold": g} for g in golds]
    res = [finarg_results(d, [x]) for d, x in zip(docs, gens)]
    labels = [finben_label(x, FINARG_CHOICES) for x in gens]
    assert labels == ["claim", "premise", "missing", "claim", "premise", "premise"]   # first choice in order wins
    assert [r["acc"] for r in res] == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0] and sum(r["missing"] for r in res) == 1
    pairs = [r["macro_f1"] for r in res]
    preds, gold_names = zip(*pairs)
    # PIXIU: f1_score(golds, preds, average="macro", labels=set(golds)); MCC with unseen labels mapped to -1
    assert finben_macro_f1(pairs) == pytest.approx(f1_score(gold_names, preds, average="macro", labels=sorted(set(gold_names))))
    ids = {l: i for i, l in enumerate(sorted(set(gold_names)))}
    assert finben_mcc(pairs) == pytest.approx(matthews_corrcoef([ids[g] for g in gold_names], [ids.get(p, -1) for p in preds]))
    assert not np.isnan(finben_mcc(pairs))
