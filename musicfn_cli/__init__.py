"""The ``musicfn`` command line: on top of every other package, imported by none of them."""
