"""Threat indicators of detected campaigns as a STIX 2.1 bundle, to share with other providers.

Nothing in the bundle names an account or holds a prompt: a campaign is described by hashed template
signatures (sha256 of a template's MinHash signature, with the signature itself so a peer can test near
matches against its own traffic's sketches), its timing (when, how many minutes it coordinated), and the
/24 networks it sent from. Every object carries a TLP marking and the campaign is tied to MITRE ATLAS
AML.T0024.002 "Extract AI Model".
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import stix2

from stillhouse.core.errors import StillhouseError
from stillhouse.gateway.detect import Detection
from stillhouse.gateway.sketch import NGRAM, NUM_PERM

TLP = {"clear": stix2.TLP_WHITE, "green": stix2.TLP_GREEN, "amber": stix2.TLP_AMBER, "red": stix2.TLP_RED}
ATLAS = stix2.ExternalReference(
    source_name="mitre-atlas", external_id="AML.T0024.002", url="https://atlas.mitre.org/techniques/AML.T0024.002"
)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def bundle(detection: Detection, *, producer: str = "stillhouse gateway", tlp: str = "amber") -> stix2.Bundle:
    """A bundle with one campaign per flagged cluster, its indicators, infrastructure and sightings."""
    if tlp not in TLP:
        raise StillhouseError(f"--tlp must be one of {', '.join(TLP)}, not {tlp!r}")
    marking = TLP[tlp]
    common = {"object_marking_refs": [marking]}
    identity = stix2.Identity(name=producer, identity_class="organization", **common)
    common["created_by_ref"] = identity
    technique = stix2.AttackPattern(
        name="Extract AI Model",
        description="Querying a model's API to harvest its outputs and train a copy (distillation).",
        external_references=[ATLAS],
        **common,
    )
    objects: list = [marking, identity, technique]
    flagged = {a.account for a in detection.accounts if a.flagged}
    for c in detection.clusters:
        if not flagged.intersection(c.accounts):
            continue
        first, last = _when(c.first_seen), _when(c.last_seen)
        campaign = stix2.Campaign(
            name=f"LLM extraction campaign {c.id}",
            description="; ".join(c.reasons) + f"; models queried: {', '.join(c.models)}",
            first_seen=first,
            last_seen=last,
            **common,
        )
        objects += [campaign, stix2.Relationship(campaign, "uses", technique, **common)]
        indicators = []
        for sig in c.templates:
            indicators.append(
                stix2.Indicator(
                    name=f"prompt template of campaign {c.id}",
                    description=f"sha256 of the template's MinHash signature ({NUM_PERM} permutations over word "
                    f"{NGRAM}-grams, stillhouse.gateway.sketch); match by hashing your requests' sketches",
                    indicator_types=["malicious-activity"],
                    pattern=f"[artifact:hashes.'SHA-256' = '{sig}']",
                    pattern_type="stix",
                    valid_from=first,
                    **common,
                )
            )
        indicators.append(
            stix2.Indicator(
                name=f"timing signature of campaign {c.id}",
                description=f"{c.sync_minutes} minutes in which several of its accounts used one template or one "
                f"network together, far beyond those templates' and networks' own rates, between {first:%Y-%m-%d} "
                f"and {last:%Y-%m-%d}",
                indicator_types=["anomalous-activity"],
                pattern=f"[network-traffic:start >= t'{first:%Y-%m-%dT%H:%M:%SZ}' AND "
                f"network-traffic:start <= t'{last:%Y-%m-%dT%H:%M:%SZ}']",
                pattern_type="stix",
                valid_from=first,
                **common,
            )
        )
        for indicator in indicators:
            objects += [
                indicator,
                stix2.Relationship(indicator, "indicates", campaign, **common),
                stix2.Sighting(
                    sighting_of_ref=indicator,
                    where_sighted_refs=[identity],
                    first_seen=first,
                    last_seen=last,
                    count=min(c.requests, 999_999_999),
                    **common,
                ),
            ]
        if c.networks:
            addresses = [stix2.IPv4Address(value=f"{n}.0/24") for n in c.networks if n.count(".") == 2]
            infrastructure = stix2.Infrastructure(
                name=f"source networks of campaign {c.id}",
                infrastructure_types=["anonymization"],
                first_seen=first,
                last_seen=last,
                **common,
            )
            objects += [infrastructure, *addresses, stix2.Relationship(campaign, "uses", infrastructure, **common)]
            objects += [stix2.Relationship(infrastructure, "consists-of", a, **common) for a in addresses]
    return stix2.Bundle(objects=objects)


def write_bundle(detection: Detection, out: str | Path, *, overwrite: bool = False, **options: str) -> Path:
    """Write the bundle as JSON (temporary name, then rename); never replaces a file without `overwrite`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise StillhouseError(f"{out} exists; pick another --stix path or pass --overwrite")
    if not out.parent.is_dir():
        raise StillhouseError(f"no directory {out.parent} for {out.name}")
    text = bundle(detection, **options).serialize(pretty=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)
    return out
