"""Extraction-campaign detection over a gateway log: per-account features, then accounts linked into campaigns.

A campaign split over many accounts keeps each one ordinary, so per-account tests (PRADA, SEAT, a window
MMD) lose it; what it cannot hide is coordination. Requests are grouped into templates (curate's MinHash
LSH over the prompt, or the stored sketch when the log keeps hashes only), and accounts are linked
through pieces of evidence that many of them share far more than chance allows:

- the same template used by several accounts in the same minute (Poisson tail < 1e-6 against that
  template's own rate), or from the same /24 source network;
- the same /24 network sending for several accounts in the same minute, against that network's rate.

Connected components of accounts and such evidence are candidate campaigns. Each account also gets robust
z-scores of features that extraction pushes up (volume, template sharing, synchronised requests, source
rotation and sharing, logprobs, long answers, chain-of-thought and coding focus, regular timing, moving to
a new model within a day of its first appearance); a cluster's score adds the size of the coordination to
its members' median. The analytics run in DuckDB over the log's Parquet segments and SQLite rows.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import pdtrc

from stillhouse.curate.hashing import HashIndex, first_seen
from stillhouse.gateway import sketch
from stillhouse.gateway.log import log_files, sqlite_table

FLAG = 16.0  # flagged from this score: as unusual as four features at the cap, or a coordinated cluster
SYNC_P = 1e-6  # a (template or network, minute) with this few expected accounts is evidence of coordination
Z_CAP = 4.0  # one feature adds at most this much: an account is flagged on several, never on one odd habit
CLUSTER_WEIGHT = Z_CAP / 2
MIN_SHARED = 3  # accounts a template must reach before it links them
_COT = r"(?i)step by step|chain of thought|reasoning|think carefully|show (your|every) (work|step)|<thinking>"
_CODE = r"(?i)\b(python|javascript|typescript|rust|golang|java|c\+\+|kotlin|sql|bash|function|code|repository)\b"
# feature, how it is described, and the smallest difference worth a unit of z (so a feature almost every
# account has at 0 does not turn a single request into a large z)
FEATURES: dict[str, tuple[str, float]] = {
    "volume": ("log10 requests", 0.3),
    "shared_template": ("share of requests in templates shared with other accounts", 0.05),
    "sync": ("share of requests in minutes coordinated with other accounts", 0.05),
    "source_rotation": ("log10 distinct source addresses", 0.15),
    "source_sharing": ("log10 accounts seen on its source addresses", 0.15),
    "logprobs": ("share of requests asking for logprobs", 0.05),
    "long_answers": ("log10 mean completion tokens", 0.15),
    "cot": ("share of chain-of-thought elicitation prompts", 0.05),
    "coding": ("share of coding prompts", 0.1),
    "regularity": ("minus the coefficient of variation of gaps between requests", 0.2),
    "fast_switch": ("moved to the newest model within 24 h of its first appearance", 0.25),
}


@dataclass
class AccountResult:
    account: str
    score: float
    flagged: bool
    cluster: int | None
    reasons: list[str]
    requests: int
    features: dict[str, float] = field(repr=False)


@dataclass
class ClusterResult:
    id: int
    accounts: list[str]
    score: float
    reasons: list[str]
    requests: int
    templates: list[str]  # sha256 of each shared template's MinHash signature: shareable, not the text
    networks: list[str]  # /24 source networks behind the coordinated minutes
    first_seen: float
    last_seen: float
    sync_minutes: int
    models: list[str]


@dataclass
class Detection:
    accounts: list[AccountResult]
    clusters: list[ClusterResult]
    rows: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "accounts": [
                {k: v for k, v in asdict(a).items() if k in ("account", "score", "flagged", "cluster", "reasons")}
                for a in self.accounts
            ],
            "clusters": [
                {k: v for k, v in asdict(c).items() if k in ("id", "accounts", "score", "reasons")}
                for c in self.clusters
            ],
        }


_COLUMNS = (
    "ts, key_id, source, model, status, logprobs, prompt, prompt_sha256, sketch, prompt_tokens, completion_tokens"
)


def _connect() -> duckdb.DuckDBPyConnection:
    """DuckDB without its progress bar: it writes to stdout, where `detect --json` puts its answer."""
    con = duckdb.connect()
    con.sql("SET enable_progress_bar = false")
    return con


def load(path: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """A log's answered model requests (authenticated, chat or completions), by time, through DuckDB."""
    con = con or _connect()
    segments, db = log_files(path)
    parts = []
    if segments:
        files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in segments)
        parts.append(f"SELECT {_COLUMNS}, endpoint FROM read_parquet([{files}])")
    if db is not None:
        import sqlite3

        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            con.register("fresh_rows", sqlite_table(conn))
        parts.append(f"SELECT {_COLUMNS}, endpoint FROM fresh_rows")
    query = " UNION ALL ".join(parts)
    where = "key_id IS NOT NULL AND endpoint IN ('chat', 'completions') AND status < 500 AND status <> 429"
    return con.sql(f"SELECT {_COLUMNS} FROM ({query}) WHERE {where} ORDER BY ts").to_arrow_table()


