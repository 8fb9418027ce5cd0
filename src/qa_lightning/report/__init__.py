"""Run reports: per-question records, breakdowns, error tables, figures, run comparison and sweep
pages, as self-contained HTML (images inline, no network)."""
