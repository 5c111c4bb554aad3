"""Plumbing every part stands on: errors, record files, the hub cache, the machine's facts, bootstrap statistics."""
