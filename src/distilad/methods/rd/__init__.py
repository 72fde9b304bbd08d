"""Reverse Distillation (Deng & Li, CVPR 2022)."""
