"""Shim for editable installs; all metadata lives in setup.cfg."""
import setuptools

setuptools.setup()
