"""translate serve speaks the APIs clients already speak: LibreTranslate's, checked with the
real libretranslatepy client against a running `translate serve`, and OpenNMT-py's REST
server's, with the request of its documentation and the fields and types its server answers.
Both go through the batching, limits and shutdown of our own API; and the access log."""

from __future__ import annotations

import http.client
import json
import queue
import signal
import subprocess
import sys
import threading
from urllib.error import HTTPError
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libretranslatepy import LibreTranslateAPI

from tests.test_serve import (
    ACCESS_LINE,
    call,
    hold_decoding,
    running,
    wait_for_decoding,
    wait_for_health,
)
from tests.test_serve_requests import JSON, NUMBERS, WORDS
from translate.decoding import DecodeOptions
from translate.serve.compat import (
    form_fields,
    libretranslate_answer,
    parse_libretranslate,
    parse_opennmt,
)
from translate.serve.requests import ApiError
from translate.translator import Candidate, Translation, Translator

HAS = "this server translates de (German) to en (English) only"
LANGUAGES = [
    {"code": "de", "name": "German", "targets": ["en"]},
    {"code": "en", "name": "English", "targets": []},
]


def post(port: int, path: str, body: bytes, content_type: str | None = None):
    """POST ``body`` with ``content_type``; the status and the JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def post_json(port: int, path: str, value):
    return post(port, path, json.dumps(value).encode(), "application/json")


@pytest.fixture(scope="module")
def server(attention_dir):
    with running(attention_dir, batch_wait_ms=50, max_sentences=8, max_bytes=4000) as served:
        yield served


@pytest.fixture(scope="module")
def reference(attention_dir) -> Translator:
    return Translator.from_dir(attention_dir)


# --- LibreTranslate -----------------------------------------------------------------------------


def test_libretranslatepy_against_translate_serve(attention_dir, reference):
    """The libretranslatepy client and `translate serve` (a process, as users start it):
    translations, languages and an error as the client sees them; the access log on stderr."""
    command = [sys.executable, "-m", "translate", "serve", "-m", str(attention_dir), "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()  # its stderr, read aside so that no read can hang
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stderr])
    reader.start()
    try:
        started = lines.get(timeout=300)  # a bound for a loaded machine, not a timing
        port = int(started.split("127.0.0.1:")[1].split()[0])
        client = LibreTranslateAPI(f"http://127.0.0.1:{port}")
        wanted = reference.translate(["hund katze", "baum"])
        assert client.translate("hund katze", "de", "en") == wanted[0] == "dog cat"
        assert client.translate("hund katze\nbaum", "auto", "en") == "dog cat\ntree"  # lines
        keyed = LibreTranslateAPI(f"http://127.0.0.1:{port}/", api_key="anything")
        assert keyed.translate("baum", "de", "en") == wanted[1]  # the key is ignored
        assert client.languages() == LANGUAGES
        with pytest.raises(HTTPError) as refused:
            client.translate("hund", "de", "fr")
        assert refused.value.code == 400
        error = f"fr is not supported as a target language: {HAS}"
        assert json.loads(refused.value.read()) == {"error": error}
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        reader.join(timeout=30)
    finally:
        server.kill()
        server.wait(timeout=30)
        reader.join(timeout=30)
    said = [lines.get() for _ in range(lines.qsize())]
    logged = [line.rsplit(" ", 2)[0] for line in said if ACCESS_LINE.fullmatch(line)]
    assert logged == [
        "translate: POST /translate 200 1 sentence",
        "translate: POST /translate 200 2 sentences",
        "translate: POST /translate 200 1 sentence",
        "translate: GET /languages 200 0 sentences",
        "translate: POST /translate 400 0 sentences",
    ]


def test_lists_alternatives_and_auto(server, reference):
    """q as a list (a text of several lines translated line by line, blank lines kept),
    alternatives from the n-best, source auto taken as the model's source language."""
    request = {"q": ["hund katze", "baum\n\nauto"], "source": "auto", "target": "en"}
    request |= {"format": "text", "alternatives": 2}
    status, answer = post_json(server.port, "/translate", request)
    assert status == 200
    options = reference.defaults.override(n_best=3)  # the default beam (5) holds them
    first, *lines = reference.translate_batch(["hund katze", "baum", "", "auto"], options)
    others = list(dict.fromkeys(c.text for c in first.candidates[1:] if c.text != first.text))
    assert len(others) == 2
    assert answer == {
        "translatedText": [first.text, "\n".join(t.text for t in lines)],
        "detectedLanguage": [{"confidence": 0.0, "language": "de"}] * 2,
        "alternatives": [others, []],  # a text of several lines has none
    }
    status, one = post_json(server.port, "/translate", request | {"q": "hund katze"})
    assert one == {
        "translatedText": first.text,
        "detectedLanguage": {"confidence": 0.0, "language": "de"},
        "alternatives": others,
    }
    wide = request | {"q": "hund katze", "source": "de", "alternatives": 7}  # beam 8 > 5
    status, answer = post_json(server.port, "/translate", wide)
    options = reference.defaults.override(beam=8, n_best=8)
    (eight,) = reference.translate_batch(["hund katze"], options)
    others = [c.text for c in eight.candidates[1:]]
    assert answer["alternatives"] == list(dict.fromkeys(o for o in others if o != eight.text))
    assert len(answer["alternatives"]) > 2


