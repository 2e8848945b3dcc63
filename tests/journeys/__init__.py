"""User journeys: the sequences people run through the `ember` command and `apply_ember`, and
ember's objects in users' own training code. Each test gives the straightforward answer or a
clear refusal. Short cases run in the quick suite; training jobs and subprocesses are `-m slow`."""
