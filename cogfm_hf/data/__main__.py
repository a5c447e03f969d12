"""python -m cogfm_hf.data build RECIPE.yaml [--output_dir DIR] [--workers N] [--overwrite] [--keep-work]"""

import argparse
import dataclasses

from ..config import RecipeError
from ..console import exit_with
from .recipe import load_recipe


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cogfm_hf.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="run a data recipe end to end")
    build_parser.add_argument("recipe", help="a data recipe YAML, or a training recipe with a `data:` section")
    build_parser.add_argument("--output_dir", help="override the recipe's output_dir")
    build_parser.add_argument("--workers", type=int, help="override the recipe's workers")
    build_parser.add_argument("--overwrite", action="store_true", help="replace an output built from another recipe")
    build_parser.add_argument("--keep-work", action="store_true", help="keep intermediate files (curated, removed...)")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        given = {"output_dir": args.output_dir, "workers": args.workers}
        recipe = dataclasses.replace(recipe, **{k: v for k, v in given.items() if v is not None})  # re-validated
    except RecipeError as error:
        exit_with("recipe error", error)
    from .pipeline import build

    try:
        build(recipe, overwrite=args.overwrite, keep_work=args.keep_work)
    except RecipeError as error:  # an output built from another recipe, sources that gave nothing to train on
        exit_with("data error", error)


if __name__ == "__main__":
    main()
