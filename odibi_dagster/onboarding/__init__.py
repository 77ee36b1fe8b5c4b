"""Onboarding on Databricks and Azure: who am I, what to grant, do my connections work.

The public entry point is :mod:`odibi_dagster.setup_helpers`.
"""
