"""Curation: from raw exchanges to a filtered, deduplicated, decontaminated, documented chat dataset."""

from stillhouse.curate.pipeline import CurateConfig, CurateResult, curate

__all__ = ["CurateConfig", "CurateResult", "curate"]
