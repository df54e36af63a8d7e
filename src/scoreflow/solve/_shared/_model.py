from ...sde import AbstractNoisyClassifier, AbstractPrediction, AbstractSDE


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


def check_classifier(
    sde: AbstractSDE, classifier, name: str = "classifier"
) -> AbstractNoisyClassifier:
    """Check that `classifier` classifies noisy data of this kind of SDE.

    Raises:
        ValueError: if `classifier` is not a `scoreflow.sde.AbstractNoisyClassifier`, or
            was built for another type of SDE than `sde`.
    """
    if not isinstance(classifier, AbstractNoisyClassifier):
        raise ValueError(
            f"`{name}` must be a `scoreflow.sde.AbstractNoisyClassifier` (e.g. "
            f"`scoreflow.models.NoisyClassifier`), got {type(classifier).__name__}."
        )
    if type(classifier.sde) is not type(sde):
        raise ValueError(
            f"`{name}` classifies noisy data of a {type(classifier.sde).__name__}, but "
            f"the model's SDE is a {type(sde).__name__}."
        )
    return classifier