def test_alternatives_are_unique_and_not_the_translation():
    """As LibreTranslate's: candidates that repeat the translation, or an earlier alternative,
    are left out (two subword sequences may read the same)."""
    fields = {"q": "x", "source": "de", "target": "en", "alternatives": 3}
    asked = parse_libretranslate(fields, ("de", "en"), DecodeOptions(), max_sentences=8)
    texts = ["a", "a", "b", "b"]
    line = Translation([Candidate(text, -float(i)) for i, text in enumerate(texts)])
    assert libretranslate_answer(asked, [line], "de") == {
        "translatedText": "a",
        "alternatives": ["b"],
    }


BOUNDARY = "----translate-test"
MULTIPART = (
    "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in (("q", "hund katze\r\nbaum"), ("source", "de"), ("target", "en"))
    ).encode()
    + f"--{BOUNDARY}--\r\n".encode()
)
FORMS = {
    "urlencoded": ("", urlencode({"q": "hund katze\nbaum", "source": "de", "target": "en"})),
    "multipart": ("", MULTIPART.decode()),
    "query string": ("?" + urlencode({"q": "hund katze\nbaum", "source": "de"}), "target=en"),
}


@pytest.mark.parametrize("form", FORMS, ids=list(FORMS))
def test_forms_are_read_as_libretranslate_reads_them(server, form):
    query, body = FORMS[form]
    kind = f"multipart/form-data; boundary={BOUNDARY}" if form == "multipart" else None
    kind = kind or "application/x-www-form-urlencoded"
    status, answer = post(server.port, "/translate" + query, body.encode(), kind)
    assert (status, answer) == (200, {"translatedText": "dog cat\ntree"})


def lt(**fields) -> bytes:
    return json.dumps({"q": "hund", "source": "de", "target": "en"} | fields).encode()


FORM = "application/x-www-form-urlencoded"
REFUSED = [
    (lt(source="fr"), None, 400, f"fr is not supported as a source language: {HAS}"),
    (lt(target="fr"), None, 400, f"fr is not supported as a target language: {HAS}"),
    (b'{"q": "hund", "target": "en"}', None, 400, "Invalid request: missing source parameter"),
    (lt(source=3), None, 400, "'source' must be a language code such as 'de'"),
    (lt(format="html"), None, 400, "'html' format is not supported: this server translates"),
    (lt(format="xml"), None, 400, "'xml' format is not supported"),
    (lt(colour=1), None, 400, "unknown LibreTranslate field(s) 'colour'; known: q, source"),
    (lt(alternatives=-1), None, 400, "'alternatives' must be an integer from 0 to 63, got -1"),
    (lt(alternatives=64), None, 400, "'alternatives' must be an integer from 0 to 63, got 64"),
    (lt(alternatives=True), None, 400, "'alternatives' must be an integer"),
    (lt(q=[]), None, 400, "'q' is an empty list"),
    (lt(q=3), None, 400, "'q' must be a string or a list of strings, got int"),
    (lt(q=["a", None]), None, 400, "'q'[1] must be a string, got NoneType"),
    (lt(q="\n".join(["hund"] * 9)), None, 413, "9 lines: more than --max-sentences (8)"),
    (lt(q=["hund", "hund " * 300]), None, 400, "line 1 of q[1] is 300 subwords long: more than"),
    (b"q=hund&q=katze&source=de&target=en", FORM, 400, "'q' is given more than once"),
    (b"q=%ff&source=de&target=en", FORM, 400, "the form is not valid UTF-8 form data"),
    (b"source=de&target=en", FORM, 400, "Invalid request: missing q parameter"),
    (b"q=hund&source=de&target=en&alternatives=x", FORM, 400, "'alternatives' must be"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, "not valid UTF-8 form data"),
]


