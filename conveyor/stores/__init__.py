"""Task stores: ``base`` (the contract), ``memory``, ``sql`` and ``redis``."""
