"""Training from the web UI, the API and the CLI: the learning form of seed 000 section 3, its
live preview (artifact name, manifest, training_config_hash) and saved job definitions.

`form` holds `LearningForm`, `Preview` and `preview()`; `jobs` holds `JobDefinition` and the
functions that save and read definitions. `current_run()` is the helper API for training scripts
(`run_api`); `builtin` holds the built-in trainers and `quantize` post-training int8 quantization.
"""

from modelyard.training.run_api import current_run

__all__ = ["current_run"]
