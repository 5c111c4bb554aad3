"""The training stage: one fine-tuning run from prepared data to a selected checkpoint.

``job``         resolve a run from the config and check it before any work
``batching``    tokenise with a prompt format, mask the loss, pad or pack rows
``methods/``    one module per method (full, LoRA, QLoRA, DoRA): what results and the config know of it
``wrap``        load the model, wrap it as its method says, count, export the checkpoint
``backend``     Accelerate and DeepSpeed: their files, auto keys, offload, ZeRO-3 settings
``loop``        the Accelerate loop: steps, validation perplexity, best epoch, early stop
``checkpoint``  resume state beside the run's outputs, written atomically
"""
