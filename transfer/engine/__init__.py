"""The training engine: free of any dataset's specifics."""
