"""Issue 16: `eval --limit 0` silently meant "all"; `tunesmith --help` advertised `serve` before it
was built: every stage the help names must be a subcommand that runs."""

import pytest

from tunesmith.cli import build_parser, main


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_eval_limit_zero_is_refused(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "m", "--limit", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "would score nothing" in err and "omit --limit" in err


def test_eval_limit_positive_is_an_override():
    from tunesmith.cli import _eval_overrides

    args = build_parser().parse_args(["eval", "--model", "m", "--limit", "5"])
    assert args.limit == 5 and "eval.limit=5" in _eval_overrides(args)


def test_help_describes_only_built_stages(capsys):
    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - the registered subcommands
    named = parser.description.split(":", 1)[1].strip(" .").split(" -> ")
    assert {n for n in named if n not in ("data", "evaluate")} <= set(stages) and "eval" in stages
    for stage in stages:  # each one is wired: its own --help answers
        with pytest.raises(SystemExit) as e:
            main([stage, "--help"])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: tunesmith {stage}")
