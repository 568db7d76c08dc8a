"""One module per probe family (registered in `truthprobe.probe_registry`)."""
