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
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import pdtrc

from stillhouse.core.errors import StillhouseError
from stillhouse.gateway import sketch
from stillhouse.gateway.log import ACCOUNTS, log_files, sqlite_table

FLAG = 16.0  # flagged from this score: as unusual as four features at the cap, or a coordinated cluster
SYNC_P = 1e-6  # a (template or network, minute) with this few expected accounts is evidence of coordination
Z_CAP = 4.0  # one feature adds at most this much: an account is flagged on several, never on one odd habit
CLUSTER_WEIGHT = Z_CAP / 2
MIN_SHARED = 3  # accounts a template must reach before it links them
INFRA_MIN = 10  # accounts on one payment instrument (or other account field) before it links them: past a family's
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
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase: where the time of a large log goes

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
    con.sql("SET arrow_large_buffer_size = true")  # large_string: a column of millions of prompts passes 2 GB
    return con


def load(path: str | Path) -> pa.Table:
    """A log's answered model requests (authenticated, chat or completions), by time, through DuckDB."""
    segments, db = log_files(path)
    con = _connect()
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
    try:
        return con.sql(f"SELECT {_COLUMNS} FROM ({query}) WHERE {where} ORDER BY ts").to_arrow_table()
    finally:
        con.close()


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of a column's values (-1 for null) and the distinct values they index, by Arrow's hash table."""
    encoded = pc.dictionary_encode(column)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.empty(0, np.int64), pa.array([], column.type)
    codes = [pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) for c in chunks]
    return np.concatenate(codes), chunks[0].dictionary  # chunks of one encoding share its dictionary


def templates(texts: pa.ChunkedArray, blobs: pa.ChunkedArray, first: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each request's template (-1 for none): the root of its distinct prompt through LSH buckets.

    `texts`, `blobs` and `first` hold each distinct prompt's text (null in a log kept as hashes), stored
    sketch and first request; `codes` gives each request's distinct prompt (-1 for none). Each distinct
    prompt is hashed once, and `sketch.link` roots it at the earliest one it shares a bucket with."""
    has_text = texts.is_valid().to_numpy(zero_copy_only=False)
    has_sketch = blobs.is_valid().to_numpy(zero_copy_only=False) & ~has_text
    if has_text.all():  # the common case, without a second copy of millions of keys
        keys = sketch.text_band_keys(texts.cast(pa.large_string()).combine_chunks())
    else:
        keys = np.zeros((len(first), sketch.BANDS), np.uint64)
        with_text = texts.filter(pa.array(has_text)).cast(pa.large_string()).combine_chunks()
        keys[has_text] = sketch.text_band_keys(with_text)
        keys[has_sketch] = sketch.band_keys(sketch.from_bytes(blobs.filter(pa.array(has_sketch)).to_pylist()))
    known = np.flatnonzero(has_text | has_sketch)
    roots = np.full(len(first) + 1, -1, np.int64)  # the extra slot answers code -1 (no prompt)
    if len(known):
        order = known[np.argsort(first[known], kind="stable")]  # link in time order, so roots are the earliest
        in_order = len(order) == len(keys) and bool((order == np.arange(len(keys))).all())
        roots[order] = order[sketch.link(keys if in_order else keys[order])]
    return roots[codes]


def _networks(sources: pa.ChunkedArray) -> pa.ChunkedArray:
    """The /24 of an IPv4 address, the /64 of an IPv6 one, "?" for none."""
    v4 = pc.replace_substring_regex(sources, pattern=r"^(\d+\.\d+\.\d+)\.\d+$", replacement=r"\1")
    v6 = pc.replace_substring_regex(v4, pattern=r"^([^:]*:[^:]*:[^:]*:[^:]*):.*$", replacement=r"\1")
    return pc.fill_null(pc.if_else(pc.equal(v6, ""), None, v6), "?")


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


