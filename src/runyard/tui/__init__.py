"""The runyard console: a Textual front end over the headless core (see app.run_console)."""
