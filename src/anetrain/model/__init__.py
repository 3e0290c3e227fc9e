"""The model: config, parameter layout, NumPy reference forward/backward, generation, file I/O.

See docs/model.md. Submodules: ``config``, ``params``, ``reference``, ``generate``,
``llama2c`` (llama2.c files), ``original`` (maderix BLZT checkpoints).
"""

from anetrain.model.config import (
    PRESETS,
    ConfigError,
    ConfigKeyError,
    ConfigTypeError,
    ConfigValueError,
    ModelConfig,
    load_config,
    preset,
)
from anetrain.model.params import NO_DECAY, LayerParams, Params, init_params, param_shapes

__all__ = [
    "NO_DECAY",
    "PRESETS",
    "ConfigError",
    "ConfigKeyError",
    "ConfigTypeError",
    "ConfigValueError",
    "LayerParams",
    "ModelConfig",
    "Params",
    "init_params",
    "load_config",
    "param_shapes",
    "preset",
]