@pytest.mark.parametrize("body, kind, status, message", REFUSED, ids=[m for *_, m in REFUSED])
def test_bad_libretranslate_requests_get_its_error_shape(server, body, kind, status, message):
    answer = post(server.port, "/translate", body, kind)
    assert answer[0] == status and list(answer[1]) == ["error"], answer
    assert message in answer[1]["error"], answer
    assert post(server.port, "/translate", lt())[1] == {"translatedText": "dog"}  # serving on


def test_work_limit_holds_for_libretranslate(attention_dir):
    """Alternatives widen the beam: a request's work counts it, as a beam of our API does."""
    with running(attention_dir, max_request_work=60, batch_wait_ms=0) as served:
        # "hund katze" is 2 subwords + EOS: 3 x beam 5 fits, 3 x beam 21 does not
        assert post(served.port, "/translate", lt(q="hund katze"))[0] == 200
        status, answer = post(served.port, "/translate", lt(q="hund katze", alternatives=20))
        assert status == 413 and "asks for 63 units of work" in answer["error"]


# --- OpenNMT-py ---------------------------------------------------------------------------------

DOCUMENTED = [{"src": "this is a test for model 0", "id": 0}]  # OpenNMT-py's FAQ, as it is
TUTORIAL = [{"src": "hund katze baum", "id": 100}]  # its REST server tutorial's model id


@pytest.mark.parametrize("request_body", [DOCUMENTED, TUTORIAL], ids=["faq", "tutorial"])
def test_opennmt_documented_request_gets_its_fields_and_types(server, reference, request_body):
    status, answer = post_json(server.port, "/translator/translate", request_body)
    assert status == 200
    (ranks,) = answer  # one list per n-best rank; n_best is 1
    (entry,) = ranks
    assert list(entry) == ["src", "tgt", "n_best", "pred_score"]
    assert [type(entry[key]) for key in entry] == [str, str, int, float]
    (wanted,) = reference.translate_batch([request_body[0]["src"]])
    assert entry == {
        "src": request_body[0]["src"],
        "tgt": wanted.text,
        "n_best": 1,
        "pred_score": wanted.candidates[0].score,
    }


def test_opennmt_items_are_answered_in_order(server, reference):
    sources = ["hund katze", "", "baum auto buch"]
    status, answer = post_json(server.port, "/translator/translate", [{"src": s} for s in sources])
    assert status == 200
    wanted = reference.translate_batch(sources)
    assert answer == [
        [
            {"src": s, "tgt": t.text, "n_best": 1, "pred_score": t.candidates[0].score}
            for s, t in zip(sources, wanted)
        ]
    ]
    assert answer[0][1]["tgt"] == "" and answer[0][1]["pred_score"] == 0.0  # blank stays blank


def test_opennmt_models_and_health(server, attention_dir, reference):
    status, models = call(server.port, "GET", "/translator/models")
    assert status == 200
    assert models == [
        {
            "model_id": 0,
            "opt": {"beam_size": reference.defaults.beam, "n_best": 1, "length_penalty": 1.0},
            "models": [str(attention_dir)],
            "loaded": True,
            "timeout": -1,
        }
    ]
    assert call(server.port, "GET", "/translator/health") == (200, {"status": "ok"})


OPENNMT_REFUSED = [
    ({"src": "hund"}, 400, "the body must be a JSON list such as [{"),
    ([], 400, "the body is an empty list"),
    (["hund"], 400, "item 0 must be an object such as"),
    ([{"src": "hund", "colour": 1}], 400, "item 0: unknown field(s) 'colour'; known: src, id"),
    ([{"id": 1}], 400, "item 0: 'src' must be a string, got NoneType"),
    ([{"src": "hund", "id": "a"}], 400, "item 0: 'id' must be an integer, got 'a'"),
    ([{"src": "hund"}] * 9, 413, "9 sentences: more than --max-sentences (8)"),
    ([{"src": "hund"}, {"src": "hund " * 300}], 400, "item 1's src is 300 subwords long"),
]


