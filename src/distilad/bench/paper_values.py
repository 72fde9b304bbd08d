"""Published numbers to print beside ours, with their source (see ../shared/papers notes).

Keys: (method, dataset, protocol, class or "mean", metric) -> (value in [0, 1], source note).
"""

from __future__ import annotations

PAPER: dict[tuple[str, str, str, str, str], tuple[float, str]] = {
    # RD4AD, CVPR 2022. MVTec means: paperswithcode; bottle row: recalled, unverified [R].
    ("rd", "mvtec", "mvtec", "bottle", "image_auroc"): (1.000, "RD4AD Tab.1 [R], WRN50"),
    ("rd", "mvtec", "mvtec", "bottle", "pixel_auroc"): (0.987, "RD4AD Tab.2 [R], WRN50"),
    ("rd", "mvtec", "mvtec", "bottle", "pro_rd4ad_per_image"): (0.966, "RD4AD Tab.2 [R], WRN50"),
    # RD4AD one-class novelty (mean over 10 classes)
    ("rd", "mnist", "one-class", "mean", "image_auroc"): (0.993, "RD4AD Tab.3 [R, unverified]"),
    ("rd", "fashion-mnist", "one-class", "mean", "image_auroc"): (0.950, "RD4AD Tab.3 (PwC)"),
    ("rd", "cifar10", "one-class", "mean", "image_auroc"): (0.865, "RD4AD (hq-deng/RD4AD#15)"),
    # P-KDGAN (IJCAI 2020), mean AUROC over classes as listed by paperswithcode (most likely the
    # distilled student; the paper's teacher-alone numbers were not reachable). Shown for both.
    ("pkdgan", "mnist", "one-class", "mean", "image_auroc"): (0.9725, "P-KDGAN (PwC)"),
    ("pkdgan", "fashion-mnist", "one-class", "mean", "image_auroc"): (0.9293, "P-KDGAN (PwC)"),
    ("pkdgan", "cifar10", "one-class", "mean", "image_auroc"): (0.7305, "P-KDGAN (PwC)"),
    ("edegan", "mnist", "one-class", "mean", "image_auroc"): (0.9725, "P-KDGAN (PwC)"),
    ("edegan", "fashion-mnist", "one-class", "mean", "image_auroc"): (0.9293, "P-KDGAN (PwC)"),
    ("edegan", "cifar10", "one-class", "mean", "image_auroc"): (0.7305, "P-KDGAN (PwC)"),
    # Transformaly (CVPRW 2022), ViT-B/16-384, unimodal mean of the sum, as quoted by a later
    # paper's table ([sec] in ../shared/papers/transformaly.md; per-class and multimodal tables
    # not reachable)
    ("transformaly", "cifar10", "one-class", "mean", "image_auroc"): (0.983, "Transformaly [sec]"),
    ("transformaly", "fashion-mnist", "one-class", "mean", "image_auroc"):
        (0.944, "Transformaly [sec]"),
}


def paper_value(method: str, dataset: str, protocol: str, cls: str, metric: str
                ) -> tuple[float, str] | None:
    return PAPER.get((method, dataset, protocol, cls, metric))
