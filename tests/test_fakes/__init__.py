"""The fakes' own tests: each fake answers as the system it stands in for, so tests against it mean something."""