@pytest.mark.parametrize(
    "value, status, message", OPENNMT_REFUSED, ids=[m for *_, m in OPENNMT_REFUSED]
)
def test_bad_opennmt_requests_get_its_error_shape(server, value, status, message):
    answer = post_json(server.port, "/translator/translate", value)
    assert answer[0] == status and answer[1]["status"] == "error", answer
    assert message in answer[1]["error"], answer
    status, missing = call(server.port, "GET", "/translator/nope")
    assert status == 404 and missing["status"] == "error"


# --- one server for all: batches, shutdown, access log ------------------------------------------


def test_the_three_apis_are_decoded_in_one_batch(trained_dir, monkeypatch):
    """Requests of our API, LibreTranslate's and OpenNMT-py's with the same options wait in
    one queue: held behind a batch being decoded, they are then decoded as one batch."""
    with running(trained_dir) as served:
        port, translator = served.port, served.translator
        gate, decode = hold_decoding(translator, monkeypatch)
        answers: dict = {}
        sends = {
            "first": lambda: call(port, "POST", "/translate", {"text": ["haus"]}),
            "ours": lambda: call(port, "POST", "/translate", {"text": ["hund"]}),
            "libretranslate": lambda: post(port, "/translate", lt(q="katze")),
            "opennmt": lambda: post_json(port, "/translator/translate", [{"src": "baum"}]),
        }
        threads = {
            name: threading.Thread(target=lambda n=name: answers.update({n: sends[n]()}))
            for name in sends
        }
        threads["first"].start()
        before = wait_for_decoding(port)
        for name in ("ours", "libretranslate", "opennmt"):
            threads[name].start()
        wait_for_health(port, lambda health: health["queued_sentences"] >= 3)
        gate.set()
        for thread in threads.values():
            thread.join(timeout=30)
        after = call(port, "GET", "/health")[1]
    assert after["batches"] - before["batches"] == 2 and after["largest_batch"] == 3
    hund, katze, baum = (t.text for t in decode(["hund", "katze", "baum"]))
    assert answers["ours"][1]["translations"][0]["text"] == hund
    assert answers["libretranslate"][1] == {"translatedText": katze}
    assert answers["opennmt"][1][0][0]["tgt"] == baum


def test_requests_past_the_shutdown_timeout_are_answered_503(trained_dir, monkeypatch):
    """A LibreTranslate and an OpenNMT-py request in flight when the server stops with a
    0.5 s --shutdown-timeout: each gets a 503 in its API's error shape."""
    with running(trained_dir, shutdown_timeout=0.5, max_batch_sentences=1) as served:
        gate, _ = hold_decoding(served.translator, monkeypatch)
        answers: dict = {}
        libretranslate = threading.Thread(
            target=lambda: answers.update(lt=post(served.port, "/translate", lt()))
        )
        libretranslate.start()
        wait_for_decoding(served.port)
        opennmt = threading.Thread(
            target=lambda: answers.update(
                onmt=post_json(served.port, "/translator/translate", [{"src": "baum"}])
            )
        )
        opennmt.start()
        wait_for_health(served.port, lambda health: health["queued_sentences"] >= 1)
        served.loop.call_soon_threadsafe(served.stopping.set)
        libretranslate.join(timeout=30)
        opennmt.join(timeout=30)
        gate.set()
        assert served.stop(timeout=30)
    message = "the server is stopping and this request did not finish within --shutdown-timeout"
    assert answers["lt"][0] == 503 and answers["lt"][1]["error"].startswith(message)
    assert answers["onmt"][0] == 503 and answers["onmt"][1]["error"].startswith(message)
    assert answers["onmt"][1]["status"] == "error"


