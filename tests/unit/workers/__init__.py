"""Unit tests of the chat worker (workers/), without a database."""
