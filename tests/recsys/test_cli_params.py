"""The CLI's parameter types read grids, lists, maps and year ranges, and reject bad text in one
line naming the option, before any command runs (no run folder needed)."""

from __future__ import annotations

import pytest
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.cli.params import (
    FEATURE_MAP,
    FLOAT_LIST,
    INT_LIST,
    NAME_LIST,
    VALUE_GRID,
    YEAR_RANGE,
    OptionValueError,
    YearSpan,
)


def test_value_grids_read_ranges_and_lists():
    assert VALUE_GRID("-10:10:1") == tuple(float(v) for v in range(-10, 11))
    assert VALUE_GRID("-1:1") == (-1.0, 0.0, 1.0)
    assert VALUE_GRID("0,2,5") == (0.0, 2.0, 5.0)
    assert VALUE_GRID("0:1:0.25") == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert VALUE_GRID((1, 2)) == (1.0, 2.0)  # a typed default passes through
    for bad, message in (("0,nan", "must be finite"), ("1,inf", "must be finite"),
                         ("a:b", "cannot read"), (" ", "is empty"),
                         ("5:1:1", "start <= stop"), ("-10:10:0", "step > 0"),
                         ("1:2:3:4", "two or three numbers")):
        with pytest.raises(OptionValueError, match=message):
            VALUE_GRID(bad)


def test_lists_maps_and_year_ranges():
    assert FLOAT_LIST("0.1, 0.2") == (0.1, 0.2)
    assert INT_LIST("0,1,2") == (0, 1, 2)
    assert NAME_LIST(" Action , Sci-Fi,") == ("Action", "Sci-Fi")
    assert FEATURE_MAP("Sci-Fi=12, Action=3") == {"Sci-Fi": 12, "Action": 3}
    assert YEAR_RANGE("1980-1989") == YearSpan(1980, 1989)
    assert YEAR_RANGE(" 1995 ") == YearSpan(1995, 1995)
    for parser, bad, message in (
        (INT_LIST, "0,1.5", "takes comma-separated integers; '1.5' is not one"),
        (FLOAT_LIST, ",", "needs comma-separated numbers"),
        (NAME_LIST, " , ", "is empty"),
        (FEATURE_MAP, "Sci-Fi=x", "not an integer"),
        (FEATURE_MAP, "=3", "use GENRE=INDEX"),
        (YEAR_RANGE, "eighties", "expected FIRST-LAST"),
        (YEAR_RANGE, "1990-1980", "empty"),
    ):
        with pytest.raises(OptionValueError, match=message):
            parser(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["steer", "sweep", "RUN", "SAE", "--values", "0,nan"],
         "--values holds nan in '0,nan', but steering values must be finite"),
        (["steer", "sweep", "RUN", "SAE", "--features", "Horror=x"],
         "--features gives 'Horror' the feature index 'x'"),
        (["steer", "user", "RUN", "SAE", "--user", "1", "--genre", "Horror", "--values", "3:1"],
         "--values '3:1' needs start <= stop"),
        (["sae", "table1", "RUN", "--d-sae", "64,big"],
         "--d-sae takes comma-separated integers; 'big' is not one"),
        (["align", "examples", "RUN", "SAE", "1", "--years", "1990-1980"],
         "--years is not a year range"),
        (["reproduce", "--out", "OUT", "--genres", ","], "--genres is empty"),
        (["sae", "eval", "RUN", "SAE", "--k", "ten"], "Invalid value for '--k'"),
    ],
)
def test_bad_values_fail_in_one_line_before_the_command_runs(tmp_path, args, message):
    # the folders do not exist: the error must come from parsing, before anything is opened
    filled = [str(tmp_path / a) if a in {"RUN", "SAE", "OUT"} else a for a in args]
    assert_one_line_error(run_cli(*filled), message)
    assert not (tmp_path / "OUT").exists()


def test_option_settings_read_json_numbers_lists_and_text():
    from mechrec_recsys.cli.params import OPTION_SETTING, OptionValueError

    assert OPTION_SETTING("matryoshka_widths=256,1024") == ("matryoshka_widths", [256, 1024])
    assert OPTION_SETTING("rate=0.5") == ("rate", 0.5)
    assert OPTION_SETTING("flag=true") == ("flag", True)
    assert OPTION_SETTING("mode=fast") == ("mode", "fast")
    assert OPTION_SETTING("mixed=1,2.5") == ("mixed", [1, 2.5])
    with pytest.raises(OptionValueError, match="NAME=VALUE"):
        OPTION_SETTING("no-equals")
