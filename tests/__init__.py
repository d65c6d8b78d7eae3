"""The engine's test suite (a package, so that tests/transcode and the like never shadow the project's own packages)."""
