"""How the kit's small VideoLLM is made (reproducible, on a CPU). See :mod:`flowkit.smol_video.training.trainer`."""
