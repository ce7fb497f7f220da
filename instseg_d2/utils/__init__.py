"""Utilities that model code may use without depending on the platform's tools."""
