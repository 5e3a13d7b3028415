"""Endpoint URIs: the one string that names an endpoint everywhere; and how figures print."""

from __future__ import annotations

import pytest

from app.core.domain import EndpointUri, UriError, figure_text


def test_a_uri_names_itself_readably_and_round_trips():
    text = "onnx:assets/demo/wine-v1.onnx?provider=cpu&payload=assets/demo/production.csv&rate=50"
    uri = EndpointUri.parse(text)
    assert (uri.scheme, uri.target) == ("onnx", "assets/demo/wine-v1.onnx")
    assert uri.param("payload") == "assets/demo/production.csv"
    assert str(uri) == text
    assert EndpointUri.parse(str(uri)) == uri


def test_values_that_need_escaping_survive_the_round_trip():
    uri = EndpointUri.parse("onnx:m.onnx?payload=my%20rows%26more.csv")
    assert uri.param("payload") == "my rows&more.csv"
    assert EndpointUri.parse(str(uri)).param("payload") == "my rows&more.csv"


@pytest.mark.parametrize("text", ["", "nocolon", ":x", "a b:c"])
def test_malformed_uris_are_refused(text):
    with pytest.raises(UriError):
        EndpointUri.parse(text)


@pytest.mark.parametrize(("value", "text"), [
    (7.1234e-5, "0.0000712"),  # a per-row latency: four decimals said 0.0001
    (0.000123456, "0.000123"),
    (12.345, "12.3"),
    (1.0, "1"),
    (1234.5, "1234"),
])
def test_figure_text_keeps_three_significant_figures_without_an_exponent(value, text):
    assert figure_text(value) == text
