"""Training engines: the pretext (``pretrain``) and, built on it, the transfer experiments."""
