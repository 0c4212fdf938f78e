"""Capture writer/reader: SageMaker schema, layout, rotation, filtering, malformed lines."""
import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from xaudit.capture import CaptureWriter, ReadStats, iter_records, make_record, parse_time, read_all
from xaudit.capture.schema import dumps_line

T0 = datetime(2026, 11, 22, 10, 15, 3, tzinfo=timezone.utc)


def test_record_schema_exact():
    rec = make_record(b"\x89PNGdata", "image/png", "[0.1, 0.9]", inference_time=T0, inference_id="abc")
    assert set(rec) == {"captureData", "eventMetadata", "eventVersion"}
    assert rec["eventVersion"] == "0"
    inp, out = rec["captureData"]["endpointInput"], rec["captureData"]["endpointOutput"]
    assert inp == {"observedContentType": "image/png", "mode": "INPUT",
                   "data": base64.b64encode(b"\x89PNGdata").decode(), "encoding": "BASE64"}
    assert out == {"observedContentType": "application/json", "mode": "OUTPUT", "data": "[0.1, 0.9]",
                   "encoding": "JSON"}
    md = rec["eventMetadata"]
    assert md["inferenceTime"] == "2026-11-22T10:15:03Z" and md["inferenceId"] == "abc"
    assert uuid.UUID(md["eventId"]).version == 4
    line = dumps_line(rec)
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_layout_and_rotation_by_hour_and_size(tmp_path):
    w = CaptureWriter(tmp_path, "ep", "AllTraffic", max_bytes=2000)
    for i in range(30):
        t = T0 + timedelta(minutes=5 * i)  # crosses two hour boundaries
        w.write_record(make_record(b"x" * 100, "image/png", json.dumps([0.5, 0.5]), inference_time=t), t)
    w.close()
    files = sorted(tmp_path.rglob("*.jsonl"))
    hours = {f.parent.relative_to(tmp_path).as_posix() for f in files}
    assert hours == {"ep/AllTraffic/2026/11/22/10", "ep/AllTraffic/2026/11/22/11", "ep/AllTraffic/2026/11/22/12"}
    assert len(files) > 3  # size rotation too
    assert all(f.stat().st_size <= 2000 for f in files)
    recs, st = read_all(tmp_path)
    assert len(recs) == 30 and st.malformed == 0
    for f in files:  # every record lies in its file's hour folder
        for line in f.read_text().splitlines():
            t = parse_time(json.loads(line)["eventMetadata"]["inferenceTime"])
            assert f.parent.as_posix().endswith(t.strftime("%Y/%m/%d/%H"))


def test_filter_by_inference_time_not_file_names(tmp_path):
    d = tmp_path / "ep" / "v" / "2026" / "11" / "22" / "10"
    d.mkdir(parents=True)
    # records whose time lies outside their folder's hour still count by inferenceTime
    lines = [dumps_line(make_record(b"a", "image/png", "[1,0]", inference_time=T0 + timedelta(minutes=m)))
             for m in (0, 30, 50, 70)]
    (d / "a.jsonl").write_bytes(b"".join(lines))
    recs, st = read_all(tmp_path, "2026-11-22T10:40:00Z", "2026-11-22T11:30:00Z")
    assert [r.time.minute for r in recs] == [45, 5, 25]  # 10:45, 11:05, 11:25 (the last two in the 10 folder)
    assert st.outside_window == 1
    # hour pruning: a window entirely before the folder's hour skips the file
    recs, st = read_all(tmp_path, "2026-11-22T08:00:00Z", "2026-11-22T09:00:00Z")
    assert recs == [] and st.files_pruned == 1


def test_malformed_truncated_unknown_encoding_counted(tmp_path):
    good = dumps_line(make_record(b"a", "image/png", "[0.2,0.8]", inference_time=T0))
    bad_enc = json.loads(good)
    bad_enc["captureData"]["endpointOutput"]["encoding"] = "XML"
    csv_rec = json.loads(good)
    csv_rec["captureData"]["endpointOutput"].update({"encoding": "CSV", "data": "0.7,0.3"})
    b64_rec = json.loads(good)
    b64_rec["captureData"]["endpointOutput"].update(
        {"encoding": "BASE64", "data": base64.b64encode(b'{"probabilities":[0.4,0.6]}').decode()})
    body = (good + b"not json at all\n" + dumps_line(bad_enc) + b"\n" + dumps_line(csv_rec)
            + b'{"captureData": {}}\n' + dumps_line(b64_rec) + good[: len(good) // 2])
    (tmp_path / "x.jsonl").write_bytes(body)
    st = ReadStats()
    recs = list(iter_records(tmp_path, stats=st))
    assert [int(r.outputs.argmax()) for r in recs] == [1, 0, 1]
    assert st.malformed == 4
    assert st.malformed_reasons["truncated line"] == 1
    assert st.malformed_reasons["unknown encoding"] == 1
    assert st.malformed_reasons["invalid JSON"] == 1
    assert st.to_dict()["malformed"] == 4


def test_fsspec_url_and_single_file(tmp_path):
    w = CaptureWriter(tmp_path, "ep")
    for i in range(5):
        w.capture(b"img%d" % i, "image/png", json.dumps({"probabilities": [0.1, 0.9], "predicted_index": 1,
                                                          "predicted_label": "b"}))
    w.close()
    recs, _ = read_all(f"file://{tmp_path}")
    assert len(recs) == 5 and recs[0].labels == {1: "b"}
    assert sorted(r.input_bytes() for r in recs) == sorted(b"img%d" % i for i in range(5))
    recs, _ = read_all(str(next(tmp_path.rglob("*.jsonl"))))
    assert len(recs) == 5
    import fsspec
    fs = fsspec.filesystem("memory")
    with fs.open("/cap/ep/v/2026/11/22/10/a.jsonl", "wb") as f:
        f.write(dumps_line(make_record(b"a", "image/png", "[0.3,0.7]", inference_time=T0)))
    recs, _ = read_all("memory://cap")
    assert len(recs) == 1 and np.allclose(recs[0].outputs, [[0.3, 0.7]])


def test_missing_capture_is_an_error(tmp_path):
    from xaudit.errors import CaptureFormatError
    with pytest.raises(CaptureFormatError):
        read_all(tmp_path / "nope")
