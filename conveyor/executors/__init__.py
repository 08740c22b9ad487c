"""Executors: ``base`` (the contract and shared run logic), ``local``, ``celery``, ``hybrid``."""
