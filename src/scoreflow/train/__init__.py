"""The training loop: `fit`, explicit state, checkpoints, optimisers, multi-process runs."""

from .._serialise import CheckpointError as CheckpointError
from .._serialise import CheckpointMismatch as CheckpointMismatch
from ._checkpoint import checkpoint_info as checkpoint_info
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import save_checkpoint as save_checkpoint
from ._fit import FitResult as FitResult
from ._fit import TrainingDiverged as TrainingDiverged
from ._fit import fit as fit
from ._optim import SkipState as SkipState
from ._optim import alternating as alternating
from ._optim import default_optimizer as default_optimizer
from ._optim import skip_large_updates as skip_large_updates
from ._sharding import initialize_distributed as initialize_distributed
from ._sharding import is_main_process as is_main_process
from ._state import TrainState as TrainState
from ._state import init_state as init_state
