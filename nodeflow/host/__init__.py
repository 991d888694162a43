"""What the user's machine offers a run: configured model folders, the paths a workflow
may reach, resource limits, file stamps, and the typed run settings built from them."""
