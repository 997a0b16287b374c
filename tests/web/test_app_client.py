"""The app's API through gradio_client: index a labelled gallery, then search it.

Runs ``python app.py`` on a free port (fixture ``app_server`` in conftest) with the
default bundle, or with ``CMCE_BUNDLE`` until the default bundle is built.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import lfw_people

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.e2e


def _view_names(bundle) -> set[str]:
    cfg = json.loads((bundle / "config.json").read_text())
    return {"ensemble", "query", *(g["name"] for g in cfg["gallery_models"])}


@pytest.fixture(scope="module")
def people(lfw_dir):
    return lfw_people(lfw_dir, 5)


def test_index_then_search_in_one_session(app_server, people):
    client = Client(app_server["url"], verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/index_gallery", "/search"} <= set(endpoints)
    params = {p["parameter_name"]: p for p in endpoints["/search"]["parameters"]}
    assert params["reject_by"]["parameter_default"] == "none"  # by default nothing is rejected

    gallery = [handle_file(str(f)) for p in people[:4] for f in sorted(p.glob("*.jpg"))[:2]]
    report_md, report = client.predict(files=gallery, api_name="/index_gallery")
    assert report["files"] == 8 and report["added"] >= 8, report
    assert report["labels"] == {p.name: 2 for p in people[:4]}  # from Name_0001.jpg file names
    assert "faces indexed from 8 files" in report_md

    target = people[1]
    query = sorted(target.glob("*.jpg"))[2]  # not in the gallery
    faces_image, face, html, result = client.predict(image=handle_file(str(query)), api_name="/search")
    assert set(result["views"]) == _view_names(app_server["bundle"])
    assert result["query_label"] == target.name
    ensemble = result["views"]["ensemble"]
    assert ensemble["matches"][0]["label"] == target.name
    assert ensemble["matches"][0]["correct"] is True
    # the best match in its source photo (a downscaled copy the session kept), its face boxed
    photo, note = client.predict(column="ensemble", rank=1, api_name="/match_photo")
    assert photo is not None and Path(photo).stat().st_size > 0, note
    assert note.startswith(f"**{target.name}**, match 1 of CMCE ensemble") and "face boxed in green" in note
    # what happened, per view: the answer's kind, its reason, the rule (none in bundles calibrated before
    # answer rules), and per match whether it is doubtful
    assert ensemble["answer_kind"] == "match" and ensemble["reason"].startswith(target.name), ensemble
    calibration = json.loads((app_server["bundle"] / "config.json").read_text())["calibration"]
    assert ensemble["rule"] == (calibration.get("answer_rule") or None)
    assert (ensemble["confidence"] is None) == (ensemble["rule"] is None)
    assert all(isinstance(m["doubtful"], bool) for v in result["views"].values() for m in v["matches"])
    # when a column says "Unknown" is the caller's choice (a gallery of 4 people: the raw threshold either way)
    assert result["unknown_by"] == "normalised"
    *_, strict = client.predict(image=handle_file(str(query)), unknown_by="strict", api_name="/search")
    assert strict["unknown_by"] == "strict" and strict["views"]["ensemble"]["answer"] == target.name
    with pytest.raises(AppError, match=r"not in the list of choices: \['normalised', 'strict', 'similarity'\]"):
        client.predict(image=handle_file(str(query)), unknown_by="loose", api_name="/search")
    # every face rejected: a rejected best match blocks ("Unknown" naming its person), never the next person
    *_, blocked = client.predict(image=handle_file(str(query)), reject_by="threshold", threshold=0.0,
                                 api_name="/search")
    ens = blocked["views"]["ensemble"]
    assert ens["unknown"] and ens["answer_kind"] == "doubtful" and ens["matches"] == [], ens
    assert f"rejected photo of {target.name}" in ens["reason"]
    assert blocked["query_person"] == "rejected" and result["query_person"] == "present"  # not "absent" (issue 24)
    for outside in (-1.0, 5.0):  # a threshold outside the score's range is refused, by name (issue 24)
        *_, refused = client.predict(image=handle_file(str(query)), reject_by="threshold", threshold=outside,
                                     api_name="/search")
        assert "threshold must be from 0 to" in refused["error"], refused
    gallery_models = _view_names(app_server["bundle"]) - {"ensemble", "query"}
    assert set(ensemble["matches"][0]["member_similarities"]) >= gallery_models
    for view in result["views"]:
        assert f"data-view='{view}'" in html
    assert faces_image  # the photo with numbered boxes


def test_sessions_are_isolated(app_server, people):
    """A second client has its own (empty) gallery: searching it is reported, not a crash."""
    other = Client(app_server["url"], verbose=False)
    query = sorted(people[0].glob("*.jpg"))[0]
    _, _, html, result = other.predict(image=handle_file(str(query)), api_name="/search")
    assert "empty" in result["error"]


def test_unreachable_hub_keeps_current_bundle(app_server, people):
    client = Client(app_server["url"], verbose=False)
    client.predict(files=[handle_file(str(f)) for p in people[:2] for f in sorted(p.glob("*.jpg"))[:2]],
                   api_name="/index_gallery")
    start = time.monotonic()
    bundle_md, note, *_ = client.predict(repo_id="nobody/cmce-no-such-bundle", revision="", api_name="/load_bundle")
    assert time.monotonic() - start < 20
    assert "Not loaded" in note and "nobody/cmce-no-such-bundle" in note
    query = sorted(people[0].glob("*.jpg"))[2]
    _, _, _, result = client.predict(image=handle_file(str(query)), api_name="/search")
    assert result["views"]["ensemble"]["matches"][0]["label"] == people[0].name


def test_switching_bundles_keeps_the_gallery(app_server, people):
    """A shipped bundle picked by name re-projects the session's gallery: no photo is read again."""
    other = app_server["bundle"].parent / "facenet-query"
    if not (other / "config.json").is_file() or app_server["bundle"].name != "sface-query":
        pytest.skip("needs the shipped sface-query and facenet-query bundles")
    client = Client(app_server["url"], verbose=False)
    gallery = [handle_file(str(f)) for p in people[:4] for f in sorted(p.glob("*.jpg"))[:2]]
    _, report = client.predict(files=gallery, api_name="/index_gallery")
    faces = report["entries"]
    target = people[2]
    query = sorted(target.glob("*.jpg"))[2]  # not in the gallery

    bundle_md, note, reject_by, rate, threshold, score = client.predict(repo_id="facenet-query", revision="",
                                                                        api_name="/load_bundle")
    assert "query model **facenet-casia**" in bundle_md
    calibration = json.loads((other / "config.json").read_text())["calibration"]  # the new bundle's defaults
    assert (reject_by["value"], rate["value"]) == ("none", calibration["rejection_rate"])  # gr.update dicts
    # the threshold box shows the calibrated value rounded to 3 significant digits, in its unit
    assert threshold["value"] == float(f"{calibration['rejection_threshold']:.3g}")
    assert "Unit:" in threshold["info"]
    assert score["value"] == "bundle" and calibration["quality"]["kind"] in score["label"]
    assert f"Gallery of {faces} faces re-projected into facenet-casia's space" in note, note
    assert "0 photos re-read" in note and "lack" not in note  # both bundles use the same three backbones
    *_, result = client.predict(image=handle_file(str(query)), api_name="/search")
    assert set(result["views"]) == _view_names(other)
    assert result["views"]["ensemble"]["matches"][0]["label"] == target.name
    assert result["views"]["ensemble"]["matches"][0]["correct"] is True
    # The same gallery, not a new one: one more photo makes it one face larger.
    extra = sorted(people[3].glob("*.jpg"))[2]
    _, report = client.predict(files=[handle_file(str(extra))], api_name="/index_gallery")
    assert report["entries"] == faces + 1, report

    _, note, *_ = client.predict(repo_id="facenet-query", revision="", api_name="/load_bundle")
    assert "already in use" in note
    bundle_md, note, *_ = client.predict(repo_id="sface-query", revision="", api_name="/load_bundle")
    assert "query model **sface**" in bundle_md
    assert f"Gallery of {faces + 1} faces re-projected into sface's space" in note and "0 photos re-read" in note
    *_, result = client.predict(image=handle_file(str(query)), api_name="/search")
    assert set(result["views"]) == _view_names(app_server["bundle"])
    assert result["views"]["ensemble"]["matches"][0]["label"] == target.name


