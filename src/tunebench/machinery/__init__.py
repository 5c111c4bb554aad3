"""Around the stages: job fit and sizes, the SLURM launch, the workflow lock and the measuring harness."""
