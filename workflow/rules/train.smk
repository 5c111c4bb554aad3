# Training stage: one job per fine-tuning run (task × model × METHOD[-TAG]). Nodes, GPUs and memory
# per node, threads and wall time come from the config's per-size, per-method table, in the SLURM
# plugin's resources (tunebench.machinery.cluster.slurm_resources); full fine-tuning starts one process per GPU
# through accelerate. A multi-node job runs on the host without a container and starts one launcher per
# node through srun, each in the image (tunebench.machinery.cluster). A killed job resumes from
# results/train/.../{run}.resume/, which is not an output, so the clean-up of incomplete outputs leaves
# it for the re-run.


rule train:
    input:
        unpack(train_inputs),
    output:
        best="results/train/{task}/{model}/{run}/best.json",
        history="results/train/{task}/{model}/{run}/history.jsonl",
        summary="results/train/{task}/{model}/{run}/run.json",
        settings="results/train/{task}/{model}/{run}/config.json",
        checkpoint=directory("results/train/{task}/{model}/{run}/checkpoint"),
    log:
        "results/logs/train/{task}/{model}/{run}.log",
    benchmark:
        "results/benchmarks/train/{task}/{model}/{run}.tsv"
    container:
        train_container
    threads: job_resource("train", "threads", 1)
    resources:
        mem_mb=job_slurm("train", "mem_mb"),
        runtime=job_slurm("train", "runtime"),
        nodes=job_slurm("train", "nodes"),
        gres=job_slurm("train", "gres"),
        gpus=job_slurm("train", "gpus"),
        mpi=job_slurm("train", "mpi"),
        tasks_per_node=job_slurm("train", "tasks_per_node"),
        tasks=job_slurm("train", "tasks"),
        cpus_per_task=job_slurm("train", "cpus_per_task"),
    params:
        launcher=train_launcher,
        configfiles=CONFIGFILES,
        settings=train_settings_hash,
    shell:
        "{params.launcher} train --config {params.configfiles} --task {wildcards.task} --model {wildcards.model}"
        " --run {wildcards.run} --out-dir $(dirname {output.best}) --data-dir $(dirname {input.data[0]})"
        " > {log} 2>&1"
