"""Prefect flows that orchestrate the DVC pipeline. They hold no ML logic: they call the stages."""
