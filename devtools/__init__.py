"""Developer tools outside the shipped jobs package: the synthetic clickstream generator and
the `make demo` / `make ui` launchers."""
