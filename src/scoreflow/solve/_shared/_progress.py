import diffrax as dfx


def progress_meter(progress: bool) -> dfx.AbstractProgressMeter:
    """The tqdm progress meter of diffrax (`progress=True`), or none.

    Off by default in every solve: the meter is a host callback on each step, which a
    solve inside `jax.vmap` or a training loop does not want.
    """
    if not isinstance(progress, bool):
        raise ValueError(f"`progress` must be True or False, got {progress!r}.")
    return dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter()