def detect(
    log: str | Path | pa.Table,
    *,
    flag: float = FLAG,
    accounts: str | Path | pa.Table | None = None,
    infra_min: int = INFRA_MIN,
) -> Detection:
    """Score every account of a log and group coordinated accounts into campaigns, with the evidence.

    `accounts` (a table or a JSONL, CSV or Parquet file with an `account` column; by default the log
    directory's accounts.jsonl, if any) adds what the provider knows of each account beyond its traffic:
    every other column (a payment instrument's fingerprint, a sign-up address) whose value at least
    `infra_min` accounts share links them as shared infrastructure."""
    started = time.perf_counter()
    if accounts is None and not isinstance(log, pa.Table) and (Path(log) / ACCOUNTS).is_file():
        accounts = Path(log) / ACCOUNTS
    if infra_min < 2:
        raise StillhouseError(f"infra_min must be at least 2 (accounts sharing a value), not {infra_min}")
    account_table = read_accounts(accounts) if isinstance(accounts, str | Path) else accounts
    table = log if isinstance(log, pa.Table) else load(log)  # its own connection: closing it frees DuckDB's buffers
    con = _connect()
    phases = {"load": time.perf_counter() - started}

    def phase(name: str) -> None:
        phases[name] = time.perf_counter() - started - sum(phases.values())

    n = table.num_rows
    if n == 0:
        return Detection([], [], 0, time.perf_counter() - started, phases)
    ts = table.column("ts").to_numpy()
    account, names = _encode(table.column("key_id"))
    network, network_names = _encode(_networks(table.column("source")))
    prompt_codes, distinct = _encode(table.column("prompt_sha256"))
    first = sketch.first_rows(prompt_codes, len(distinct))  # each distinct prompt's first request
    prompt_values = table.column("prompt").take(pa.array(first))
    phase("encode")
    template = templates(prompt_values, table.column("sketch").take(pa.array(first)), first, prompt_codes)
    phase("templates")
    minute = ((ts - ts.min()) // 60).astype(np.int64)

    # templates: a shared one reaches MIN_SHARED accounts and is filled in, not one prompt repeated verbatim
    known = template >= 0
    tpl = np.where(known, template, n + np.arange(n))  # unknown prompts are each their own template
    _, tpl = np.unique(tpl, return_inverse=True)
    per_tpl = np.bincount(tpl)
    accts_per_tpl = np.bincount(_pairs(tpl, account))
    distinct_per_tpl = np.bincount(_pairs(tpl, np.where(prompt_codes >= 0, prompt_codes, len(distinct))))
    shared = known & (accts_per_tpl[tpl] >= MIN_SHARED) & (distinct_per_tpl[tpl] >= 0.5 * per_tpl[tpl])

    # evidence of coordination, each a node linking the accounts that share it
    sync_tpl = _coordinated(tpl, minute, account, shared)
    sync_net = _coordinated(network, minute, account, network != pc.index(network_names, "?").as_py())
    tpl_net = np.unique(tpl.astype(np.int64) * (int(network.max()) + 1) + network, return_inverse=True)[1]
    accts_per_tpl_net = np.bincount(_pairs(tpl_net, account))
    infra = np.where(shared & (accts_per_tpl_net[tpl_net] >= MIN_SHARED), tpl_net, -1)
    fields = _shared_fields(account_table, names, infra_min)  # per account: the shared instrument of each field, or -1
    on_shared = np.zeros(len(names), bool)
    for codes in fields.values():
        on_shared |= codes >= 0
    sync = (sync_tpl >= 0) | (sync_net >= 0)
    linked = sync | (infra >= 0) | on_shared[account]

    rows, cols, offset = [], [], len(names)
    for owner, ev in [(account, sync_tpl), (account, sync_net), (account, infra)] + [
        (np.arange(len(names)), codes) for codes in fields.values()
    ]:
        hit = ev >= 0
        rows.append(owner[hit])
        cols.append(offset + ev[hit])
        offset += int(ev.max()) + 1 if hit.any() else 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    component = component[: len(names)]
    sizes = np.bincount(component)
    phase("link")

    sources = _encode(table.column("source"))[0]
    con.register(
        "req",
        pa.table(
            {
                "ts": table.column("ts"),
                "account": account,
                "source": pa.array(sources, mask=sources < 0),
                "model": table.column("model"),
                "logprobs": table.column("logprobs"),
                "completion_tokens": table.column("completion_tokens"),
                "cot": _matches(prompt_values, _COT, prompt_codes),
                "coding": _matches(prompt_values, _CODE, prompt_codes),
                "shared": shared,
                "sync": sync,
            }
        ),
    )
    feats = account_features(con, len(names))
    phase("features")
    z = {f: _robust_z(feats[f], floor) for f, (_, floor) in FEATURES.items()}
    own = np.sum([np.clip(v, 0, Z_CAP) for v in z.values()], axis=0)
    own_reasons = _reasons(feats, z)

    clusters: list[ClusterResult] = []
    final, cluster_of = own.copy(), np.full(len(names), -1)
    requests = np.bincount(account, minlength=len(names))
    comps = np.flatnonzero(sizes >= MIN_SHARED)
    of_comp = np.full(len(sizes), -1)
    of_comp[comps] = np.arange(len(comps))
    row_group = of_comp[component][account]  # each request's candidate cluster, or -1
    by_group = np.argsort(row_group, kind="stable")  # the requests of each, still in time order
    bounds = np.searchsorted(row_group[by_group], np.arange(len(comps) + 1))
    members_of = np.argsort(of_comp[component], kind="stable")
    member_bounds = np.searchsorted(of_comp[component][members_of], np.arange(len(comps) + 1))
    context = _Context(table, shared, sync, tpl, network, network_names, minute, fields, infra_min)
    for g in range(len(comps)):
        members = members_of[member_bounds[g] : member_bounds[g + 1]]
        idx = by_group[bounds[g] : bounds[g + 1]]
        # each doubling of the accounts acting together adds half a capped feature, for the share of their traffic
        # that the linking evidence covers
        score = float(np.median(own[members]) + CLUSTER_WEIGHT * math.log2(len(members)) * linked[idx].mean())
        cid = len(clusters)
        cluster_of[members] = cid
        final[members] = np.maximum(final[members], score)
        clusters.append(_cluster(cid, names.take(pa.array(members)).to_pylist(), members, score, idx, context))
    results = []
    for i, name in enumerate(names.to_pylist()):
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
    phase("clusters")
    return Detection(results, clusters, n, time.perf_counter() - started, phases)


def account_features(con: duckdb.DuckDBPyConnection, accounts: int) -> dict[str, np.ndarray]:
    """Per-account feature columns, indexed by the `account` codes (0..accounts-1) of the registered `req`."""
    models = con.sql("SELECT model, min(ts) AS first FROM req GROUP BY model ORDER BY first DESC LIMIT 1").fetchall()
    newest = models[0] if models else None
    start = con.sql("SELECT min(ts) FROM req").fetchall()[0][0]
    release = newest[1] if newest and newest[1] > start + 3600 else None  # a model that appeared mid-log
    new_model = _sql(newest[0]) if newest else ""
    q = f"""
    WITH r AS (
        SELECT *, ts - lag(ts) OVER (PARTITION BY account ORDER BY ts) AS gap FROM req
    ), sources AS (
        SELECT source, count(DISTINCT account) AS accounts FROM req GROUP BY source
    ), by_source AS (
        SELECT r.account, max(s.accounts) AS sharing FROM (SELECT DISTINCT account, source FROM req) r
        JOIN sources s USING (source) GROUP BY r.account
    )
    SELECT account,
        log10(count(*)) AS volume,
        avg(shared::INT) AS shared_template,
        avg(sync::INT) AS sync,
        log10(count(DISTINCT source)) AS source_rotation,
        log10(any_value(b.sharing)) AS source_sharing,
        avg(coalesce(logprobs, false)::INT) AS logprobs,
        log10(1 + avg(completion_tokens)) AS long_answers,
        avg(cot::INT) AS cot,
        avg(coding::INT) AS coding,
        CASE WHEN count(gap) >= 3 THEN -stddev_pop(gap) / nullif(avg(gap), 0) END AS regularity,
        {
        f"CASE WHEN min(ts) < {release} AND min(ts) FILTER (model = '{new_model}') < {release} + 86400 "
        "THEN 1.0 ELSE 0.0 END"
        if release
        else "0.0"
    } AS fast_switch
    FROM r LEFT JOIN by_source b USING (account)
    GROUP BY account
    """
    df = con.sql(q).to_arrow_table()
    at = df.column("account").to_numpy()
    out = {}
    for f in FEATURES:
        column = np.full(accounts, np.nan)
        column[at] = df.column(f).to_numpy(zero_copy_only=False).astype(float)
        out[f] = column
    return out


def _matches(values: pa.Array, pattern: str, codes: np.ndarray) -> pa.Array:
    """Whether each request's prompt matches `pattern` (null where the log kept no text), tried once per distinct
    prompt: `values` holds the distinct prompts and `codes` each request's index into them."""
    hits = pc.match_substring_regex(values, pattern)
    return hits.take(pa.array(codes, mask=codes < 0))


def read_accounts(path: str | Path) -> pa.Table:
    """What the provider knows of each account, from JSONL, CSV or Parquet with an `account` column."""
    path = Path(path)
    readers: dict[str, Any] = {".jsonl": pa_json.read_json, ".csv": pa_csv.read_csv, ".parquet": pq.read_table}
    if path.suffix not in readers:
        raise StillhouseError(f"--accounts {path}: use a .jsonl, .csv or .parquet file with an 'account' column")
    if not path.is_file():
        raise StillhouseError(f"--accounts {path}: no such file")
    try:
        table = readers[path.suffix](path)
    except (pa.ArrowInvalid, OSError) as e:
        raise StillhouseError(f"--accounts {path} cannot be read: {str(e).splitlines()[0]}") from None
    if "account" not in table.column_names:
        raise StillhouseError(f"--accounts {path} has no 'account' column (it has {', '.join(table.column_names)})")
    return table


def _shared_fields(accounts: pa.Table | None, names: pa.Array, infra_min: int) -> dict[str, np.ndarray]:
    """For each account field, each account's value code where at least `infra_min` accounts share that value."""
    if accounts is None:
        return {}
    index = {name: i for i, name in enumerate(names.to_pylist())}
    rows = np.array([index.get(str(a), -1) for a in accounts.column("account").to_pylist()], np.int64)
    out = {}
    for name in accounts.column_names:
        if name == "account":
            continue
        codes, values = _encode(accounts.column(name).cast(pa.string()))
        holders = np.bincount(codes[codes >= 0], minlength=len(values))
        keep = (codes >= 0) & (rows >= 0)
        keep[keep] &= holders[codes[keep]] >= infra_min
        column = np.full(len(names), -1, np.int64)
        column[rows[keep]] = codes[keep]
        out[name] = column
    return out


def _sql(text: str) -> str:
    return text.replace("'", "''")


def _reasons(feats: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(len(next(iter(feats.values()))))]
    for f, (what, _) in FEATURES.items():
        for i in np.flatnonzero(z[f] >= 3):
            out[i].append(f"{f}: {what} = {feats[f][i]:.2f} (z {z[f][i]:.1f})")
    return out


@dataclass
class _Context:
    """What clusters' evidence is read from: the log and the per-request arrays the detector computed."""

    table: pa.Table
    shared: np.ndarray
    sync: np.ndarray
    tpl: np.ndarray
    network: np.ndarray
    network_names: pa.Array
    minute: np.ndarray
    fields: dict[str, np.ndarray]
    infra_min: int


def _cluster(cid: int, names: list[str], members: np.ndarray, score: float, idx: np.ndarray,
             ctx: _Context) -> ClusterResult:  # fmt: skip
    """A cluster's evidence, from its requests `idx` (in time order): its shared templates (as hashed signatures),
    networks, synchronised minutes and shared account fields."""
    shared, sync, tpl = ctx.shared[idx], ctx.sync[idx], ctx.tpl[idx]
    tpl_ids, counts = np.unique(tpl[shared], return_counts=True)
    signatures = []
    for t in tpl_ids[np.argsort(-counts, kind="stable")[:10]]:
        row = int(idx[np.argmax(tpl == t)])
        text = ctx.table.column("prompt")[row].as_py()
        blob = ctx.table.column("sketch")[row].as_py()
        sig = sketch.sketches([text])[0] if text is not None else sketch.from_bytes([blob])[0]
        signatures.append(hashlib.sha256(sig.astype("<u4").tobytes()).hexdigest())
    nets, net_counts = np.unique(ctx.network[idx][sync | shared], return_counts=True)  # networks of linked requests
    networks = [ctx.network_names[int(x)].as_py() for x in nets[np.argsort(-net_counts, kind="stable")[:10]]]
    ts = ctx.table.column("ts").take(pa.array(idx)).to_numpy()
    models = sorted(m for m in ctx.table.column("model").take(pa.array(idx)).unique().to_pylist() if m)
    sync_minutes = len(np.unique(ctx.minute[idx][sync]))
    reasons = [f"{len(names)} accounts linked by coordinated use of shared templates, source networks or accounts' "
               "infrastructure"]  # fmt: skip
    if sync_minutes:
        reasons.append(
            f"{sync.mean():.0%} of its {len(idx)} requests fall in {sync_minutes} minutes coordinated across accounts"
        )
    if len(tpl_ids):
        reasons.append(f"{len(tpl_ids)} templates shared across its accounts carry {shared.mean():.0%} of its requests")
    if networks:
        reasons.append(f"coordinated traffic from {len(nets)} /24 networks, most from {networks[0]}.0/24")
    for what, codes in ctx.fields.items():
        held = codes[members]
        values = len(np.unique(held[held >= 0]))
        if values:
            reasons.append(f"{int((held >= 0).sum())} of its accounts share {values} {what} value{'s' * (values > 1)}, "
                           f"each on at least {ctx.infra_min} accounts")  # fmt: skip
    return ClusterResult(cid, names, round(score, 3), reasons, len(idx), signatures, networks, float(ts.min()),
                         float(ts.max()), sync_minutes, models)  # fmt: skip
