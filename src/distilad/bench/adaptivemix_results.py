"""RESULTS.md section "AdaptiveMix ablation (on vs off, seeds paired)" from the per-run records.

An AdaptiveMix run has a config name ending in ``-adaptivemix`` and ``params.adaptivemix`` true;
its partner is the run of the same method, dataset, protocol, class and seed under the config
name without the suffix (AdaptiveMix off), with the other parameters equal. The OOD classifier's
records have their own section (``distilad.bench.ood_results``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from typing import Any

import numpy as np

from distilad.bench.record import RUN_ONLY_PARAMS, mean_std_text, record_metric

#: paired differences: the mean's sign always shown
_signed = partial(mean_std_text, signed=True)

SUFFIX = "-adaptivemix"
GAN_METHODS = {"edegan", "pkdgan"}
METHOD_NAMES = {"edegan": "EDE-GAN", "pkdgan": "P-KDGAN", "rd": "RD", "transformaly": "Transformaly"}
#: parameters that do not change what a run trains (or are the ablated switch itself)
_NOT_COMPARED = RUN_ONLY_PARAMS | {"validation_curve"}
#: the verdict's threshold on the mean paired difference, in AUROC points
MIN_EFFECT_POINTS = 0.5
_SHOWN_PARAMS = ("backbone", "image_size", "epochs", "teacher_epochs", "step1_epochs",
                 "step2_epochs", "schedule", "batch_size", "width", "nz", "student_width",
                 "student_nz")

Pair = tuple[dict[str, Any], dict[str, Any]]  # (off run, on run)


@dataclass
class AblationGroup:
    """The paired runs of one (method, dataset, protocol, base config)."""

    method: str
    dataset: str
    protocol: str
    config: str  # the base (off) config name
    pairs: dict[tuple[str, int], Pair]  # (class, seed) -> (off, on), params agreeing
    mismatched: list[str]  # classes/seeds whose partner ran with other parameters


def _class_key(c: str) -> tuple[int, Any]:
    return (0, int(c)) if c.isdigit() else (1, c)


def _is_on(r: dict[str, Any]) -> bool:
    return str(r.get("config", "")).endswith(SUFFIX) and r.get("params", {}).get("adaptivemix") is True


def _differing_params(off: dict[str, Any], on: dict[str, Any]) -> list[str]:
    """Parameter names both runs record with different values (AdaptiveMix's own excluded)."""
    a, b = off.get("params", {}), on.get("params", {})
    return sorted(k for k in set(a) & set(b) if k not in _NOT_COMPARED
                  and not k.startswith("adaptivemix") and str(a[k]) != str(b[k]))


def adaptivemix_groups(runs: list[dict[str, Any]]) -> tuple[list[AblationGroup], list[str]]:
    """Pair every AdaptiveMix run with its off partner; returns the groups with at least one pair
    (sorted) and a line per (method, dataset, protocol, config) whose on runs found no partner."""
    off_runs = {(r["method"], r["dataset"], r["protocol"], str(r["category"]), r["seed"],
                 r["config"]): r for r in runs if not r.get("params", {}).get("adaptivemix")}
    groups: dict[tuple[str, str, str, str], AblationGroup] = {}
    lonely: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for on in (r for r in runs if _is_on(r)):
        base = on["config"][: -len(SUFFIX)]
        key = (on["method"], on["dataset"], on["protocol"], base)
        off = off_runs.get(key[:3] + (str(on["category"]), on["seed"], base))
        if off is None:
            lonely[key] += 1
            continue
        group = groups.setdefault(key, AblationGroup(*key, pairs={}, mismatched=[]))
        differ = _differing_params(off, on)
        if differ:
            group.mismatched.append(f"class {on['category']} seed {on['seed']} "
                                    f"({', '.join(differ)})")
        else:
            group.pairs[(str(on["category"]), on["seed"])] = (off, on)
    unpaired = [f"{METHOD_NAMES.get(m, m)} · {d} · {p} · `{c}{SUFFIX}`: {n} run{'s' if n != 1 else ''}"
                for (m, d, p, c), n in sorted(lonely.items())]
    return [groups[k] for k in sorted(groups) if groups[k].pairs], unpaired


def complete_grid(pairs: set[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """The largest complete class x seed grid inside ``pairs``: the most seeds first, then the
    most classes (ties: the lowest seeds). Returns (classes, seeds), both sorted."""
    all_seeds = sorted({s for _, s in pairs})
    for k in range(len(all_seeds), 0, -1):
        best: tuple[set[str], tuple[int, ...]] | None = None
        for seeds in combinations(all_seeds, k):
            common = set.intersection(*({c for c, s in pairs if s == seed} for seed in seeds))
            if common and (best is None or len(common) > len(best[0])):
                best = (common, seeds)
        if best is not None:
            return sorted(best[0], key=_class_key), list(best[1])
    return [], []


def _per_seed(group: AblationGroup, classes: list[str], seeds: list[int],
              value: Callable[[Pair], float]) -> list[float]:
    """Per seed, the mean over ``classes`` of ``value(pair)`` (NaNs skipped; seeds with no finite
    value left out): one value per seed, AUROC as a fraction."""
    out = []
    for s in seeds:
        vals = [value(group.pairs[(c, s)]) for c in classes]
        if not all(math.isnan(v) for v in vals):
            out.append(float(np.nanmean(vals)))
    return out


def _spread(group: AblationGroup, classes: list[str], seeds: list[int], arm: int) -> float:
    """Per class the std (ddof 1) over seeds of test image AUROC, averaged over classes;
    NaN with fewer than two seeds. ``arm``: 0 off, 1 on."""
    if len(seeds) < 2:
        return math.nan
    return float(np.mean([np.std([record_metric(group.pairs[(c, s)][arm], "image_auroc")
                                  for s in seeds], ddof=1) for c in classes]))


def discriminator_resets(r: dict[str, Any]) -> int | None:
    """Collapsed-discriminator resets of one run, summed over its networks; None if unrecorded."""
    resets = r.get("fit_info", {}).get("discriminator_resets")
    if resets is None:
        return None
    return int(sum(resets.values())) if isinstance(resets, dict) else int(resets)


def _resets_text(runs: list[dict[str, Any]]) -> str:
    counts = [discriminator_resets(r) for r in runs]
    known = [c for c in counts if c is not None]
    if not known:
        return "n/a"
    missing = len(counts) - len(known)
    return f"{sum(known)}" + (f" ({missing} runs unrecorded)" if missing else "")


def verdict(diffs: list[float]) -> str:
    """'helps' / 'hurts' / 'no clear effect' from per-seed paired differences (fractions): an
    effect where |mean| > MIN_EFFECT_POINTS and |mean| > std over seeds; one seed: no verdict."""
    if len(diffs) < 2:
        return "one seed only, no verdict"
    mean, std = 100 * float(np.mean(diffs)), 100 * float(np.std(diffs, ddof=1))
    if abs(mean) > MIN_EFFECT_POINTS and abs(mean) > std:
        return "helps" if mean > 0 else "hurts"
    return "no clear effect"


def _test(key: str, arm: int) -> Callable[[Pair], float]:
    return lambda p: record_metric(p[arm], key)


def _val(arm: int) -> Callable[[Pair], float]:
    return lambda p: record_metric(p[arm], "image_auroc", "validation")


def _diff(value_off: Callable[[Pair], float], value_on: Callable[[Pair], float]
          ) -> Callable[[Pair], float]:
    return lambda p: value_on(p) - value_off(p)


def _group_lines(group: AblationGroup) -> tuple[list[str], str]:
    """One subsection (title, setting, table, per-class line, verdict) and the verdict word."""
    classes, seeds = complete_grid(set(group.pairs))
    grid = {(c, s): group.pairs[(c, s)] for c in classes for s in seeds}
    offs, ons = [p[0] for p in grid.values()], [p[1] for p in grid.values()]
    name = METHOD_NAMES.get(group.method, group.method)
    params = ons[0].get("params", {})
    setting = ", ".join(f"{k}={params[k]}" for k in _SHOWN_PARAMS if k in params)
    mix = ons[0].get("fit_info", {}).get("adaptivemix", {})
    term = ", ".join(f"{k} {mix[k]}" for k in ("weight", "alpha", "sigma") if k in mix)
    devices = sorted({str(r.get("gpu") or r.get("device")) for r in offs + ons})
    left = len(group.pairs) - len(grid)
    lines = [f"### AdaptiveMix · {name} · {group.dataset} · {group.protocol} · config "
             f"`{group.config}` vs `{group.config}{SUFFIX}`", "",
             f"Classes {', '.join(classes)}; seeds {', '.join(map(str, seeds))}; "
             f"{len(grid)} pair{'s' if len(grid) != 1 else ''}"
             + (f" ({left} further pairs outside the complete class x seed grid not counted)"
                if left else "")
             + (f"; left out, partner trained with other parameters: "
                f"{'; '.join(group.mismatched)}" if group.mismatched else "")
             + f". {setting}" + (f"; AdaptiveMix term: {term}" if term else "")
             + f"; device {' / '.join(devices)}.", ""]
    gan = group.method in GAN_METHODS
    pixel = any("pixel_auroc" in r.get("metrics", {}) for r in offs + ons)
    columns = ["AdaptiveMix", "test image AUROC", "val. image AUROC"]
    columns += ["pixel AUROC"] if pixel else []
    # Transformaly: the part AdaptiveMix trains (the pretrained part is the frozen teacher's)
    ts = "image_auroc_teacher_student"
    ts_part = any(ts in r.get("metrics", {}) for r in offs + ons)
    columns += ["test AUROC teacher-student part"] if ts_part else []
    columns += ["spread over seeds", "D resets"] if gan else []
    lines += ["| " + " | ".join(columns + ["train s / run"]) + " |",
              "|" + "---|" * (len(columns) + 1)]
    test_gain = _diff(_test("image_auroc", 0), _test("image_auroc", 1))
    test_diff = _per_seed(group, classes, seeds, test_gain)
    val_diff = _per_seed(group, classes, seeds, _diff(_val(0), _val(1)))
    spreads = [_spread(group, classes, seeds, arm) for arm in (0, 1)]
    spread_text = ["-" if math.isnan(v) else f"{100 * v:.2f}" for v in spreads]
    secs = [float(np.mean([r["train_seconds"] for r in rs])) for rs in (offs, ons)]
    for arm, label in ((0, "off"), (1, "on")):
        cells = [label, mean_std_text(_per_seed(group, classes, seeds, _test("image_auroc", arm))),
                 mean_std_text(_per_seed(group, classes, seeds, _val(arm)))]
        if pixel:
            cells.append(mean_std_text(_per_seed(group, classes, seeds, _test("pixel_auroc", arm))))
        if ts_part:
            cells.append(mean_std_text(_per_seed(group, classes, seeds, _test(ts, arm))))
        if gan:
            cells += [spread_text[arm], _resets_text(ons if arm else offs)]
        lines.append("| " + " | ".join(cells + [f"{secs[arm]:.0f}"]) + " |")
    cells = ["paired on - off", _signed(test_diff), _signed(val_diff)]
    if pixel:
        cells.append(_signed(_per_seed(group, classes, seeds, _diff(_test("pixel_auroc", 0),
                                                                    _test("pixel_auroc", 1)))))
    if ts_part:
        cells.append(_signed(_per_seed(group, classes, seeds, _diff(_test(ts, 0), _test(ts, 1)))))
    if gan:
        resets = [[discriminator_resets(r) for r in rs] for rs in (offs, ons)]
        known = None not in resets[0] + resets[1]
        cells += [_signed([spreads[1] - spreads[0]]),
                  f"{sum(resets[1]) - sum(resets[0]):+d}" if known else "n/a"]
    lines.append("| " + " | ".join(cells + [f"{secs[1] - secs[0]:+.0f}"]) + " |")
    per_class = [f"{c} {_signed([float(np.mean([test_gain(grid[(c, s)]) for s in seeds]))])}"
                 for c in classes]
    word = verdict(test_diff)
    numbers = (f"test image AUROC {_signed(test_diff)} points over {len(test_diff)} seed"
               f"{'s' if len(test_diff) != 1 else ''}, validation {_signed(val_diff)}")
    claim = {"helps": "AdaptiveMix helps", "hurts": "AdaptiveMix hurts",
             "no clear effect": "AdaptiveMix has no clear effect"}.get(word, word)
    sentence = f"{name} · {group.dataset}: {claim} ({numbers})"
    if gan and len(seeds) > 1:
        sentence += (f"; spread over seeds {spread_text[0]} (off) vs {spread_text[1]} (on) "
                     f"points; collapsed-D resets {_resets_text(offs)} (off) vs "
                     f"{_resets_text(ons)} (on)")
    lines += ["", "Paired difference per class (on - off, test image AUROC, mean over seeds, "
                  "points): " + ", ".join(per_class) + ".", "", sentence + ".", ""]
    return lines, word


def adaptivemix_ablation_section(runs: list[dict[str, Any]]) -> list[str]:
    """The section: the rule, one subsection per pair group, a summary of the verdicts."""
    groups, unpaired = adaptivemix_groups(runs)
    if not groups:
        return []
    lines = ["## AdaptiveMix ablation (on vs off, seeds paired)", "",
             f"A run with config `<name>{SUFFIX}` (`adaptivemix=true`) against the run of the "
             "same method, dataset, protocol, class and seed under `<name>` (off); a pair counts "
             "only when both exist and every other parameter both record agrees. Per group the "
             "largest complete class x seed grid of pairs (most seeds first, then most classes); "
             "AUROC: mean over classes per seed, then mean ± std over seeds; `paired on - off`: "
             "the same over seeds of the per-seed mean of on - off. Spread over seeds (GANs): per "
             "class the std of test image AUROC over seeds, averaged over classes (lower = more "
             "stable). D resets (GANs): collapsed-discriminator re-initialisations summed over the "
             "grid's runs and networks (`fit_info[\"discriminator_resets\"]`). Train s: mean fit time "
             "per run, indicative only where runs shared a machine. Verdict rule: "
             f"AdaptiveMix helps (hurts) where the mean paired test difference is above "
             f"+{MIN_EFFECT_POINTS} (below -{MIN_EFFECT_POINTS}) points and larger in size than its "
             "std over seeds; otherwise no clear effect; no verdict from one seed. The OOD "
             "classifier has its own section, \"AdaptiveMix: OOD detection\".", ""]
    verdicts: dict[str, list[str]] = defaultdict(list)
    for group in groups:
        group_lines, word = _group_lines(group)
        lines += group_lines
        verdicts[word].append(f"{METHOD_NAMES.get(group.method, group.method)} · "
                              f"{group.dataset} (`{group.config}`)")
    order = ["helps", "no clear effect", "hurts", "one seed only, no verdict"]
    lines += ["Summary (test image AUROC, the rule above): " + "; ".join(
        f"{w}: {', '.join(verdicts[w])}" for w in order if verdicts[w]) + ".", ""]
    if unpaired:
        lines += ["AdaptiveMix runs without an off partner (not in the tables): "
                  + "; ".join(unpaired) + ".", ""]
    return lines
