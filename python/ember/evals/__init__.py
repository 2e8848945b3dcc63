"""Downstream evaluation of ember models through lm-evaluation-harness (the `eval` extra):
`tasks` checks and runs task names, `model` is the lm-eval model `ember`, `run` evaluates a
checkpoint (`ember eval --tasks`) or the model in training (--eval.tasks). Nothing here imports
lm_eval until used."""
