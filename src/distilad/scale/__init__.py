"""Scaling out on existing engines: batch scoring of large image collections with Ray Data
(:mod:`distilad.scale.ray_score`). Multi-process training is :mod:`distilad.distributed`."""
