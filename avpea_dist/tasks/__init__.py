"""Task plug-ins (issue 11): each task owns its reader, head, loss and metrics."""