def templates(table: pa.Table) -> np.ndarray:
    """Each request's template: the earliest request it is linked to through LSH buckets (-1 for none)."""
    prompts = table.column("prompt").to_pylist()
    blobs = table.column("sketch").to_pylist()
    has_text = np.fromiter((p is not None for p in prompts), bool, len(prompts))
    has_sketch = np.fromiter((b is not None for b in blobs), bool, len(blobs)) & ~has_text
    signatures = np.zeros((len(prompts), sketch.NUM_PERM), np.uint32)
    signatures[has_text] = sketch.sketches([p for p in prompts if p is not None])
    signatures[has_sketch] = sketch.from_bytes([b for b, s in zip(blobs, has_sketch, strict=True) if s])
    known = np.flatnonzero(has_text | has_sketch)
    roots = np.full(len(prompts), -1, np.int64)
    if len(known):
        linked = first_seen(HashIndex(), sketch.band_keys(signatures[known]), np.arange(len(known)))
        while not np.array_equal(deeper := linked[linked], linked):  # follow chains to the first member
            linked = deeper
        roots[known] = known[linked]
    return roots


def _codes(values: list[Any]) -> np.ndarray:
    return np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)[1]


def _network(source: str | None) -> str:
    if not source:
        return "?"
    return source.rsplit(".", 1)[0] if "." in source else ":".join(source.split(":")[:4])


