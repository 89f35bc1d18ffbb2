import sqlite3

from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.provenance.ledger import Ledger


def _ledger(tmp_path, n=4):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        for i in range(n):
            led.append(f"run-{i // 2}", "collect.start" if i % 2 == 0 else "collect.end", {"i": i, "ok": i * 10})
    return path


def test_intact_chain_verifies(tmp_path):
    path = _ledger(tmp_path)
    with Ledger(path) as led:
        assert led.verify() == []
        assert [r["run_id"] for r in led.runs()] == ["run-0", "run-1"]
    result = CliRunner().invoke(app, ["ledger", "verify", str(path)])
    assert result.exit_code == 0 and "4 entries" in result.output


def test_edited_entry_is_named(tmp_path):
    path = _ledger(tmp_path)
    db = sqlite3.connect(path)
    db.execute("""UPDATE entries SET body = '{"i":2,"ok":9999}' WHERE seq = 3""")
    db.commit()
    with Ledger(path) as led:
        problems = led.verify()
    assert [(p.seq, "edited" in p.what) for p in problems] == [(3, True)]
    result = CliRunner().invoke(app, ["ledger", "verify", str(path)])
    assert result.exit_code == 1 and "entry #3" in result.output


def test_deleted_and_reordered_entries_are_named(tmp_path):
    path = _ledger(tmp_path, n=5)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM entries WHERE seq = 2")
    db.commit()
    with Ledger(path) as led:
        assert [p.seq for p in led.verify()] == [3]
    path2 = _ledger(tmp_path / "b", n=4)
    db = sqlite3.connect(path2)
    # swap the bodies and hashes of entries 2 and 3, keeping seq numbers: a reorder
    rows = {r[0]: r[1:] for r in db.execute("SELECT seq, run_id, kind, at, body, prev_hash, hash FROM entries")}
    for seq, other in ((2, 3), (3, 2)):
        db.execute(
            "UPDATE entries SET run_id=?, kind=?, at=?, body=?, prev_hash=?, hash=? WHERE seq=?", (*rows[other], seq)
        )
    db.commit()
    with Ledger(path2) as led:
        assert {p.seq for p in led.verify()} >= {2, 3}


def test_export_is_json_ready(tmp_path):
    path = _ledger(tmp_path)
    result = CliRunner().invoke(app, ["ledger", "export", str(path)])
    assert result.exit_code == 0 and '"intact": true' in result.output


def test_signed_chain_verifies_and_a_rewritten_one_does_not(tmp_path, monkeypatch):
    from stillhouse.provenance.ledger import entry_hash, keygen

    key = tmp_path / "keys" / "ledger.key"
    key.parent.mkdir()
    public = keygen(key)
    monkeypatch.setenv("STILLHOUSE_LEDGER_KEY", str(key))
    path = _ledger(tmp_path)
    with Ledger(path, readonly=True) as led:
        assert led.verify(public_key=public.read_bytes()) == []
    # a forger rewrites entry 2 and recomputes every hash after it: the bare chain is intact again...
    db = sqlite3.connect(path)
    rows = db.execute("SELECT seq, run_id, kind, at, body FROM entries ORDER BY seq").fetchall()
    prev = "0" * 64
    for seq, run_id, kind, at, body in rows:
        body = body.replace('"i":1', '"i":100') if seq == 2 else body
        h = entry_hash(seq, run_id, kind, at, body, prev)
        db.execute("UPDATE entries SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?", (body, prev, h, seq))
        prev = h
    db.commit()
    with Ledger(path, readonly=True) as led:
        assert led.verify() == []
        forged = led.verify(public_key=public.read_bytes())
    # ...but its signatures no longer match: every rewritten entry is named
    assert [p.seq for p in forged] == [2, 3, 4] and all("signature" in p.what for p in forged)
    result = CliRunner().invoke(app, ["ledger", "verify", str(path), "--public-key", str(public)])
    assert result.exit_code == 1 and "entry #2" in result.output
    assert CliRunner().invoke(app, ["ledger", "keygen", "-o", str(key)]).exit_code != 0  # never overwrites


def test_reading_a_ledger_never_writes_it(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for args in (["verify", str(empty)], ["show", str(empty)], ["export", str(empty)]):
        result = CliRunner().invoke(app, ["ledger", *args])
        assert result.exit_code != 0 and "empty" in str(result.exception or result.output)
    assert empty.read_bytes() == b""
