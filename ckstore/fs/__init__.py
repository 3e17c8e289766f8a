"""Durable file primitives shared by local storage and the directory transport: atomic writes, lock files."""
