"""Model configs shipped as data, so architectures can be built offline with random weights."""
