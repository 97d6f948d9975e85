"""What a person looks at: plots, the capture form, progress."""
