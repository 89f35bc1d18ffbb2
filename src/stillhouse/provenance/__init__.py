"""Provenance: the hash-chained ledger every stage writes to, and the teachers' terms it checks."""
