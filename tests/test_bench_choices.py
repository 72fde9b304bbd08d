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


def test_cheaper_within_prefers_the_first_candidate_unless_another_leads_on_some_dataset():
    study = Study("epochs", "rd", ("mvtec", "elpv"), "mvtec",
                  (("e1", "cfg-a", "image_auroc", "image_auroc"),
                   ("e5", "cfg-b", "image_auroc", "image_auroc")), cheaper_within=0.5)

    def runs(a: tuple[float, float], b: tuple[float, float]) -> list[dict]:
        out = []
        for ds, va, vb in zip(("mvtec", "elpv"), a, b, strict=True):
            for cfg, v in (("cfg-a", va), ("cfg-b", vb)):
                r = _run(cfg, v, 0.5)
                r["dataset"] = ds
                out.append(r)
        return out

    # b better on both by 0.4 points: still a (the cheaper)
    assert _chosen(study_table(study, runs((0.800, 0.600), (0.804, 0.604)))) == "e1"
    # b better by 0.6 points on one dataset only: b (the only other), although a leads the mean
    lines = study_table(study, runs((0.900, 0.600), (0.800, 0.606)))
    assert _chosen(lines) == "e5"
    assert "Decided by cost" in "\n".join(lines)
    # a validation-only run (no test metrics) counts, its test cell is '-'
    val_only = runs((0.8, 0.6), (0.8, 0.6))
    for r in val_only:
        del r["metrics"]
    lines = study_table(study, val_only)
    assert _chosen(lines) == "e1" and "| - |" in "\n".join(lines)
