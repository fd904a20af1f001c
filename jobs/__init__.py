"""The job layer: an accepted invocation is a catalogue row that runners lease, run and finish.

Nothing here knows HTTP or Serve; ``deployments/`` wires it to both.
"""
