"""reprohunt: the pipeline around Orion (hunt, best trial, retrain, provenance, report, audit)."""
