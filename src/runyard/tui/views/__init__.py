"""The console's views."""
