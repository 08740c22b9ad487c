"""Tests of the speech workload (seed 002)."""
