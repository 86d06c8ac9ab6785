"""Layer 2 of the library — a prompt and its answer: where each token group sits (``spans``) and the
answer distribution read off the last position's logits (``readout``). Imports only the data layer
and the foundation modules (``errors``, ``locations``, ``atomic_files``, ``formatting``, ``palette``)."""
