from ropewatch_validator.cli.main import build_parser, main


def test_help_lists_subcommands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "COMMAND" in text


def test_unknown_subcommand_exits_2():
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
