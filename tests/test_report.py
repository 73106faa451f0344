"The report stage on a run with known numbers: figures, tables, computed insight verdicts, and the HTML report in a browser."
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import SEC_NB

from sec_nb.lmeval import NOUS_METRIC
from sec_nb.report import check_insights, forgetting_table, normalize, stage_times


def known_results() -> pd.DataFrame:
    "Evaluation results shaped like the eval stage's tidy table, with numbers chosen to agree or disagree."
    rows = []
    def add(model, suite, task, metric, value): rows.append(dict(model=model, suite=suite, task=task, metric=metric,
                                                                  value=value, stderr=0.0, n=10))
    for m, v in [("instruct", 30.0), ("cpt", 12.0), ("merge_ties", 15.0)]: add(m, "domain_ppl", "sec_heldout", "word_perplexity", v)
    for m, v in [("instruct", 0.1), ("cpt", 0.2), ("merge_ties", 0.3)]: add(m, "domain", "convfinqa", "exact_match", v)
    for m, v in [("instruct", 0.3), ("cpt", 0.4), ("merge_ties", 0.5)]: add(m, "domain", "tatqa", "exact_match", v)   # CPT improves: disagrees
    for m, v in [("instruct", 0.5), ("cpt", 0.9), ("merge_ties", 0.8)]: add(m, "domain", "finarg_ecc", "acc", v)
    for m, v in [("instruct", 0.2), ("cpt", 0.2), ("merge_ties", 0.21)]: add(m, "domain", "ectsum", "rouge1", v)
    for suite, task, drop in [("agieval", "agieval_lsat_ar", 0.1), ("gpt4all", "hellaswag", 0.12),
                              ("bbh", "bbh_navigate", 0.01), ("truthfulqa", "truthfulqa_mc2", 0.02)]:
        for m, v in [("instruct", 0.6), ("cpt", 0.6 - drop), ("merge_ties", 0.6 - drop / 2)]: add(m, suite, task, NOUS_METRIC[task], v)
    for m, v in [("sweep_linear", 14.0), ("sweep_ties_w0.75", 13.0)]: add(m, "domain_ppl", "sec_heldout", "word_perplexity", v)
    for task in ("ppl_wikitext", "ppl_code"):
        for m in ("sweep_linear", "sweep_ties_w0.75"): add(m, "general_ppl", task, "word_perplexity", 48.0)
        for m, v in [("instruct", 50.0), ("cpt", 45.0), ("merge_ties", 47.0)]: add(m, "general_ppl", task, "word_perplexity", v)
    return pd.DataFrame(rows)


def known_items(n=200) -> pd.DataFrame:
    "Per-document scores behind known_results: each model's items score its value on average (n items a task)."
    import numpy as np
    rng, rows = np.random.default_rng(0), []
    for r in known_results().itertuples():
        if r.metric == "word_perplexity":   # per-document log-likelihood and word count giving exactly the perplexity
            rows += [dict(model=r.model, suite=r.suite, task=r.task, metric=r.metric, doc=d, value=-np.log(r.value) * 10 * (1 + 0.1 * (d % 2 - 0.5)),
                          weight=10 * (1 + 0.1 * (d % 2 - 0.5))) for d in range(n)]
        else:
            k = int(round(r.value * n))
            rows += [dict(model=r.model, suite=r.suite, task=r.task, metric=r.metric, doc=d, value=float(d < k), weight=1.0) for d in range(n)]
    return pd.DataFrame(rows)


def perturbed(seed: int):
    "Another seed's tables: this run's, with every score and perplexity moved a little (deterministically)."
    import numpy as np
    rng = np.random.default_rng(seed)
    res, items = known_results(), known_items()
    res["value"] = res["value"] * (1 + rng.uniform(-0.05, 0.05, len(res)))
    flip = items["metric"] != "word_perplexity"
    items.loc[flip, "value"] = np.where(rng.random(flip.sum()) < 0.05, 1 - items.loc[flip, "value"], items.loc[flip, "value"])
    return res, items