def test_upgrade_from_the_old_bundle(app_server, people):
    """A gallery indexed with facenet-dlib, served by sface-query: its faces lack sface's own
    embedding (◐), are fused from the two models they have, and still found."""
    if not (app_server["bundle"].parent / "facenet-dlib" / "config.json").is_file():
        pytest.skip("needs the shipped facenet-dlib bundle")
    client = Client(app_server["url"], verbose=False)
    _, note, *_ = client.predict(repo_id="facenet-dlib", revision="", api_name="/load_bundle")
    assert note == "Bundle loaded."
    gallery = [handle_file(str(f)) for p in people[:3] for f in sorted(p.glob("*.jpg"))[:2]]
    _, report = client.predict(files=gallery, api_name="/index_gallery")
    faces = report["entries"]

    _, note, *_ = client.predict(repo_id="sface-query", revision="", api_name="/load_bundle")
    assert f"Gallery of {faces} faces re-projected into sface's space" in note and "0 photos re-read" in note
    assert f"{faces} faces lack sface's own embedding (◐)" in note, note
    target = people[1]
    *_, result = client.predict(image=handle_file(str(sorted(target.glob("*.jpg"))[2])), api_name="/search")
    top = result["views"]["ensemble"]["matches"][0]
    assert top["label"] == target.name
    assert top["members"] == ["dlib-resnet34", "facenet-casia"]  # no "query": sface never saw these photos
    assert result["views"]["query"]["matches"] == []  # sface alone cannot match them


