"""`python -m ember.evals ARGS`: lm-evaluation-harness's own command line (`lm_eval ARGS`) with
the model `ember` registered, e.g. `python -m ember.evals --model ember --model_args run=RUN
--tasks NAMES`. (lm-eval 0.4.13 finds models only in its own table or among those imported.)"""

from . import model  # noqa: F401  registers `ember`


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
