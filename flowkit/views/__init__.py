"""Layer 7 of the library — what a person sees: ``plots`` (Altair charts), ``view_models`` (what the
widgets show, computed and tested in Python) and ``thumbnails`` (frame pictures)."""
