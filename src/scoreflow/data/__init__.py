"""Built-in datasets (2-d toys, 8×8 digits), user arrays, on-disk datasets and scalers."""

from ._arrays import Standardiser as Standardiser
from ._arrays import load_array as load_array
from ._digits import DIGITS_LEVELS as DIGITS_LEVELS
from ._digits import digits as digits
from ._digits import digits_labels as digits_labels
from ._digits import digits_raw as digits_raw
from ._digits import load_digits_raw as load_digits_raw
from ._disk import DiskDataset as DiskDataset
from ._disk import open_idx as open_idx
from ._disk import open_npy as open_npy
from ._disk import open_npz as open_npz
from ._toys import TOYS as TOYS
from ._toys import ring_mixture as ring_mixture
from ._toys import toy_sample as toy_sample
