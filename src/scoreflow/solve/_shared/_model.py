from ...sde import AbstractPrediction, AbstractSDE


def check_model(sde: AbstractSDE, model, name: str = "model") -> AbstractPrediction:
    """Check that `model` says what it predicts and was built for this kind of SDE.

    Raises:
        ValueError: if `model` is not a `scoreflow.sde.AbstractPrediction`, or its SDE
            is of another type than `sde`.
    """
    if not isinstance(model, AbstractPrediction):
        raise ValueError(
            f"`{name}` must say what it predicts: pass a scoreflow model (`ScoreSDE`, "
            "`DDPM`, `NCSN`), an exact oracle (`mixture.noised(sde)`), or a network "
            "wrapped as `scoreflow.Prediction(sde, network, parameterisation)`; got "
            f"{type(model).__name__}."
        )
    if type(model.sde) is not type(sde):
        raise ValueError(
            f"`{name}` predicts under a {type(model.sde).__name__}, but `sde` is a "
            f"{type(sde).__name__}: its outputs would be converted with another noise "
            "schedule than the one being solved."
        )
    return model
