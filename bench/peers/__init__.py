"""Peer task queues, measured on this machine for Conveyor's benchmarks to compare against."""
