"""The harness: verified loading, `check` (is it right?), `benchmark` (is it fast?), `inspect`."""
