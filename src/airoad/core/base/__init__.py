"""The floor every command stands on: errors, file IO, typed options, the shared run keys, output paths and locks, command dispatch. No torch."""
