"""The equalizer's session and HTTP API on the session's ml-100k GPTRec and SAE.

The server runs on port 0 in a thread; every request goes through real HTTP. Expected lists
are computed independently of the equalizer (the experiment's own batched recommendation, the
core's naive full forward pass with the same edit).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mechrec_recsys.cli.main import app
from mechrec_recsys.equalizer import (
    DEFAULT_PROBE_ROWS,
    EqualizerInputError,
    EqualizerSession,
    UnknownUserError,
    build_controls,
    default_genres,
    page_bytes,
    serve_in_background,
)
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.steering import fit_genre_probes, resolve_genres, select_genre_features
from scipy.stats import binomtest
from typer.testing import CliRunner

from mechrec.saes import NormalizedSAE
from mechrec.steering import DirectionEdit, FeatureEdit, steered_last_logits

K = 10


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def session(paper_experiment: Experiment, paper_sae: NormalizedSAE) -> EqualizerSession:
    return EqualizerSession(paper_experiment, paper_sae)


@pytest.fixture(scope="module")
def base_url(session: EqualizerSession) -> Iterator[str]:
    with serve_in_background(session, "127.0.0.1") as url:
        yield url


def request(url: str, body: bytes | dict | None = None, *, method: str | None = None
            ) -> tuple[int, dict[str, Any], str]:
    """``(status, parsed JSON, content type)``; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            raw, status, kind = response.read(), response.status, response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        raw, status, kind = error.read(), error.code, error.headers["Content-Type"]
    text = raw.decode("utf-8")
    assert "Traceback" not in text
    return status, json.loads(text), kind


def recommend(base_url: str, **body: Any) -> dict[str, Any]:
    status, payload, _ = request(f"{base_url}/api/recommend", body)
    assert status == 200, payload
    return payload


def ids(items: list[dict[str, Any]]) -> list[int]:
    return [item["item_id"] for item in items]


# ------------------------------------------------------------------------------- meta and page


def test_meta_describes_one_slider_per_genre_with_its_chosen_feature(
        base_url: str, paper_experiment: Experiment, paper_sae: NormalizedSAE):
    status, meta, kind = request(f"{base_url}/api/meta")
    assert status == 200 and kind.startswith("application/json")
    genres = [g["genre"] for g in meta["genres"]]
    assert genres == default_genres(paper_experiment)
    assert "unknown" not in genres and "Children's" in genres
    # the features are the existing choice of select_genre_features, made independently here
    chosen = select_genre_features(paper_experiment, paper_sae,
                                   resolve_genres(genres, paper_experiment.genre_names))
    assert [g["feature"] for g in meta["genres"]] == chosen["feature"].tolist()
    assert all(g["probe"] for g in meta["genres"]) == meta["probes"]
    assert meta["range"] == {"min": -10.0, "max": 10.0, "step": 0.5}
    assert meta["methods"] == ["sae", "probe"] and meta["k"] == K
    assert meta["hook_name"] == paper_sae.hook_name
    test_users = paper_experiment.part("test").users.tolist()
    assert meta["users"]["examples"] == test_users[:len(meta["users"]["examples"])]
    assert meta["run"] == {"dataset": "ml-100k", "split": "paper", "seed": 0}
    # the header says how many of the dataset's users the split dropped, and why
    info = paper_experiment.split.info
    users = meta["users"]
    assert users["total"] == info["users_total"] == 943
    assert users["count"] + users["dropped"] == users["total"] and users["dropped"] > 0
    assert users["dropped_note"].startswith(
        f"{users['dropped']} of the dataset's 943 users were dropped by the split (")
    assert f"{info['test_targets_unseen_dropped']} test users whose held-out item" in \
        users["dropped_note"]


