"""The validation-choice tables: the winner follows validation figures only."""

from distilad.bench.choices import Study, study_table

STUDY = Study("teacher", "rd", ("mvtec",), "mvtec",
              (("a", "cfg-a", "image_auroc", "image_auroc"),
               ("b", "cfg-b", "image_auroc", "image_auroc")))


def _run(cfg: str, val: float, test: float) -> dict:
    return {"method": "rd", "protocol": "mvtec", "dataset": "mvtec", "config": cfg,
            "category": "bottle", "seed": 0,
            "metrics": {"image_auroc": test},
            "validation": {"n_normal": 20, "n_anomalous": 20,
                           "metrics": {"image_auroc": val, "pixel_auroc": 0.9}}}


def _chosen(lines: list[str]) -> str:
    rows = [r for r in lines if r.startswith("| ") and "**yes**" in r]
    assert len(rows) == 1
    return rows[0].split("|")[1].strip()


def test_winner_is_the_best_on_validation_even_when_test_disagrees():
    runs = [_run("cfg-a", 0.95, 0.80), _run("cfg-a", 0.97, 0.82),
            _run("cfg-b", 0.90, 0.99), _run("cfg-b", 0.91, 0.99)]
    lines = study_table(STUDY, runs)
    assert _chosen(lines) == "a"
    assert "96.00" in "\n".join(lines)  # mean validation AUROC of a


def test_full_tie_goes_to_the_first_candidate_and_missing_runs_decide_nothing():
    assert _chosen(study_table(STUDY, [_run("cfg-a", 0.9, 0.5), _run("cfg-b", 0.9, 1.0)])) == "a"
    lines = study_table(STUDY, [_run("cfg-b", 0.99, 0.99)])
    assert not any("**yes**" in r for r in lines)
    assert study_table(STUDY, []) == []


def test_candidates_are_compared_on_the_runs_they_share():
    extra = _run("cfg-b", 0.50, 0.5)
    extra["seed"] = 1  # only b has seed 1: left out, else b's mean would drop below a's
    runs = [_run("cfg-a", 0.90, 0.9), _run("cfg-b", 0.95, 0.9), extra]
    lines = study_table(STUDY, runs)
    assert _chosen(lines) == "b"


def test_a_lead_below_one_discordant_pair_is_flagged_weak():
    # 20 x 20 pairs: one pair is 0.25 points
    weak = "\n".join(study_table(STUDY, [_run("cfg-a", 0.9510, 0.9), _run("cfg-b", 0.9500, 0.9)]))
    assert "Weak choice" in weak and "0.25 points" in weak
    clear = "\n".join(study_table(STUDY, [_run("cfg-a", 0.96, 0.9), _run("cfg-b", 0.95, 0.9)]))
    assert "Weak choice" not in clear
