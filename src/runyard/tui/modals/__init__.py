"""The console's modals."""
