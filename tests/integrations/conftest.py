"""Adapter tests: frameworks that run only on asyncio pin the backend per module."""
