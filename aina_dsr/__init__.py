"""Composition root: settings and the ``aina-dsr`` command."""
