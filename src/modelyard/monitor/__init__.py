"""Monitoring: the inference log, and (with the domain core) profiles, drift, quality and alerts."""
