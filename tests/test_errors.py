from edgeprune.errors import ConfigError, GateFailed, MissingDependency, UnknownName


def test_unknown_name_suggests_the_closest():
    error = UnknownName("target", "hots", ["host", "jetson-nano", "raspberry-pi-5"])
    assert error.suggestions == ["host"]
    assert "did you mean 'host'?" in error.message


def test_unknown_name_without_close_match_lists_known_names():
    assert "known: a, b" in UnknownName("thing", "zzzz", ["b", "a"]).message


def test_messages_are_one_line_with_expected_and_fix():
    error = ConfigError("bad\nvalue   here", expected="a number", fix="pass --n 3")
    assert error.message == "bad value here; expected a number; fix: pass --n 3"
    assert error.exit_code == 2


def test_missing_dependency_names_the_extra():
    assert 'pip install "edgeprune[openvino]"' in MissingDependency("openvino", extra="openvino").message


def test_gate_failure_exits_3_and_points_at_the_report():
    error = GateFailed("top1 dropped", report_path="out/verification.json")
    assert error.exit_code == 3 and "out/verification.json" in error.message
