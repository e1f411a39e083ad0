"""The repository's tracked outputs: publishing results, rendering the report tables, finding the checkout."""
