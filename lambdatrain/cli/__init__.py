"""The console script: typer commands that parse options and delegate to ops, local and planning."""
