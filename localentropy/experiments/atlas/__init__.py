"""The samplers' accuracy atlas: stability limits, moment errors with MCSEs and effective temperatures, measured on
a bank of targets with known moments (``localentropy samplers --accuracy``; rendered in docs/samplers.md)."""

from localentropy.experiments.atlas.run import AtlasConfig, run_atlas

__all__ = ["AtlasConfig", "run_atlas"]
