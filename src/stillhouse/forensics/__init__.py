"""Forensics (the detect half): watermarking what we serve, radioactivity, identity and lineage tests."""
