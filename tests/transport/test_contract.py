"""Runs the transport contract (contract.py) against every transport kind."""

from contract import Contract, transport  # noqa: F401  (the parametrised fixture)


class TestContract(Contract):
    pass
