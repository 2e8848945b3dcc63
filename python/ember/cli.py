"""The ``ember`` command."""

import argparse
import sys


def _info(args) -> int:
    import ember

    info = {**ember.build_info(), "cuda_available": ember.cuda_available()}
    width = max(map(len, info))
    print("ember build")
    for key, value in info.items():
        print(f"  {key:<{width}}  {value if value not in ('', None) else '-'}")
    print("ops (torch.ops.ember.*: kernels registered)")
    for name, keys in ember.ops_available().items():
        print(f"  {name.removeprefix('ember::'):<24} {', '.join(keys)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ember", description="ember: cheaper LLM pre-training on Hopper GPUs")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print how ember was built and the ops it provides").set_defaults(fn=_info)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