def test_the_access_log_has_a_line_per_request(trained_dir, capfd):
    """Method, path, status, sentences and milliseconds of every request answered, on one
    line on stderr; with access_log off, none."""
    requests = [
        ("GET", "/health", None),
        ("POST", "/translate", {"text": ["hund", "katze", ""]}),
        ("POST", "/translate", {"text": 3}),
        ("POST", "/translate", json.loads(lt(q="hund\nbaum"))),
        ("POST", "/translator/translate", [{"src": "hund"}]),
        ("GET", "/nope", None),
    ]
    for access_log in (True, False):
        with running(trained_dir, access_log=access_log) as served:
            for method, path, body in requests:
                body = json.dumps(body).encode() if body is not None else None
                call(served.port, method, path, body)
            assert served.stop(timeout=30)
        said = capfd.readouterr().err.splitlines(keepends=True)
        if not access_log:
            assert said == []
            continue
        assert all(ACCESS_LINE.fullmatch(line) for line in said), said
        assert [line.rsplit(" ", 2)[0] for line in said] == [
            "translate: GET /health 200 0 sentences",
            "translate: POST /translate 200 3 sentences",
            "translate: POST /translate 400 0 sentences",
            "translate: POST /translate 200 2 sentences",
            "translate: POST /translator/translate 200 1 sentence",
            "translate: GET /nope 404 0 sentences",
        ]
        assert all(int(line.split()[-2]) >= 0 for line in said)  # milliseconds


# --- random requests: a 4xx or an answer, never anything else -----------------------------------

LT_FIELDS = st.fixed_dictionaries(
    {"q": WORDS | st.text(max_size=20) | JSON},
    optional={
        "source": st.sampled_from(["de", "en", "auto", "fr"]) | JSON,
        "target": st.sampled_from(["de", "en", "fr"]) | JSON,
        "format": st.sampled_from(["text", "html"]) | JSON,
        "alternatives": NUMBERS | st.sampled_from(["2", " 3", "x", "99"]) | JSON,
        "api_key": JSON,
    },
)
ITEMS = st.lists(
    st.fixed_dictionaries({}, optional={"src": WORDS | st.text(max_size=20) | JSON, "id": JSON})
    | JSON,
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(LT_FIELDS)
def test_random_libretranslate_fields_are_parsed_or_refused_with_a_4xx(fields):
    try:
        asked = parse_libretranslate(fields, ("de", "en"), DecodeOptions(), max_sentences=8)
    except ApiError as err:
        assert 400 <= err.status < 500 and str(err)
        return
    assert 1 <= len(asked.lines) <= 8 and all(isinstance(line, str) for line in asked.lines)
    assert asked.options.n_best == asked.alternatives + 1 <= asked.options.beam <= 64


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(
        [FORM, "multipart/form-data; boundary=x", "multipart/form-data", "Multipart/x"]
    ),
)
def test_random_forms_are_read_or_refused_with_a_400(body, kind):
    try:
        fields = form_fields(body, kind, {})
    except ApiError as err:
        assert err.status == 400
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


@settings(max_examples=200, deadline=None)
@given(ITEMS | JSON)
def test_random_opennmt_bodies_are_parsed_or_refused_with_a_4xx(value):
    try:
        lines = parse_opennmt(value, max_sentences=8)
    except ApiError as err:
        assert 400 <= err.status < 500 and str(err)
        return
    assert 1 <= len(lines) <= 8 and all(isinstance(line, str) for line in lines)


@pytest.fixture(scope="module")
def small_limits_server(attention_dir):
    limits = dict(max_request_work=300, max_sentences=8, batch_wait_ms=0)
    with running(attention_dir, **limits) as served:
        yield served


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(LT_FIELDS, ITEMS | JSON, st.booleans())
def test_random_requests_of_both_apis_never_get_a_5xx(small_limits_server, fields, items, form):
    """Through the whole server, model and search included."""
    port = small_limits_server.port
    if form:  # a form carries text only
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        body = urlencode(text, errors="surrogatepass").encode()
        status, answer = post(port, "/translate", body, FORM)
    else:
        body = json.dumps(fields).encode()
        status, answer = post(port, "/translate", body, "application/json")
    assert status == 200 and "translatedText" in answer or 400 <= status < 500, (status, answer)
    body = json.dumps(items).encode()
    status, answer = post(port, "/translator/translate", body, "application/json")
    assert status == 200 and isinstance(answer, list) or 400 <= status < 500, (status, answer)
