"""The ``edgefleet`` operator command line: one sub-command module per area, registered in ``main``."""
