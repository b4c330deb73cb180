"""What the stack is, read by every entry point (serve, download, doctor, replicas, router, k8s,
ci_job, bench): each fact in one module, standard library only, importing nothing outside this
package.

  settings.py   the settings registry: every setting's name, default, parser and doc; `load()`
  profiles.py   the serving profiles and the checkpoint formats they serve
  layout.py     the GPU layout: TP, replicas, each replica's GPUs, the router's workers
  model.py      the model's shape and the bytes of its weights per format
  vllm_args.py  the vLLM argument list
  compose.py    the one Compose client (variables, config, secrets) and its error type
  proc.py       running a program: (exit status, stdout, stderr)
  manifest.py   the completeness record of a downloaded model
"""