def test_page_is_one_self_contained_html_file(base_url: str):
    with urllib.request.urlopen(f"{base_url}/", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        html = response.read().decode("utf-8")
    assert html.encode() == page_bytes()
    for element in ('id="equalizer"', 'id="original-list"', 'id="steered-list"',
                    'id="user-input"', 'id="reset"', 'id="method-sae"', 'id="method-probe"',
                    'id="shares"', "<script>", "<style>"):
        assert element in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    assert "meta.users.dropped_note" in html
    # genre names wrap between words only ("Documentary" stays whole)
    band_name = html.split(".band-name {", 1)[1].split("}", 1)[0]
    assert "anywhere" not in band_name and "word-break: keep-all" in band_name


# ------------------------------------------------------------------------------- lists


def test_zero_sliders_return_exactly_the_models_own_top_k(base_url: str,
                                                          paper_experiment: Experiment):
    expected_tokens = paper_experiment.recommend("test", k=K)  # batched, padded: independent
    users = paper_experiment.part("test").users.tolist()[:12]
    all_zero = {g: 0 for g in default_genres(paper_experiment)}
    for row, user in enumerate(users):
        expected = paper_experiment.vocab.to_items(expected_tokens[row]).tolist()
        for values, method in (({}, "sae"), (all_zero, "sae"), (all_zero, "probe")):
            answer = recommend(base_url, user=user, values=values, method=method, k=K)
            assert answer["user"] == user and answer["part"] == "test"
            assert ids(answer["original"]) == expected
            assert ids(answer["steered"]) == expected
            assert answer["values"] == {} and answer["edits"] == []
            assert (answer["entered"], answer["left"], answer["changed"]) == ([], [], False)
            assert answer["shares"]["original"] == answer["shares"]["steered"]


def test_steered_list_is_the_core_steering_of_the_same_edit(base_url: str,
                                                            paper_experiment: Experiment,
                                                            paper_sae: NormalizedSAE,
                                                            session: EqualizerSession):
    """Fast cached path in the server == the core's naive full forward pass, both methods."""
    controls = session.equalizer.controls
    values = {"Comedy": 6.0, "Thriller": -3.5}
    user = paper_experiment.part("test").users[3].item()
    history = paper_experiment.part("test").sequences[3]
    window = torch.as_tensor(history[-paper_experiment.model.cfg.n_ctx:])[None, :]
    sae_edit = FeatureEdit(paper_sae, {controls[g].feature: v for g, v in values.items()},
                           mode="add", keep_error=True)
    probe_edits = [DirectionEdit(controls[g].probe, v) for g, v in values.items()]
    for method, edits in (("sae", sae_edit), ("probe", probe_edits)):
        logits = steered_last_logits(paper_experiment.model, window, None, paper_sae.hook_name,
                                     [edits], method="naive")[0]
        top = paper_experiment.top_k_from_last_scores(logits, [history], K)[0]
        answer = recommend(base_url, user=user, values=values, method=method)
        assert ids(answer["steered"]) == paper_experiment.vocab.to_items(top).tolist(), method
        assert answer["values"] == {"Comedy": 6.0, "Thriller": -3.5}


def test_entered_left_flags_and_shares_agree_with_the_lists(base_url: str,
                                                           paper_experiment: Experiment):
    catalog = paper_experiment.dataset.catalog
    changed = 0
    for user in paper_experiment.part("test").users.tolist()[:10]:
        answer = recommend(base_url, user=user, values={"Comedy": 10, "Drama": -4})
        before, after = ids(answer["original"]), ids(answer["steered"])
        assert len(before) == len(after) == K
        assert answer["entered"] == [i for i in after if i not in before]
        assert answer["left"] == [i for i in before if i not in after]
        assert [i["item_id"] for i in answer["steered"] if i["new"]] == answer["entered"]
        assert [i["item_id"] for i in answer["original"] if i["left"]] == answer["left"]
        changed += answer["changed"]
        for side in ("original", "steered"):
            for item in answer[side]:
                assert item["title"] == catalog.items.loc[item["item_id"], "title"]
                flags = catalog.genres.loc[item["item_id"]]
                assert item["genres"] == [g for g in catalog.genre_names if flags[g]]
            for genre, share in answer["shares"][side].items():
                assert share == pytest.approx(
                    np.mean([genre in item["genres"] for item in answer[side]]))
        seen = set(paper_experiment.vocab.to_items(
            paper_experiment.part("test").sequences[
                paper_experiment.part("test").users.tolist().index(user)]).tolist())
        assert not seen & set(after)  # seen items are never recommended
    assert changed > 0


@pytest.mark.parametrize(("method", "genre"), [
    # Genres whose steering works on the session's small model (measured over its 50 example
    # test users: Comedy's SAE feature moves 26 users up / 7 down at +10 and 27 down / 1 up at
    # -10; Horror's probe 14 up / 0 down at +10). Many genres barely move on this tiny
    # model (correlations of its best features are ~0.1), so they are not asserted.
    ("sae", "Comedy"),
    ("probe", "Horror"),
])
def test_raising_a_genre_slider_raises_that_genres_share(base_url: str, method: str,
                                                          genre: str):
    _, meta, _ = request(f"{base_url}/api/meta")
    users = meta["users"]["examples"]
    shares = {value: np.array([
        recommend(base_url, user=u, values={genre: value}, method=method)["shares"]["steered"]
        [genre] for u in users]) for value in (-10.0, 0.0, 10.0)}
    assert shares[-10.0].mean() <= shares[0.0].mean() < shares[10.0].mean()
    up = int((shares[10.0] > shares[0.0]).sum())
    down = int((shares[10.0] < shares[0.0]).sum())
    # a paired sign test over users: more users gain the genre than lose it, beyond chance
    assert up > down and binomtest(up, up + down, 0.5).pvalue < 0.01, (up, down)


def test_concurrent_requests_get_their_own_answers(base_url: str,
                                                   paper_experiment: Experiment):
    users = paper_experiment.part("test").users.tolist()[:6]
    jobs = [(u, {"Comedy": v}) for u in users for v in (-8.0, 0.0, 8.0)]
    expected = {(u, json.dumps(v)): ids(recommend(base_url, user=u, values=v)["steered"])
                for u, v in jobs}
    got: dict[tuple[int, str], list[int]] = {}
    failures: list[BaseException] = []

    def worker(chunk: list[tuple[int, dict[str, float]]]) -> None:
        try:
            for u, v in chunk:
                got[(u, json.dumps(v))] = ids(recommend(base_url, user=u, values=v)["steered"])
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(jobs[i::4][::-1],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures and got == expected


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{bad json", 400, "invalid JSON in the request body: line 1, column 2"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"user": 7, "values": {"Comedy": NaN}}', 400, "NaN is not a valid JSON number"),
    ({"values": {"Comedy": 1}}, 400, 'missing field "user"'),
    ({"user": 7, "colour": "red"}, 400, "unknown fields ['colour']"),
    ({"user": 99999999}, 404, "unknown user 99999999"),
    ({"user": "nobody"}, 404, "unknown user 'nobody'"),
    ({"user": True}, 400, "'user' must be a user id"),
    ({"user": 7, "values": {"Polka": 1}}, 400, "unknown genre 'Polka'; the equalizer's genres"
                                               " are: Action, Adventure"),
    ({"user": 7, "values": {"Comedy": 10.5}}, 400, "value 10.5 for 'Comedy' is outside the "
                                                   "allowed range [-10, 10]"),
    ({"user": 7, "values": {"Comedy": -11}}, 400, "outside the allowed range"),
    ({"user": 7, "values": {"Comedy": "loud"}}, 400, "value for 'Comedy' must be a number, "
                                                     "got 'loud'"),
    ({"user": 7, "values": {"Comedy": True}}, 400, "must be a number"),
    ({"user": 7, "values": {"Comedy": None}}, 400, "must be a number"),
    ({"user": 7, "values": {"Children": 1, "Children's": 2}}, 400, "is given twice"),
    ({"user": 7, "values": [1, 2]}, 400, "'values' must be an object"),
    ({"user": 7, "k": 0}, 400, "k must be between 1 and"),
    ({"user": 7, "k": "ten"}, 400, "k must be a whole number"),
    ({"user": 7, "method": "magic"}, 400, "unknown method 'magic'; choose 'sae' or 'probe'"),
])
def test_bad_requests_get_a_json_error(base_url: str, body: bytes | dict, status: int,
                                       message: str):
    got, payload, kind = request(f"{base_url}/api/recommend", body, method="POST")
    assert got == status, payload
    assert kind.startswith("application/json")
    assert set(payload) == {"error"} and message in payload["error"], payload["error"]


def test_genre_names_are_matched_like_the_cli_does(base_url: str):
    answer = recommend(base_url, user="7", values={"children": 2, "COMEDY": 1})
    assert answer["values"] == {"Children's": 2.0, "Comedy": 1.0} and answer["user"] == 7


def test_unknown_paths_and_methods_are_json_errors(base_url: str):
    assert request(f"{base_url}/nothing-here")[:2] == (404, {"error": (
        "no such page '/nothing-here'; the page is at /, the API at GET /api/meta and POST "
        "/api/recommend")})
    status, payload, _ = request(f"{base_url}/api/recommend")
    assert status == 405 and "use POST" in payload["error"]
    status, payload, _ = request(f"{base_url}/api/meta", b"{}")
    assert status == 405 and "use GET /api/meta" in payload["error"]
    status, payload, _ = request(f"{base_url}/api/recommend", b"{}", method="PUT")
    assert status == 405 and "method PUT is not supported" in payload["error"]


def test_session_errors_are_typed_for_python_callers(session: EqualizerSession):
    with pytest.raises(UnknownUserError, match="unknown user 123456789") as info:
        session.recommend(123456789)
    assert info.value.status == 404
    with pytest.raises(EqualizerInputError, match="outside the allowed range") as info:
        session.recommend(7, {"Comedy": 99})
    assert info.value.status == 400


def test_session_without_probes_refuses_the_probe_method_clearly(
        paper_experiment: Experiment, paper_sae: NormalizedSAE):
    lean = EqualizerSession(paper_experiment, paper_sae, genres=["Comedy", "Horror"],
                            probes=False, max_value=3)
    meta = lean.meta()
    assert [g["genre"] for g in meta["genres"]] == ["Comedy", "Horror"]
    assert meta["probes"] is False and meta["range"]["max"] == 3.0
    with pytest.raises(EqualizerInputError, match="no probe direction for Comedy"):
        lean.recommend(7, {"Comedy": 1}, method="probe")
    assert lean.recommend(7, {}, method="probe")["changed"] is False
    with pytest.raises(EqualizerInputError, match="unknown genre 'Drama'"):
        lean.recommend(7, {"Drama": 1})
    with pytest.raises(ValueError, match="unknown genre 'Polka'"):
        EqualizerSession(paper_experiment, paper_sae, genres=["Polka"])


def test_notes_come_from_the_library_not_from_warnings(
        paper_experiment: Experiment, paper_sae: NormalizedSAE):
    import dataclasses
    import warnings

    catalog = paper_experiment.dataset.catalog
    genres = catalog.genres.copy()
    genres["Western"] = False  # no Western item: no feature can be chosen for it
    no_western = dataclasses.replace(paper_experiment, dataset=dataclasses.replace(
        paper_experiment.dataset, catalog=dataclasses.replace(catalog, genres=genres)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # ml-100k's "unknown" genre has one SAE-training row, which 100 sampled rows miss
        controls, notes = build_controls(no_western, paper_sae,
                                         ["IMAX", "Western", "unknown", "Horror"],
                                         probe_rows=100)
    assert [c.genre for c in controls] == ["unknown", "Horror"]
    assert len(notes) == 3
    assert "['IMAX'] are not in this dataset" in notes[0]
    assert "'Western' has no SAE feature" in notes[1]
    assert notes[2] == "probe for 'unknown' skipped: no positive training examples"
    by_genre = {c.genre: c for c in controls}
    assert by_genre["unknown"].probe is None and by_genre["Horror"].probe is not None
    leaked = [str(w.message) for w in caught
              if any(word in str(w.message) for word in ("IMAX", "Western", "probe for"))]
    assert leaked == []


def test_probe_rows_cap_the_probe_fit(paper_experiment: Experiment, paper_sae: NormalizedSAE):
    rows = len(paper_experiment.activations("sae_train", paper_sae.hook_name))
    assert rows < DEFAULT_PROBE_ROWS  # ml-100k: the default cap changes nothing here
    full, _ = build_controls(paper_experiment, paper_sae, ["Horror"])
    every, _ = build_controls(paper_experiment, paper_sae, ["Horror"], probe_rows=None)
    capped, _ = build_controls(paper_experiment, paper_sae, ["Horror"], probe_rows=1000)
    expected = fit_genre_probes(paper_experiment, paper_sae.hook_name, ["Horror"],
                                max_train_rows=1000).direction("Horror")
    assert torch.equal(full[0].probe.vector, every[0].probe.vector)
    assert torch.equal(capped[0].probe.vector, expected.vector)
    assert not torch.allclose(capped[0].probe.vector, full[0].probe.vector)
    session = EqualizerSession(paper_experiment, paper_sae, genres=["Horror"], probe_rows=1000)
    assert torch.equal(session.equalizer.controls["Horror"].probe.vector, expected.vector)


def test_session_uses_the_experiments_user_lookup(session: EqualizerSession,
                                                  paper_experiment: Experiment):
    assert dict(session._users) == dict(paper_experiment.user_index())
    user = int(paper_experiment.part("sae_train").users[0])
    part, _ = paper_experiment.find_user(user)
    assert session.recommend(user)["part"] == part
    assert session.recommend(str(user))["original"] == session.recommend(user)["original"]
    with pytest.raises(UnknownUserError, match="searched the test, validation, sae_train"):
        session.recommend("nobody")


def test_cache_holds_one_copy_of_the_prefix_keys_and_values(session: EqualizerSession,
                                                             paper_experiment: Experiment):
    """Per user: the unsteered scores plus one copy of the prefix K/V (with the re-run slot),
    counted as distinct tensor storages; nothing of the full-size prefix pass is kept."""
    cfg = paper_experiment.model.cfg
    sequences = paper_experiment.part("test")
    row = max(range(len(sequences.users)), key=lambda r: len(sequences.sequences[r]))
    user = sequences.users[row].item()
    length = min(len(sequences.sequences[row]), cfg.n_ctx)
    assert length == cfg.n_ctx  # the longest window: the case the cache is largest for
    session.recommend(user, {"Comedy": 2.0})
    original, steered = session.scores(user, {"Comedy": 2.0})
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    one_copy = cfg.n_layers * 2 * length * kv_heads * cfg.d_head * 4  # T-1 positions + slot
    scores = original.untyped_storage().nbytes()
    assert scores == cfg.d_vocab_out * 4
    small = length * 8 * 3 + cfg.d_model * 4  # tokens, mask, trimmed mask, last residual
    nbytes = session.cache_nbytes(user)
    assert one_copy - 2 * cfg.n_layers * kv_heads * cfg.d_head * 4 + scores <= nbytes
    assert nbytes <= one_copy + scores + small
    steered_again = session.scores(user, {"Comedy": 2.0})[1]
    assert session.cache_nbytes(user) == nbytes  # re-runs build no second copy
    assert torch.equal(steered, steered_again)


def test_scores_are_what_recommend_ranks(session: EqualizerSession,
                                         paper_experiment: Experiment,
                                         paper_sae: NormalizedSAE):
    user = paper_experiment.part("test").users[3].item()
    history = paper_experiment.part("test").sequences[3]
    values = {"Comedy": 6.0, "Thriller": -3.5}
    original, steered = session.scores(user, values)
    top = paper_experiment.top_k_from_last_scores
    answer = session.recommend(user, values)
    for scores, key in ((original, "original"), (steered, "steered")):
        assert scores.shape == (1, paper_experiment.model.cfg.d_vocab_out)
        tokens = top(scores, [history], K)[0]
        assert ids(answer[key]) == paper_experiment.vocab.to_items(tokens).tolist()
    controls = session.equalizer.controls
    edit = FeatureEdit(paper_sae, {controls[g].feature: v for g, v in values.items()},
                       mode="add", keep_error=True)
    window = torch.as_tensor(history[-paper_experiment.model.cfg.n_ctx:])[None, :]
    naive = steered_last_logits(paper_experiment.model, window, None, paper_sae.hook_name,
                                [None, edit], method="naive")
    assert (steered - naive[1]).abs().max() <= 1e-4
    assert (original - naive[0]).abs().max() <= 1e-4
    unsteered = session.scores(user)
    assert torch.equal(unsteered[0], original) and torch.equal(unsteered[1], original)
    assert session.cache_nbytes(user) > 0
    with pytest.raises(UnknownUserError):
        session.cache_nbytes("nobody")
    with pytest.raises(EqualizerInputError, match="unknown method"):
        session.scores(user, values, method="nope")
    assert session.user_ids()[:3] == [
        int(u) for u in paper_experiment.part("test").users[:3].tolist()]


# ------------------------------------------------------------------------------- CLI


def run_cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert "Traceback" not in result.output


def test_cli_port_in_use_names_the_fix(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", tmp_path, "--sae", "x", "--port", port, "--no-browser")
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "--port" in result.output


@pytest.mark.parametrize(("extra", "message"), [
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--k", "0"], "--k must be >= 1"),
    (["--max-value", "-1"], "--max-value must be a positive finite number"),
    (["--genres", " , "], "--genres is empty"),
    (["--probe-rows", "-1"], "--probe-rows must be >= 0"),
])
def test_cli_bad_options_fail_in_one_line(tmp_path: Path, extra: list[str], message: str):
    assert_one_line_error(run_cli("serve", tmp_path, "--sae", "x", "--no-browser", *extra),
                          message)


def test_cli_missing_run_or_sae_fails_in_one_line(tmp_path: Path, paper_run_dir: Path,
                                                  data_dir: Path):
    assert_one_line_error(run_cli("serve", tmp_path / "nope", "--sae", "x", "--port", 0,
                                  "--no-browser"), "does not exist")
    assert_one_line_error(run_cli("serve", paper_run_dir, "--sae", tmp_path / "no-sae",
                                  "--port", 0, "--no-browser", "--data-dir",
                                  data_dir / "ml-100k", "--no-download"), "not found")


def test_cli_serves_the_page_and_the_api(tmp_path: Path, paper_run_dir: Path,
                                        paper_sae: NormalizedSAE, data_dir: Path):
    """End to end: the real command in a subprocess, stopped with Ctrl-C (SIGINT); clients
    that hang up before their answer leave no traceback on stderr."""
    paper_sae.save(tmp_path / "sae")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mechrec_recsys.cli.main", "serve", str(paper_run_dir),
               "--sae", str(tmp_path / "sae"), "--port", "0", "--no-browser", "--no-probes",
               "--genres", "Comedy,Horror", "--k", "5", "--data-dir",
               str(data_dir / "ml-100k"), "--no-download"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        line = process.stdout.readline()  # blocks until the URL is printed (or the exit)
        assert "equalizer for 2 genres at http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        status, meta, _ = request(f"{url}/api/meta")
        assert status == 200 and [g["genre"] for g in meta["genres"]] == ["Comedy", "Horror"]
        assert meta["k"] == 5 and meta["probes"] is False
        answer = recommend(url, user=meta["users"]["examples"][0], values={"Comedy": 2})
        assert len(answer["steered"]) == 5
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"user": meta["users"]["examples"][0]}).encode()
        for _ in range(3):  # a browser tab closed mid-answer: the connection is reset
            for head in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"POST /api/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body):
                with socket.create_connection((host, int(port))) as client:
                    client.sendall(head)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        recommend(url, user=meta["users"]["examples"][0], values={})  # still serving
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert stderr.splitlines()[-1] == "stopped", stderr
        for noise in ("Traceback", "BrokenPipeError", "ConnectionResetError", "Exception"):
            assert noise not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize(("extra", "expected"), [
    ([], DEFAULT_PROBE_ROWS), (["--probe-rows", "1234"], 1234), (["--probe-rows", "0"], None),
])
def test_cli_probe_rows_reach_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          extra: list[str], expected: int | None):
    seen: dict[str, Any] = {}

    def fake_open(cls, run_dir, sae, **options):
        seen.update(options)
        raise ValueError("stopped before loading")

    monkeypatch.setattr(EqualizerSession, "open", classmethod(fake_open))
    result = run_cli("serve", tmp_path, "--sae", "x", "--port", "0", "--no-browser", *extra)
    assert_one_line_error(result, "stopped before loading")
    assert seen["probe_rows"] == expected
