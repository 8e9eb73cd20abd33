"""Limits of one job, in one place.

Why constants and not spec fields: they protect the cluster and the worker (memory, run time, storage) and must not
be raised by whoever writes a job. The schema bounds of the spec use them, so the CRD rejects an oversized job at
``kubectl apply`` time; data read at run time (a prompts file, an input image) is checked against them again.
"""

from __future__ import annotations

MAX_PROMPTS = 1000
"""Inline prompts per job (they live in the custom resource, which etcd caps at ~1.5 MB)."""
MAX_FILE_PROMPTS = 100_000
"""Prompts in one ``promptsFrom`` file: the batch size a sharded job is built for."""
MAX_PROMPT_CHARS = 4000
"""Characters in one prompt or negative prompt."""
MAX_IMAGES_PER_PROMPT = 16
MAX_BATCH_SIZE = 16
"""Outputs per pipeline call (``generation.batchSize``)."""
MAX_OUTPUTS = 2000
"""prompts x imagesPerPrompt with inline prompts."""
MAX_FILE_OUTPUTS = 200_000
"""prompts x imagesPerPrompt of a ``promptsFrom`` job."""
MAX_STEPS = 500
MAX_SIDE = 2048
"""Largest height or width of a generated image, in pixels."""
MIN_SIDE = 8
MAX_FRAMES = 128
MAX_INPUT_PIXELS = 4096 * 4096
"""Largest input image (init, mask, control, conditioning), width x height."""
MAX_UPSCALER_INPUT_PIXELS = 1024 * 1024
"""The x4 upscaler makes 16x as many pixels: its input is capped lower."""
MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest input file (image or prompts file) read from a URI."""
MAX_SEED = 2**63 - 1
MAX_REPLICAS = 256
"""Generation groups of one job (spec.parallelism.replicas)."""
