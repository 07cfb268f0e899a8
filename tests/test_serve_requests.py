"""Requests to translate serve: random bodies never get past the checks as anything but a 4xx,
and the work one request may ask for is bounded, with a 413 naming the flag that raises it."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.test_serve import call, running
from translate.config import DecodeConfig
from translate.decoding import DecodeOptions, Sampling
from translate.serve.options import ServeOptions
from translate.serve.requests import ApiError, check_work, parse_request, read_json

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
NUMBERS = st.integers(min_value=-3, max_value=80) | st.floats(allow_nan=True, allow_infinity=True)
WORDS = st.lists(
    st.sampled_from(["hund", "katze", "baum", "", "  ", "\u00e4\u00df", "\ud800", "x" * 40]),
    max_size=9,
)
# bodies that get past the first checks and reach the options' own: the known fields, with
# values of the right kind or not
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "text": WORDS | JSON,
        "beam": NUMBERS | JSON,
        "length_penalty": NUMBERS | JSON,
        "n_best": NUMBERS | JSON,
        "return_attention": st.booleans() | JSON,
        "sample": st.fixed_dictionaries(
            {}, optional={"temperature": NUMBERS, "top_k": NUMBERS | JSON, "seed": NUMBERS}
        )
        | JSON,
    },
)


def body_of(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", errors="surrogatepass")


def parsed_or_refused(body: bytes) -> None:
    """read_json and parse_request give sentences and options, or an ApiError of a 4xx
    status; nothing else escapes."""
    try:
        lines, options, single = parse_request(read_json(body), DecodeOptions(), max_sentences=8)
    except ApiError as err:
        assert 400 <= err.status < 500 and str(err)
        return
    assert isinstance(options, DecodeOptions) and 1 <= len(lines) <= 8
    assert all(isinstance(line, str) for line in lines)
    assert options.beam <= 64 and options.n_best <= 64
    assert single == isinstance(read_json(body)["text"], str)  # a string: one answer


# values whose text holds braces: an error message that quotes them must not take them for
# a template's fields (they once made the message itself fail, a 500)
BRACES = [
    {"text": ["hund"], "beam": {}},
    {"text": ["hund"], "return_attention": {"a": "{0}"}},
    {"text": ["hund"], "sample": {"seed": "{name}"}},
    {"text": "{}"},
]


@settings(max_examples=300, deadline=None)
@given(REQUESTS)
@example(BRACES[0])
@example(BRACES[1])
@example(BRACES[2])
@example(BRACES[3])
def test_random_requests_are_parsed_or_refused_with_a_4xx(value):
    parsed_or_refused(body_of(value))


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_random_json_is_parsed_or_refused_with_a_4xx(value):
    parsed_or_refused(body_of(value))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_parsed_or_refused_with_a_4xx(body):
    parsed_or_refused(body)


@pytest.fixture(scope="module")
def small_limits_server(attention_dir):
    """The attention model with small request limits, so that random requests reach them."""
    limits = dict(max_request_work=300, max_attention_cells=5000, max_sentences=8)
    with running(attention_dir, batch_wait_ms=0, **limits) as served:
        yield served


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(REQUESTS)
@example(BRACES[0])
@example(BRACES[1])
@example(BRACES[2])
def test_random_requests_never_get_a_5xx(small_limits_server, request_body):
    """Through the whole server, model and search included: an answer per sentence, or a
    4xx; never a 5xx."""
    status, answer = call(small_limits_server.port, "POST", "/translate", body_of(request_body))
    assert status == 200 or 400 <= status < 500, (status, answer)
    if status == 200 and isinstance(request_body["text"], str):
        assert answer["translation"]["text"] is not None
    elif status == 200:
        assert len(answer["translations"]) == len(request_body["text"])
    else:
        assert answer["error"]


DECODE = DecodeConfig(max_len_a=1.5, max_len_b=10)


def test_work_is_beam_times_source_subwords():
    tokens = [3, 5]  # source subwords + EOS of two lines
    options = DecodeOptions(beam=4)
    check_work(tokens, options, DECODE, ServeOptions(max_request_work=32))  # 4 x 8: fits
    with pytest.raises(ApiError) as refused:
        check_work(tokens, options, DECODE, ServeOptions(max_request_work=31))
    assert refused.value.status == 413
    assert str(refused.value).startswith(
        "the request asks for 32 units of work (beam, or samples, x (source subwords + 1), "
        "over its sentences): more than --max-request-work (31)"
    )


def test_sampled_work_counts_the_samples():
    options = DecodeOptions(n_best=7, sampling=Sampling())  # beam 5 unused: 7 rows each
    check_work([3, 5], options, DECODE, ServeOptions(max_request_work=56))
    with pytest.raises(ApiError, match=r"asks for 56 units .* --max-request-work \(55\)"):
        check_work([3, 5], options, DECODE, ServeOptions(max_request_work=55))


def test_attention_cells_are_n_best_times_target_times_source_length():
    # each line: n_best 2 x int(1.5 x tokens + 10) x tokens: 2*14*3 + 2*17*5 = 254
    options = DecodeOptions(beam=2, n_best=2, attention=True)
    check_work([3, 5], options, DECODE, ServeOptions(max_attention_cells=254))
    with pytest.raises(ApiError) as refused:
        check_work([3, 5], options, DECODE, ServeOptions(max_attention_cells=253))
    assert refused.value.status == 413
    assert "ask back 254 attention weights" in str(refused.value)
    assert "more than --max-attention-cells (253)" in str(refused.value)
    # the same request without attention asks for none
    no_attention = DecodeOptions(beam=2, n_best=2)
    check_work([3, 5], no_attention, DECODE, ServeOptions(max_attention_cells=1))


def test_a_request_of_hours_of_work_is_refused_at_once(attention_server_default):
    """The request that once took 93 s and 2.4 GB (one sentence repeated 30 times, beam 64,
    n-best 64, attention) and its lighter variants, against the default limits."""
    port, translator = attention_server_default.port, attention_server_default.translator
    sentence = " ".join(["hund katze baum auto buch"] * 30)
    (ids,) = translator.src_vocab.encode([sentence])
    tokens = min(len(ids), translator.max_source_len) + 1
    heavy = {"text": [sentence], "beam": 64, "n_best": 64, "return_attention": True}
    status, answer = call(port, "POST", "/translate", heavy)
    decode = translator.cfg.decode
    cells = 64 * int(decode.max_len_a * tokens + decode.max_len_b) * tokens
    assert status == 413 and f"ask back {cells} attention weights" in answer["error"]
    assert "more than --max-attention-cells (1000000)" in answer["error"]
    many = {"text": [sentence] * 12, "beam": 64}  # 12 x 64 x tokens: more than 100000
    status, answer = call(port, "POST", "/translate", many)
    assert status == 413 and f"asks for {12 * 64 * tokens} units" in answer["error"]
    assert "--max-request-work (100000)" in answer["error"]
    fits = {"text": [sentence], "beam": 64}  # 64 x tokens: within the default limit
    status, answer = call(port, "POST", "/translate", fits)
    assert status == 200
    assert [t["text"] for t in answer["translations"]] == translator.translate([sentence], 64)


@pytest.fixture(scope="module")
def attention_server_default(attention_dir):
    with running(attention_dir) as served:
        yield served
