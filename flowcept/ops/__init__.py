"""Operations helpers: security primitives for root-run SLURM epilogs and site tooling."""
