"""The shared training harness: data (harness.data); trainer and evaluation come with issue 5."""
