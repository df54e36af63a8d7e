"""The evaluation protocol: every model judged on the same data by the same numbers.

`evaluate_digits` scores any registered model (or baseline) on the digits test split;
`evaluate_2d` scores a model of a 2-d mixture against its exact density;
`digits_baselines` fits the classical baselines the tables put beside every family;
`digits_table` formats reports as the markdown table of `benchmarks/RESULTS.md`.
"""

from ._baselines import DequantisedSklearnDensity as DequantisedSklearnDensity
from ._baselines import UniformDensity as UniformDensity
from ._baselines import digits_baselines as digits_baselines
from ._digits import DigitsReport as DigitsReport
from ._digits import digits_table as digits_table
from ._digits import evaluate_digits as evaluate_digits
from ._digits import quantise as quantise
from ._digits import sample_grid as sample_grid
from ._toy import ToyReport as ToyReport
from ._toy import evaluate_2d as evaluate_2d
