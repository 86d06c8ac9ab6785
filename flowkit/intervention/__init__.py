"""Layer 4 of the library — a knockout as data and running a prompt under it: ``spec`` (a frozen,
JSON-serialisable knockout), ``edge_groups`` (every edge group by name), ``masks`` (a spec on one
prompt → per-layer block masks), ``attention`` (the only module that touches transformers' attention
registration) and ``session`` (one prompt's clean run, named activations, answers under knockouts)."""