def test_local_folder_typed_by_hand_needs_permission(app_server):
    """A shipped bundle is picked by name; its folder path typed by hand is a local folder (refused), with
    the very answer a folder that does not exist gets (issue 24: no oracle for the server's files)."""
    client = Client(app_server["url"], verbose=False)
    notes = []
    for target in (str(app_server["bundle"]), str(app_server["bundle"]) + "-missing"):
        _, note, *_ = client.predict(repo_id=target, revision="", api_name="/load_bundle")
        assert "Not loaded" in note and "CMCE_ALLOW_LOCAL_BUNDLES" in note, note
        notes.append(re.sub(r"'[^']*'", "TARGET", note))
    assert notes[0] == notes[1] and str(app_server["bundle"]) not in notes[0]


def test_hostile_uploads_are_reported_and_the_rest_indexed(app_server, people, tmp_path):
    """Broken, empty, fake, bomb and unsafe-archive uploads next to good photos."""
    import io
    import zipfile

    from conftest import write_bilevel_png

    good = [sorted(people[4].glob("*.jpg"))[i] for i in (0, 1)]
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    (tmp_path / "empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    write_bilevel_png(tmp_path / "bomb.png", 30_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../escape.jpg", data)
        z.writestr("ok/" + good[1].name, good[1].read_bytes())
    (tmp_path / "unsafe.zip").write_bytes(buf.getvalue())
    files = [good[0], tmp_path / "notes.jpg", tmp_path / "empty.jpg", tmp_path / "half.jpg",
             tmp_path / "bomb.png", tmp_path / "unsafe.zip"]
    client = Client(app_server["url"], verbose=False)
    report_md, report = client.predict(files=[handle_file(str(f)) for f in files], api_name="/index_gallery")
    skipped = " ".join(f"{name}: {why}" for name, why in (tuple(x) for x in report["skipped"]))
    for name in ("notes.jpg", "empty.jpg", "half.jpg", "bomb.png", "escape.jpg"):
        assert name in skipped or name in report_md, (name, report)
    assert report["added"] >= 2  # the good photo and the safe archive member
    query = sorted(people[4].glob("*.jpg"))[2]
    *_, result = client.predict(image=handle_file(str(query)), api_name="/search")
    assert result["views"]["ensemble"]["matches"][0]["label"] in {people[4].name, "ok"}


def test_a_downloaded_gallery_restores_in_another_session_with_the_same_results(app_server, people):
    """Download -> restore: the same search results and scores, the verdict line, and no photo read."""
    owner = Client(app_server["url"], verbose=False)
    gallery = [handle_file(str(f)) for p in people[:3] for f in sorted(p.glob("*.jpg"))[:2]]
    owner.predict(files=gallery, api_name="/index_gallery")
    query = handle_file(str(sorted(people[2].glob("*.jpg"))[2]))
    *_, before = owner.predict(image=query, api_name="/search")
    assert before["verdict"]["identity"] == people[2].name
    assert before["verdict"]["columns"]["ensemble"]["correct"] is True
    assert before["verdict"]["text"].startswith("CMCE ensemble ✓")
    *_, unnamed = owner.predict(image=query, identity=" ", api_name="/search")  # a blank label: the file name's
    assert unnamed["verdict"]["identity"] == people[2].name
    archive = owner.predict(api_name="/download_gallery")
    assert Path(archive).suffix == ".zip" and Path(archive).stat().st_size > 0

    other = Client(app_server["url"], verbose=False)
    report_md, report = other.predict(file=handle_file(archive), api_name="/restore_gallery")
    assert report["restored"] == report["entries"] >= 6 and report["skipped"] == []
    assert report["labels"] == {p.name: 2 for p in people[:3]}
    assert "no photo read again" in report_md
    *_, after = other.predict(image=query, api_name="/search")
    for view, v in before["views"].items():
        assert [(m["label"], m["similarity"]) for m in after["views"][view]["matches"]] == \
               [(m["label"], m["similarity"]) for m in v["matches"]], view
    assert after["verdict"] == before["verdict"]


def test_a_query_on_an_empty_gallery_shows_its_faces(app_server, people):
    client = Client(app_server["url"], verbose=False)
    faces_image, face, html, result = client.predict(image=handle_file(str(sorted(people[0].glob("*.jpg"))[0])),
                                                     api_name="/search")
    assert faces_image and len(result["faces"]) >= 1  # the photo with its numbered face boxes
    assert "The gallery is empty" in result["error"] and "1 face" in html
