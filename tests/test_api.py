"""Conventions of the whole public API, checked by inspection rather than by example."""

import dataclasses
import importlib
import inspect

import scoreflow as sf

NAMESPACES = [
    "scoreflow",
    "scoreflow.analytic",
    "scoreflow.bijections",
    "scoreflow.data",
    "scoreflow.losses",
    "scoreflow.metrics",
    "scoreflow.models",
    "scoreflow.nn",
    "scoreflow.sde",
    "scoreflow.solve",
    "scoreflow.train",
]


def _public_callables():
    seen = set()
    for name in NAMESPACES:
        module = importlib.import_module(name)
        for attr in dir(module):
            obj = getattr(module, attr)
            if attr.startswith("_") or id(obj) in seen or not callable(obj):
                continue
            seen.add(id(obj))
            yield f"{name}.{attr}", obj
            if inspect.isclass(obj):
                for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
                    if not meth_name.startswith("_"):
                        yield f"{name}.{attr}.{meth_name}", meth


def test_keys_are_keyword_only_and_last():
    offenders = []
    for name, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if "key" not in params:
            continue
        named = [p for p in params.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if params["key"].kind is not inspect.Parameter.KEYWORD_ONLY or named[-1].name != "key":
            offenders.append(name)
    assert offenders == []


def test_result_records_share_their_fields_in_one_order():
    common = ("num_steps", "nfe", "stats", "result")
    records = [
        sf.solve.SampleResult,
        sf.solve.LangevinResult,
        sf.solve.LikelihoodResult,
        sf.solve.FlowSolution,
    ]
    for record in records:
        fields = [f.name for f in dataclasses.fields(record)]
        at = [fields.index(name) for name in common]
        assert at == list(range(at[0], at[0] + len(common))), (record.__name__, fields)
        # What follows the common block is optional (saved trajectories and extras).
        assert all(f.default is None for f in dataclasses.fields(record)[at[-1] + 1 :]), (
            record.__name__
        )
        if "trajectory" in fields:
            assert fields[-2:] == ["ts", "trajectory"], record.__name__


def test_no_parameterisation_argument_outside_the_prediction():
    # What a network predicts travels with it (`AbstractPrediction`); no sampler, loss or
    # likelihood takes a `parameterisation` argument that could disagree with it. Only
    # what builds a prediction names one (`mixture.noised(sde, "x0")`).
    takers = [
        name
        for name, obj in _public_callables()
        if not inspect.isclass(obj)
        and "parameterisation" in _parameters(obj)
        and not name.endswith(".noised")
    ]
    assert takers == []


def _parameters(obj):
    try:
        return inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return {}
