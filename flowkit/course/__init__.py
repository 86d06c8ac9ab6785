"""The course: what the chapters in ``notebooks/`` use beside the library.

- :mod:`flowkit.course.chapters` — the chapters' shared setup (the kit's model, questions, clips);
- :mod:`flowkit.course.exercises` — the exercises' check functions;
- :mod:`flowkit.course.solutions` — the single copy of the reference solutions;
- :mod:`flowkit.course.fidelity` — ``python -m flowkit fidelity``: the four findings measured on
  the kit's model, written to ``data/results``;
- :mod:`flowkit.course.results` — loading and re-checking those stored results.

The course may use the library and the kit's model; the library uses neither.
"""
