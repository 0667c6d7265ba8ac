"""The request service's use-cases that grew out of workflows/service.py, one idea a module."""
