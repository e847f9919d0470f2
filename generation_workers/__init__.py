"""Celery tasks and services that turn a round into stored, playable candidate videos (uses ``model/``)."""