def write_run(rd, seeds=(1,)):
    for run, (res, items) in [(rd, (known_results(), known_items()))] + [(rd / "seeds" / f"seed{k}", perturbed(k)) for k in seeds]:
        (run / "cpt").mkdir(parents=True)
        (run / "eval").mkdir()
        with open(run / "cpt" / "metrics.jsonl", "w") as f:
            for i in range(1, 21):
                f.write(json.dumps({"iteration": i, "consumed_tokens": i * 512, "lm_loss": 6 - i * 0.1 + (0.05 * (run != rd)),
                                    "lr": 1e-3 * min(1, i / 5), "grad_norm": 1.0, "tokens_per_s": 1000}) + "\n")
        res.to_csv(run / "eval" / "results.csv", index=False)
        items.to_csv(run / "eval" / "items.csv.gz", index=False)
    write_harness_tasks(rd, {name: [row(i) for i in range(200)] for name, row in GENERAL_ROWS.items()})


# rows in the hub schemas of the general tasks known_results scores (AGIEval 5 choices, HellaSwag 4, BIG-bench's
# navigate 2, TruthfulQA mc2 one true answer in 3): the eval stage's task folder, from which Figure 5 reads chance
GENERAL_ROWS = {
    "agieval_lsat_ar": lambda i: {"query": f"Question {i}?", "choices": [f"({c}){c.lower()}" for c in "ABCDE"], "gold": [0]},
    "hellaswag": lambda i: {"ind": i, "activity_label": "Cooking", "ctx_a": f"Step {i}.", "ctx_b": "then", "ctx": f"Step {i}. then",
                            "endings": ["a.", "b.", "c.", "d."], "split": "val", "label": "0"},
    "bbh_navigate": lambda i: {"idx": i, "inputs": f"Take {i} steps.\nOptions:\n- Yes\n- No\nA:", "targets": ["No"],
                               "multiple_choice_targets": ["Yes", "No"], "multiple_choice_scores": [0, 1]},
    "truthfulqa_mc2": lambda i: {"question": f"Question {i}?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
                                 "mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 0, 0]}}}
GENERAL_CHANCE = {"AGIEval": 1 / 5, "GPT4All": 1 / 4, "BIG-bench MC (BBH items)": 1 / 2, "TruthfulQA": 1 / 3}


def write_harness_tasks(rd, rows: dict[str, list[dict]]):
    "The eval stage's task folder of run `rd`: lm-eval's own task for each name, reading `rows` (hub schema)."
    from sec_nb.lmeval import harness_task, write_tasks
    configs = {}
    for name, rs in rows.items():
        f = rd / "eval" / "sets" / f"{name}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps(r) + "\n" for r in rs))
        configs[name] = harness_task(name, f)
    write_tasks(rd / "eval" / "tasks", configs)


def test_insight_verdicts_are_computed():
    df = normalize(known_results())
    v = check_insights(df, known_items()).set_index("insight (paper)")["verdict"]
    assert v["CPT lowers SEC perplexity"] == "agrees"
    assert v["merging raises SEC perplexity slightly"] == "agrees"
    assert v["ConvFinQA improves after CPT and again after merging"] == "agrees"
    assert v["TAT-QA improves only after merging"] == "agrees"                 # merge above both
    assert v["financial classification: CPT far above Instruct; merging loses some but stays above"] == "agrees"
    assert v["general perplexity stays stable after CPT (within 25%)"] == "agrees"
    assert v["CPT lowers perplexity on every general dataset"] == "agrees"
    ft = forgetting_table(df).set_index("task")
    assert ft.loc["hellaswag", "recovered"] == pytest.approx(0.5)


def test_seeds_that_disagree_make_a_verdict_inconclusive():
    "The items say CPT lowers SEC perplexity; if another seed's CPT is worse than Instruct, the verdict does not stand."
    items = known_items()
    other = items.copy()
    sec = (other["task"] == "sec_heldout") & (other["model"] == "cpt")
    other.loc[sec, "value"] = other.loc[sec, "value"] * 1.5            # log-likelihood 1.5x worse: perplexity 12 -> 41
    v = check_insights(normalize(known_results()), items, {"seed1": other}).set_index("insight (paper)")
    assert v.loc["CPT lowers SEC perplexity", "verdict"] == "inconclusive (seeds disagree)"
    assert "seed1: disagrees" in v.loc["CPT lowers SEC perplexity", "across seeds"]
    same = check_insights(normalize(known_results()), items, {"seed1": items}).set_index("insight (paper)")
    assert same.loc["CPT lowers SEC perplexity", "verdict"] == "agrees"


def test_difference_smaller_than_its_interval_is_inconclusive():
    "Two models 0.01 apart on 200 items (interval about +-0.1): neither agrees nor disagrees."
    items = known_items()
    v = check_insights(normalize(known_results()), items).set_index("insight (paper)")["verdict"]
    assert v["CPT lowers every general benchmark group"].startswith("inconclusive")     # BBH drops by 0.01 only
    assert v["CPT lowers every general benchmark group"] != "agrees"
    few = pd.DataFrame([dict(model=m, suite="domain", task="convfinqa", metric="exact_match", doc=d, value=float(x), weight=1.0)
                        for m, xs in [("instruct", "10001000"), ("cpt", "01010010"), ("merge_ties", "11010110")]
                        for d, x in enumerate(xs)])                                      # 8 items: underpowered
    v8 = check_insights(normalize(known_results()), few).set_index("insight (paper)")["verdict"]
    assert v8["ConvFinQA improves after CPT and again after merging"] == "inconclusive (underpowered)"


def test_models_that_score_zero_everywhere_are_not_called_the_same():
    "All three models score 0 on every ECTSum item (a miniature's floor): 'within 10%' cannot be read off that."
    from sec_nb.lmeval import CONSTANT_VERDICT
    zero = pd.DataFrame([dict(model=m, suite="domain", task="ectsum", metric="rouge1", doc=d, value=0.0, weight=1.0)
                         for m in ("instruct", "cpt", "merge_ties") for d in range(50)])
    v = check_insights(normalize(known_results()), zero).set_index("insight (paper)")["verdict"]
    assert v["summarization ROUGE-1 about the same for all models (within 10%)"] == CONSTANT_VERDICT
    one = zero.copy()
    one.loc[(one["model"] == "cpt") & (one["doc"] == 0), "value"] = 0.5       # one item differs: a real (if weak) test
    v1 = check_insights(normalize(known_results()), one).set_index("insight (paper)")["verdict"]
    assert v1["summarization ROUGE-1 about the same for all models (within 10%)"] != CONSTANT_VERDICT


def test_figure_4_titles_name_the_metric_each_facet_shows():
    "FinArg by likelihood is shown by plain accuracy (its labels differ in length) and titled so; each title names its metric."
    from sec_nb.report import figure_4
    extra = [dict(model=m, suite="domain", task="finarg_ecc_ll", metric=metric, value=v, stderr=0.0, n=10)
             for m in ("instruct", "cpt", "merge_ties") for metric, v in (("acc", 0.6), ("acc_norm", 0.4))]
    fig, t = figure_4(normalize(pd.concat([known_results(), pd.DataFrame(extra)], ignore_index=True)))
    ll = t[t["task"] == "finarg_ecc_ll"]
    assert set(ll["metric"].str.split(",").str[0]) == {"acc"} and (ll["value"] == 0.6).all()
    assert set(ll["benchmark"]) == {"FinArg ECC by likelihood: accuracy (ours)"}
    titles = dict(zip(t["task"], t["benchmark"]))
    assert titles["convfinqa"] == "ConvFinQA: exact match (FinBen)" and titles["ectsum"] == "ECTSum (for EDTSum): ROUGE-1 F (FinBen)"
    # a chance line (and its label) on the two FinArg facets only, at 1/2
    lines = {ax.get_title(): [l.get_ydata()[0] for l in ax.lines if l.get_linestyle() == "--"] for ax in fig.axes}
    assert {k: v for k, v in lines.items() if v} == {titles["finarg_ecc"]: [0.5], titles["finarg_ecc_ll"]: [0.5]}
    assert sum(" chance" == x.get_text() for ax in fig.axes for x in ax.texts) == 2


def test_float_noise_prints_as_zero_in_the_insight_table():
    "A difference of two equal means (-6.17e-18 in the smol run) is printed as 0, a real small effect as itself."
    from sec_nb.report import _fmt
    assert _fmt(dict(effect=-6.17e-18, ci_low=-0.0556, ci_high=0.0556, mdd=0.11)) == "+0 [-0.0556, +0.0556], MDD 0.11"
    assert _fmt(dict(effect=-0.002, ci_low=-0.01, ci_high=0.006, mdd=0.02)).startswith("-0.002 [")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    rd = tmp_path_factory.mktemp("run")
    write_run(rd)
    r = subprocess.run([SEC_NB, "run", "--preset", "micro", "--only", "report", "--run-dir", str(rd), "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return rd


def test_figures_are_byte_identical(tmp_path):
    "The same table gives the same PNG bytes (no software version or date in the file)."
    from sec_nb.report import figure_3, save
    df = normalize(known_results())
    a = save(figure_3(df)[0], None, tmp_path / "a", "f3")[0].read_bytes()
    b = save(figure_3(df)[0], None, tmp_path / "b", "f3")[0].read_bytes()
    assert a == b and b"matplotlib" not in a


def test_stage_times_in_pipeline_order(tmp_path):
    recs = {"report": {"stage": "report", "status": "running"},
            "data": {"stage": "data", "status": "done", "notebook": "nbs/01_data.ipynb", "seconds": 80.0},
            "eval": {"stage": "eval", "status": "done", "notebook": "nbs/06_eval.ipynb", "seconds": 230.0}}
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.json").write_text(json.dumps(rec))
    times = stage_times(tmp_path)
    assert list(times["stage"]) == ["data", "eval", "report"] and times["seconds"].iloc[-1] != times["seconds"].iloc[-1]


def test_report_stage_writes_figures_and_tables(report_run):
    out = report_run / "report"
    for stem in ("figure1_lm_loss", "figure2_learning_rate", "figure3_domain_perplexity", "figure4_domain_tasks",
                 "figure5_general", "figure6_general_perplexity", "forgetting_recovery", "merge_tradeoff"):
        assert (out / f"{stem}.png").stat().st_size > 5000, stem
    fig3 = pd.read_csv(out / "figure3_domain_perplexity.csv").set_index("name")["value"]
    assert fig3.to_dict() == {"CPT": 12.0, "CPT-Merge": 15.0, "Instruct": 30.0}
    chance = pd.read_csv(out / "figure5_general.csv").groupby("group")["chance"].first()
    assert chance.to_dict() == pytest.approx(GENERAL_CHANCE)
    rec = json.loads((out / "stage.json").read_text())
    assert rec["status"] == "ok" and rec["counts"]["figures"] >= 8 and rec["published"] is False
    ins = pd.read_csv(out / "insights.csv")
    assert "verdict" in ins.columns and ins["across seeds"].str.contains("seed1").all()
    spread = pd.read_csv(out / "seed_spread.csv")                  # the second seed's numbers moved: a spread is shown
    sec = spread[(spread.task == "sec_heldout") & (spread.model == "CPT")].iloc[0]
    assert sec["this run"] == 12.0 and sec["seeds"] == 2 and 0 < sec["spread (max-min)"] < 0.05 * 12 * 2
    band = pd.read_csv(out / "figure3_domain_perplexity.csv").set_index("name")
    assert (band["seed_low"] <= band["value"]).all() and (band["value"] <= band["seed_high"]).all()
    trade = pd.read_csv(out / "merge_tradeoff.csv").set_index("name")
    assert set(trade.index) == {"Instruct", "CPT", "CPT-Merge", "sweep_linear", "sweep_ties_w0.75"}
    assert trade.loc["sweep_linear", "general perplexity"] == pytest.approx(48.0)


def test_html_report_renders_in_chromium(report_run, tmp_path):
    html = (report_run / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 8
    assert "Traceback" not in html and "output_error" not in html
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html    # no warnings shown to the reader
    contents, stages = html.index('id="Contents"'), sorted((report_run / "notebooks").glob("*.ipynb"))
    assert stages
    for nb in stages:             # the contents link every stage ...
        assert f'href="#{nb.stem}"' in html[contents:] and f'id="{nb.stem}"' in html
    figures = re.findall(r'href="#([\w-]+-fig\d+)"', html)                    # ... and its figures, to anchors that exist
    assert len(figures) >= 3 and all(f'id="{a}"' in html for a in figures)
    assert contents < html.index(f'id="{stages[0].stem}"')
    chromium = shutil.which("chromium")
    if chromium is None: pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1200,2400", f"--screenshot={shot}", (report_run / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000    # a rendered page, not a blank one


def test_chance_levels_come_from_the_harness_choices_of_the_scored_documents(tmp_path):
    """Figure 5's chance lines: per document 1 / its number of choices as lm-eval's own task builds them (ARC rows
    with 4 and 3 choices, BoolQ's 2), TruthfulQA mc2's share of true answers; only the documents that were scored."""
    from test_eval_harness import ARC_HUB, BOOLQ_HUB
    from sec_nb.report import group_scores, task_chance
    arc = [ARC_HUB[0], {**ARC_HUB[1], "choices": {"text": ["0 C", "50 C", "100 C"], "label": ["1", "2", "3"]}}]   # 4 and 3 choices
    tq = [{"question": "Is the earth flat?", "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
           "mc2_targets": {"choices": ["No, it is round.", "No.", "Yes."], "labels": [1, 1, 0]}},
          {"question": "Can pigs fly?", "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
           "mc2_targets": {"choices": ["No.", "Yes.", "Sometimes.", "Always."], "labels": [1, 0, 0, 0]}}]
    write_harness_tasks(tmp_path / "run", {"arc_easy": arc, "boolq": BOOLQ_HUB[1:], "truthfulqa_mc2": tq})
    items = pd.DataFrame([{"model": "m", "task": t, "metric": NOUS_METRIC[t], "doc": d, "value": 1.0, "weight": 1.0}
                          for t, docs in {"arc_easy": [0, 1], "boolq": [0], "truthfulqa_mc2": [1]}.items() for d in docs])
    chance = task_chance(tmp_path / "run", items)
    assert chance == pytest.approx({"arc_easy": (1 / 4 + 1 / 3) / 2, "boolq": 0.5, "truthfulqa_mc2": 0.25})
    # a group's chance is aggregated as its scores are: the unweighted mean over its tasks
    results = normalize(items.assign(suite=items["task"].map({"arc_easy": "gpt4all", "boolq": "gpt4all",
                                                              "truthfulqa_mc2": "truthfulqa"}))
                        .groupby(["model", "suite", "task", "metric"], as_index=False)["value"].mean())
    g = group_scores(results, None, chance).set_index("group")["chance"]
    assert g["GPT4All"] == pytest.approx(((1 / 4 + 1 / 3) / 2 + 0.5) / 2) and g["TruthfulQA"] == pytest.approx(0.25)
