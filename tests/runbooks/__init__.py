"""Runbooks run against a real stack: every command of every file in ``runbooks/``."""
