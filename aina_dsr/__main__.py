"""``python -m aina_dsr``: the same as the ``aina-dsr`` command."""

from aina_dsr.cli import main

if __name__ == "__main__":
    main()