def _coordinated(entity: np.ndarray, minute: np.ndarray, account: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Ids (or -1) of (entity, minute) pairs that hold more distinct accounts than the entity's rate explains."""
    out = np.full(len(entity), -1, np.int64)
    idx = np.flatnonzero(eligible)
    if not len(idx):
        return out
    minutes = int(minute.max()) + 1
    pairs, pair_of = np.unique(entity[idx] * minutes + minute[idx], return_inverse=True)
    accounts_in = np.bincount(_pairs(pair_of, account[idx]))  # distinct accounts per (entity, minute)
    ent, when = pairs // minutes, pairs % minutes
    first, last = np.full(ent.max() + 1, minutes), np.zeros(ent.max() + 1, np.int64)
    np.minimum.at(first, ent, when)
    np.maximum.at(last, ent, when)
    total = np.bincount(ent, weights=accounts_in)
    rate = total[ent] / (last[ent] - first[ent] + 1)  # accounts per minute if its use were spread evenly
    keep = (accounts_in >= MIN_SHARED) & (pdtrc(accounts_in - 1, rate) < SYNC_P)  # P(X >= k)
    out[idx] = np.where(keep[pair_of], pair_of, -1)
    return out


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each distinct (a, b) pair, its a: bincount of it counts distinct b per a."""
    return np.unique(a.astype(np.int64) * (int(b.max()) + 1) + b) // (int(b.max()) + 1)


def _robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    v = values[finite]
    median = np.median(v)
    scale = max(1.4826 * np.median(np.abs(v - median)), float(np.std(v)) * 0.5, floor)
    return np.where(finite, np.clip((values - median) / scale, -10, 10), 0.0)


def detect(log: str | Path | pa.Table, *, flag: float = FLAG) -> Detection:
    """Score every account of a log and group coordinated accounts into campaigns, with the evidence."""
    started = time.perf_counter()
    con = _connect()
    table = log if isinstance(log, pa.Table) else load(log, con)
    n = table.num_rows
    if n == 0:
        return Detection([], [], 0, time.perf_counter() - started)
    ts = table.column("ts").to_numpy()
    keys = table.column("key_id").to_pylist()
    names, account = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
    network_names, network = np.unique(
        np.array([_network(s) for s in table.column("source").to_pylist()]), return_inverse=True
    )
    template = templates(table)
    minute = ((ts - ts.min()) // 60).astype(np.int64)

    # templates: a shared one reaches MIN_SHARED accounts and is filled in, not one prompt repeated verbatim
    known = template >= 0
    tpl = np.where(known, template, n + np.arange(n))  # unknown prompts are each their own template
    _, tpl = np.unique(tpl, return_inverse=True)
    per_tpl = np.bincount(tpl)
    accts_per_tpl = np.bincount(_pairs(tpl, account))
    prompt_codes = _codes(table.column("prompt_sha256").to_pylist())
    distinct_per_tpl = np.bincount(_pairs(tpl, prompt_codes))
    shared = known & (accts_per_tpl[tpl] >= MIN_SHARED) & (distinct_per_tpl[tpl] >= 0.5 * per_tpl[tpl])

    # evidence of coordination, each a node linking the accounts that share it
    sync_tpl = _coordinated(tpl, minute, account, shared)
    sync_net = _coordinated(network, minute, account, network_names[network] != "?")
    tpl_net = np.unique(tpl.astype(np.int64) * (int(network.max()) + 1) + network, return_inverse=True)[1]
    accts_per_tpl_net = np.bincount(_pairs(tpl_net, account))
    infra = np.where(shared & (accts_per_tpl_net[tpl_net] >= MIN_SHARED), tpl_net, -1)
    evidence = [sync_tpl, sync_net, infra]
    sync = (sync_tpl >= 0) | (sync_net >= 0)
    linked = sync | (infra >= 0)

    rows, cols, offset = [], [], len(names)
    for ev in evidence:
        hit = ev >= 0
        rows.append(account[hit])
        cols.append(offset + ev[hit])
        offset += int(ev.max()) + 1 if hit.any() else 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    component = component[: len(names)]
    sizes = np.bincount(component)

    con.register(
        "req",
        table.select(["ts", "key_id", "source", "model", "logprobs", "prompt", "prompt_tokens", "completion_tokens"])
        .append_column("shared", pa.array(shared))
        .append_column("sync", pa.array(sync)),
    )
    feats = account_features(con, names)
    z = {f: _robust_z(feats[f], floor) for f, (_, floor) in FEATURES.items()}
    own = np.sum([np.clip(v, 0, Z_CAP) for v in z.values()], axis=0)
    own_reasons = _reasons(feats, z)

    clusters: list[ClusterResult] = []
    final, cluster_of = own.copy(), np.full(len(names), -1)
    requests = np.bincount(account, minlength=len(names))
    for comp in np.flatnonzero(sizes >= MIN_SHARED):
        members = np.flatnonzero(component == comp)
        in_c = np.isin(account, members)
        share_sync = float(sync[in_c].mean())
        # each doubling of the accounts acting together adds half a capped feature, for the share of their traffic
        # that the linking evidence covers
        score = float(np.median(own[members]) + CLUSTER_WEIGHT * math.log2(len(members)) * linked[in_c].mean())
        cid = len(clusters)
        cluster_of[members] = cid
        final[members] = np.maximum(final[members], score)
        clusters.append(_cluster(cid, names[members], score, share_sync, table, in_c, shared, sync, tpl, network,
                                 network_names, minute, requests[members].sum()))  # fmt: skip
    results = []
    for i, name in enumerate(names):
        reasons = list(own_reasons[i])
        cid = int(cluster_of[i])
        if cid >= 0:
            member_of = clusters[cid]
            reasons.insert(
                0, f"member of cluster {cid} ({len(member_of.accounts)} accounts, score {member_of.score:.1f})"
            )
        score = round(float(final[i]), 3)
        features = {f: float(feats[f][i]) for f in FEATURES}
        cluster = cid if cid >= 0 else None
        results.append(AccountResult(str(name), score, score >= flag, cluster, reasons, int(requests[i]), features))
    results.sort(key=lambda a: -a.score)
    clusters.sort(key=lambda c: -c.score)
    return Detection(results, clusters, n, time.perf_counter() - started)


def account_features(con: duckdb.DuckDBPyConnection, names: np.ndarray) -> dict[str, np.ndarray]:
    """Per-account feature columns, aligned with `names`."""
    models = con.sql("SELECT model, min(ts) AS first FROM req GROUP BY model ORDER BY first DESC LIMIT 1").fetchall()
    newest = models[0] if models else None
    start = con.sql("SELECT min(ts) FROM req").fetchall()[0][0]
    release = newest[1] if newest and newest[1] > start + 3600 else None  # a model that appeared mid-log
    new_model = _sql(newest[0]) if newest else ""
    q = f"""
    WITH r AS (
        SELECT *, ts - lag(ts) OVER (PARTITION BY key_id ORDER BY ts) AS gap FROM req
    ), sources AS (
        SELECT source, count(DISTINCT key_id) AS accounts FROM req GROUP BY source
    ), by_source AS (
        SELECT r.key_id, max(s.accounts) AS sharing FROM (SELECT DISTINCT key_id, source FROM req) r
        JOIN sources s USING (source) GROUP BY r.key_id
    )
    SELECT key_id,
        log10(count(*)) AS volume,
        avg(shared::INT) AS shared_template,
        avg(sync::INT) AS sync,
        log10(count(DISTINCT source)) AS source_rotation,
        log10(any_value(b.sharing)) AS source_sharing,
        avg(coalesce(logprobs, false)::INT) AS logprobs,
        log10(1 + avg(completion_tokens)) AS long_answers,
        avg(regexp_matches(prompt, '{_COT}')::INT) AS cot,
        avg(regexp_matches(prompt, '{_CODE}')::INT) AS coding,
        CASE WHEN count(gap) >= 3 THEN -stddev_pop(gap) / nullif(avg(gap), 0) END AS regularity,
        {
        f"CASE WHEN min(ts) < {release} AND min(ts) FILTER (model = '{new_model}') < {release} + 86400 "
        "THEN 1.0 ELSE 0.0 END"
        if release
        else "0.0"
    } AS fast_switch
    FROM r JOIN by_source b USING (key_id)
    GROUP BY key_id
    """
    df = con.sql(q).to_arrow_table()
    order = {k: i for i, k in enumerate(df.column("key_id").to_pylist())}
    idx = np.array([order[str(k)] for k in names])
    return {f: df.column(f).to_numpy(zero_copy_only=False).astype(float)[idx] for f in FEATURES}


def _sql(text: str) -> str:
    return text.replace("'", "''")


def _reasons(feats: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(len(next(iter(feats.values()))))]
    for f, (what, _) in FEATURES.items():
        for i in np.flatnonzero(z[f] >= 3):
            out[i].append(f"{f}: {what} = {feats[f][i]:.2f} (z {z[f][i]:.1f})")
    return out


def _cluster(cid: int, members: np.ndarray, score: float, share_sync: float, table: pa.Table, in_c: np.ndarray,
             shared: np.ndarray, sync: np.ndarray, tpl: np.ndarray, network: np.ndarray, network_names: np.ndarray,
             minute: np.ndarray, requests: int) -> ClusterResult:  # fmt: skip
    """A cluster's evidence: its shared templates (as hashed signatures), networks, synchronised minutes."""
    prompts = table.column("prompt")
    blobs = table.column("sketch")
    tpl_ids, counts = np.unique(tpl[in_c & shared], return_counts=True)
    top = tpl_ids[np.argsort(-counts)[:10]]
    signatures = []
    for t in top:
        row = int(np.flatnonzero(in_c & (tpl == t))[0])
        text = prompts[row].as_py()
        sig = sketch.sketches([text])[0] if text is not None else sketch.from_bytes([blobs[row].as_py()])[0]
        signatures.append(hashlib.sha256(sig.astype("<u4").tobytes()).hexdigest())
    nets, net_counts = np.unique(network[in_c & (sync | shared)], return_counts=True)  # networks of linked requests
    networks = [str(network_names[x]) for x in nets[np.argsort(-net_counts)[:10]]]
    ts = table.column("ts").to_numpy()[in_c]
    models = sorted({m for m in table.column("model").filter(pa.array(in_c)).to_pylist() if m})
    sync_minutes = len(np.unique(minute[in_c & sync]))
    reasons = [f"{len(members)} accounts linked by coordinated use of shared templates and source networks"]
    if sync_minutes:
        reasons.append(
            f"{share_sync:.0%} of its {requests} requests fall in {sync_minutes} minutes coordinated across accounts"
        )
    if len(tpl_ids):
        share = float(shared[in_c].mean())
        reasons.append(f"{len(tpl_ids)} templates shared across its accounts carry {share:.0%} of its requests")
    if networks:
        reasons.append(f"coordinated traffic from {len(nets)} /24 networks, most from {networks[0]}.0/24")
    return ClusterResult(cid, [str(m) for m in members], round(score, 3), reasons, int(requests), signatures,
                         networks, float(ts.min()), float(ts.max()), sync_minutes, models)  # fmt: skip
