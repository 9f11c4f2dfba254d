"""Probe tasks shipped with hrsa: JSONL files (text, label) plus manifest.json."""
