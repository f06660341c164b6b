"""Each command's options, one module per command: the dataclass every flag and recipe key of that
command comes from (``ssl_inpaint.config.option`` declares each one), kept apart from the engine that
runs the command so the CLI, ``ssl compare`` and the tests read the options without the training code."""
