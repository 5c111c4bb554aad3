"""The training stage: one fine-tuning run from prepared data to a selected checkpoint.

``job``         resolve a run from the config and check it before any work
``batching``    tokenise with a prompt format, mask the loss, pad or pack rows
``methods``     full / LoRA / QLoRA: load, wrap, count, export the checkpoint
``loop``        the Accelerate loop: steps, validation perplexity, best epoch, early stop
``checkpoint``  resume state beside the run's outputs, written atomically
"""
