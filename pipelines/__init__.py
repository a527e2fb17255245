"""stylerec jobs: thin orchestration, I/O and tracking around data/, style/ and recsys/."""
