"""Data loading: the lecture file's variants load identically, columns are chosen as asked, and
every bad input raises DataError with one line naming the file and the row/column at fault."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfscope.core.data import tables as data
from tfscope.core.errors import DataError

LECTURE = data._builtin_text()  # the packaged file's text, byte-order mark included
ROWS = 19


def write(tmp_path: Path, text: str | bytes, name: str = "d.csv") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return p


def assert_one_line_error(excinfo, *parts: str) -> str:
    """The error is a DataError; its message is one line and contains every part (file, row, column)."""
    assert type(excinfo.value) is DataError
    msg = str(excinfo.value)
    assert "\n" not in msg and msg == msg.strip()
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def test_builtin_lecture_data():
    ds = data.builtin()
    assert LECTURE.startswith("\ufeff")  # the lecture's file keeps its byte-order mark
    assert ds.x.shape == (ROWS, 2) and ds.z.shape == (ROWS, 1)
    assert ds.features == ("x", "y") and ds.targets == ("z",)
    assert ds.x.dtype == np.float32 and ds.z.dtype == np.float32
    # Every row obeys z = 2x + 3y + 2 exactly (small integers, exact in float32).
    np.testing.assert_array_equal(ds.z[:, 0], 2 * ds.x[:, 0] + 3 * ds.x[:, 1] + 2)
    assert data.load(None).source == data.load("lecture").source == "lecture"


def test_bom_line_endings_and_blank_lines_load_the_same(tmp_path):
    ref = data.builtin("float64")
    body = LECTURE.lstrip("\ufeff")
    variants = {"bom.csv": LECTURE, "nobom.csv": body, "crlf.csv": body.replace("\n", "\r\n"),
                "cr.csv": body.replace("\n", "\r"), "blank.csv": "\n" + body.replace("\n", "\n\n", 3) + "\n\n",
                "spaces.csv": body.replace(",", " , ")}
    for name, text in variants.items():
        ds = data.load_csv(write(tmp_path, text, name), dtype="float64")
        np.testing.assert_array_equal(ds.x, ref.x)
        np.testing.assert_array_equal(ds.z, ref.z)
        assert ds.features == ("x", "y") and ds.targets == ("z",), name


def test_target_and_features(tmp_path):
    p = write(tmp_path, "a,b,c,d\n1,2,3,4\n5,6,7,8\n9,10,11,12\n")
    full = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], np.float64)
    for target in ("b", 1, "1", -3, "-3"):
        ds = data.load_csv(p, target=target, dtype="float64")
        assert ds.targets == ("b",) and ds.features == ("a", "c", "d")
        np.testing.assert_array_equal(ds.z, full[:, [1]])
        np.testing.assert_array_equal(ds.x, full[:, [0, 2, 3]])
    ds = data.load_csv(p, target="a", features=["d", "b"], dtype="float64")
    assert ds.features == ("d", "b")
    np.testing.assert_array_equal(ds.x, full[:, [3, 1]])
    ds = data.load_csv(p, features=[0, "c"])
    assert ds.features == ("a", "c") and ds.targets == ("d",)
    assert ds.x.dtype == np.float32 and ds.z.dtype == np.float32
    assert data.load_csv(p, dtype="float64").x.dtype == np.float64


def test_a_column_named_like_a_number_is_found_by_name(tmp_path):
    p = write(tmp_path, "0,1,2\n1,2,3\n4,5,6\n")
    assert data.load_csv(p, target="0").targets == ("0",)
    assert data.load_csv(p, target=0).targets == ("0",)


def test_float64_keeps_full_precision(tmp_path):
    v = 0.1 + 0.2  # not a float32 value
    p = write(tmp_path, f"a,b\n{v!r},1\n2,{np.pi!r}\n")
    ds = data.load_csv(p, dtype="float64")
    assert ds.x[0, 0] == v and ds.z[1, 0] == np.pi
    assert data.load_csv(p).x[0, 0] == np.float32(v)


BAD = [
    # (file text, parts the message must contain)
    ("", ["the file is empty"]),
    ("\n \n\n", ["the file is empty"]),
    ("\ufeff", ["the file is empty"]),
    ("a,b,c\n", ["0 data row"]),
    ("a,b,c\n1,2,3\n", ["1 data row", "need at least 2"]),
    ("a,b,c\n1,2,3\n4,5\n", ["row 3", "2 fields", "header has 3"]),
    ("a,b,c\n1,2,3\n4,5,6,7\n", ["row 3", "4 fields"]),
    ("a,b,c\n1,2,3\n\n\n4,x,6\n", ["row 5", "column 'b'", "'x' is not a number"]),  # blank lines counted
    ("a,b,c\n1,,3\n4,5,6\n", ["row 2", "column 'b'", "'' is not a number"]),
    ("a,b,c\n1,2,nan\n4,5,6\n", ["row 2", "column 'c'", "'nan' is not finite"]),
    ("a,b,c\n1,2,3\n4,-Infinity,6\n", ["row 3", "column 'b'", "not finite"]),
    ("a,b,c\n1,2,3\n4,1e999,6\n", ["row 3", "column 'b'", "not finite"]),
    ("a,b,c\n1,1_000,3\n4,5,6\n", ["row 2", "column 'b'", "'1_000' is not a plain decimal number"]),
    ("a,b,c\n1,2,3\n4,5,0x10\n", ["row 3", "column 'c'", "not a number"]),
    ("a,b,a\n1,2,3\n4,5,6\n", ["row 1", "column name 'a' appears twice"]),
    ("a,,c\n1,2,3\n4,5,6\n", ["row 1", "column 2 has an empty name"]),
    ("\n\na,a\n1,2\n4,5\n", ["row 3", "appears twice"]),
    ("z\n1\n2\n", ["row 1", "the header has 1 column"]),
    ("a,b\n1,2\n3,4\x00\n", ["row 3", "NUL bytes"]),
    ("a,b\n1,2\n" + "9" * 200_000 + ",1\n", ["row 3", "not readable as CSV"]),
]


@pytest.mark.parametrize("text,parts", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_files_raise_data_error(tmp_path, text, parts):
    p = write(tmp_path, text)
    with pytest.raises(DataError) as e:
        data.load_csv(p)
    msg = assert_one_line_error(e, str(p), *parts)
    assert len(msg) < 300  # one readable line, even for a 200 kB cell


def test_float32_overflow_names_the_cell(tmp_path):
    p = write(tmp_path, "a,b\n1,2\n3,-1e39\n")
    with pytest.raises(DataError) as e:
        data.load_csv(p)
    assert_one_line_error(e, str(p), "row 3", "column 'b'", "overflows float32")
    assert data.load_csv(p, dtype="float64").z[1, 0] == -1e39


@pytest.mark.parametrize("raw,parts", [
    (b"a,b\n1,2\n3,\xff\xfe\n", ["row 3", "not UTF-8", "0xff", "offset 10"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["row 1", "not UTF-8", "0x89"]),
    (b"a,b\n\x00\x00\x00\x00\n", ["row 2", "NUL bytes"]),
    (bytes(range(256)), ["not UTF-8"]),
])
def test_binary_garbage(tmp_path, raw, parts):
    p = write(tmp_path, raw)
    with pytest.raises(DataError) as e:
        data.load_csv(p)
    assert_one_line_error(e, str(p), *parts)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError) as e:
        data.load(str(tmp_path / "missing.csv"))
    assert_one_line_error(e, str(tmp_path / "missing.csv"), "no such file")
    with pytest.raises(DataError) as e:
        data.load(str(tmp_path))
    assert_one_line_error(e, str(tmp_path), "is a directory")


@pytest.mark.parametrize("kwargs,parts", [
    ({"target": "w"}, ["target column 'w' is not in the header (a, b, c)"]),
    ({"target": 3}, ["target column 3 is out of range"]),
    ({"target": "-4"}, ["target column -4 is out of range"]),
    ({"features": ["a", "q"]}, ["feature column 'q' is not in the header"]),
    ({"features": []}, ["no feature columns chosen"]),
    ({"target": "a", "features": ["a", "b"]}, ["column 'a' is both a feature and the target"]),
    ({"features": ["a", 0]}, ["a feature column is chosen twice"]),
])
def test_bad_column_choices(tmp_path, kwargs, parts):
    p = write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError) as e:
        data.load_csv(p, **kwargs)
    assert_one_line_error(e, str(p), *parts)


def test_bad_dtype():
    with pytest.raises(DataError, match="^dtype: unknown dtype 'float16'"):
        data.load(None, dtype="float16")


def test_load_features(tmp_path):
    p = write(tmp_path, "y,x,extra\n2,1,0\n4,3,0\n")
    np.testing.assert_array_equal(data.load_features(p, ["x", "y"], "float64"), [[1, 2], [3, 4]])
    p2 = write(tmp_path, "u,v\n1,2\n", "two.csv")
    np.testing.assert_array_equal(data.load_features(p2, ["x", "y"]), [[1, 2]])
    with pytest.raises(DataError) as e:
        data.load_features(p, ["x", "q"])
    assert_one_line_error(e, str(p), "needs the columns x, q")
    with pytest.raises(DataError) as e:
        data.load_features(write(tmp_path, "x,y\n", "h.csv"), ["x", "y"])
    assert_one_line_error(e, "h.csv", "no data rows")


# --- properties: any text either loads correctly or raises DataError, never anything else ----------

FAST = settings(max_examples=150, deadline=None, derandomize=True)


def loads_or_data_error(text: str):
    try:
        ds = data.parse_csv(text, "t.csv", dtype="float64")
    except DataError as e:
        assert "\n" not in str(e) and str(e).startswith("t.csv")
        return None
    # Whatever loaded is a usable data set.
    assert ds.rows >= 2 and ds.x.shape == (ds.rows, len(ds.features)) and ds.z.shape == (ds.rows, 1)
    assert np.all(np.isfinite(ds.x)) and np.all(np.isfinite(ds.z))
    return ds


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_loads_or_raises_data_error(text):
    loads_or_data_error(text)


@FAST
@given(st.text(alphabet="0123456789.,-+eE \n\r\"abxnaNiIfF_\ufeff\x00\t;", max_size=120))
def test_csv_like_text_loads_or_raises_data_error(text):
    loads_or_data_error(text)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_load_or_raise_data_error(raw):
    fd, name = tempfile.mkstemp(suffix=".csv")
    try:
        os.write(fd, raw)
        os.close(fd)
        try:
            ds = data.load_csv(name, dtype="float64")
        except DataError as e:
            assert "\n" not in str(e) and str(e).startswith(name)
        else:
            assert ds.rows >= 2
    finally:
        os.unlink(name)


NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufeff")
names = st.text(NAME_CHARS, min_size=1, max_size=8).filter(lambda s: s == s.strip() and s)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def tables(draw):
    """A random well-formed CSV: unique header names (quoted by the csv module when they need it),
    finite float64 values written exactly (repr round-trips), optional BOM, any line ending,
    blank lines and padding. Returns (text, header, values, physical line of each data row)."""
    n_cols = draw(st.integers(2, 5))
    header = draw(st.lists(names, min_size=n_cols, max_size=n_cols, unique=True))
    n_rows = draw(st.integers(2, 8))
    values = np.array(draw(st.lists(st.lists(finite, min_size=n_cols, max_size=n_cols),
                                    min_size=n_rows, max_size=n_rows)), np.float64)
    pad = draw(st.sampled_from(["", " ", "  "]))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(header)
    lines = [buf.getvalue()]
    data_lines = []
    for row in values:
        for _ in range(draw(st.integers(0, 1))):
            lines.append(draw(st.sampled_from(["", " ", ",,"[: n_cols - 1]])))  # blank-looking lines
        lines.append(",".join(f"{pad}{float(v)!r}{pad}" for v in row))
        data_lines.append(len(lines))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ("\ufeff" if draw(st.booleans()) else "") + eol.join(lines) + (eol if draw(st.booleans()) else "")
    return text, header, values, data_lines


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.data())
def test_structured_csv_loads_exactly(table, draw):
    text, header, values, _ = table
    t = draw.draw(st.integers(0, len(header) - 1))
    ds = data.parse_csv(text, "t.csv", target=header[t], dtype="float64")
    assert ds.targets == (header[t],)
    assert ds.features == tuple(h for i, h in enumerate(header) if i != t)
    np.testing.assert_array_equal(ds.z[:, 0], values[:, t])
    np.testing.assert_array_equal(ds.x, np.delete(values, t, axis=1))
    # float32: the same numbers rounded, or DataError when one is beyond float32's range.
    if np.all(np.abs(values) <= np.finfo(np.float32).max):
        np.testing.assert_array_equal(data.parse_csv(text, "t.csv", dtype="float32").x,
                                      values[:, :-1].astype(np.float32))
    else:
        with pytest.raises(DataError, match="overflows float32"):
            data.parse_csv(text, "t.csv", dtype="float32")


DEFECTS = {"word": ("abc", "is not a number"), "empty": ("", "is not a number"),
           "nan": ("nan", "is not finite"), "inf": ("-inf", "is not finite"),
           "huge": ("1e400", "is not finite"), "underscore": ("1_0", "not a plain decimal number")}


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.data())
def test_structured_csv_defect_is_located(table, draw):
    """One defect put into a random table is reported at its physical line and column."""
    text, header, values, data_lines = table
    bom = text.startswith("\ufeff")
    eol = "\r\n" if "\r\n" in text else ("\r" if "\r" in text else "\n")
    lines = text.lstrip("\ufeff").split(eol)
    r = draw.draw(st.integers(0, len(data_lines) - 1))
    line = data_lines[r]
    cells = lines[line - 1].split(",")
    kind = draw.draw(st.sampled_from([*DEFECTS, "short", "long"]))
    if kind == "short":
        cells = cells[:-1]
        parts = [f"row {line}:", f"has {len(cells)} fields"]
    elif kind == "long":
        cells = [*cells, "1"]
        parts = [f"row {line}:", f"has {len(cells)} fields"]
    else:
        c = draw.draw(st.integers(0, len(cells) - 1))
        cells[c] = DEFECTS[kind][0]
        parts = [f"row {line}, column {header[c]!r}", DEFECTS[kind][1]]
    lines[line - 1] = ",".join(cells)
    bad = ("\ufeff" if bom else "") + eol.join(lines)
    with pytest.raises(DataError) as e:
        data.parse_csv(bad, "t.csv", dtype="float64")
    assert_one_line_error(e, "t.csv: ", *parts)


# -- image data (core/data/images.py) and bad input under --task classify / --net -------------------

def _npz(tmp_path: Path, name: str = "i.npz", **arrays) -> Path:
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_npz_images_and_labels_load(tmp_path):
    from tfscope.core.data import images

    x = np.arange(4 * 3 * 3 * 2, dtype=np.float64).reshape(4, 3, 3, 2)
    p = _npz(tmp_path, x=x, y=np.array(["cat", "dog", "cat", "cat"]))
    d = data.load(str(p), task="classify")
    assert d.x.shape == (4, 3, 3, 2) and d.x.dtype == np.float32 and np.array_equal(d.x, x)
    assert d.classes == ("cat", "dog") and d.z[:, 0].tolist() == [0, 1, 0, 0]
    r = images.load_npz(_npz(tmp_path, "r.npz", x=x[:, :, 0, 0], y=np.arange(4.0)), "float64")
    assert r.x.shape == (4, 3) and r.z.tolist() == [[0.0], [1.0], [2.0], [3.0]] and not r.classes


NPZ_BAD = [
    (dict(y=np.zeros(4)), "classify", ["i.npz: no array 'x' (the file has: y)"]),
    (dict(x=np.zeros((4, 3, 3, 1))), "classify", ["i.npz: no array 'y' (the file has: x)"]),
    (dict(x=np.zeros((4, 3, 3, 1)), y=np.zeros(5)), "classify", ["i.npz: x has 4 rows but y has 5"]),
    (dict(x=np.zeros((4, 3, 3)), y=np.arange(4) % 2), "classify",
     ["i.npz: x has shape (4, 3, 3); images need rank 4 (N, H, W, C)", "add a channel axis"]),
    (dict(x=np.zeros((4, 2)), y=np.ones(4)), "classify", ["i.npz: y holds one class ('1')"]),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0.5, 1])), "classify", ["i.npz: y[2]: 0.5 is not a class label"]),
    (dict(x=np.zeros((3, 2)), y=np.array([0, 1, 2])), "classify", ["i.npz: y has 3 classes in 3 rows"]),
    (dict(x=np.array([[0.0, np.nan], [1, 1], [2, 2]]), y=np.array([0, 1, 0])), "classify",
     ["i.npz: x[0, 1] is not finite"]),
]


@pytest.mark.parametrize("arrays,task,parts", NPZ_BAD, ids=[f"npz{i}" for i in range(len(NPZ_BAD))])
def test_bad_npz_is_one_line_naming_the_array(tmp_path, arrays, task, parts):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(DataError) as e:
        data.load(str(p), task=task)
    assert_one_line_error(e, str(p), *parts)


def test_not_an_npz_is_one_line(tmp_path):
    p = write(tmp_path, "a,b\n1,2\n", "fake.npz")
    with pytest.raises(DataError) as e:
        data.load(str(p))
    assert_one_line_error(e, str(p), "not a readable npz file")


def test_bad_classify_and_net_input_exit_2_before_tensorflow_and_touch_nothing(tmp_path):
    """Through the command line, in one process: each case is one line, status 2, TensorFlow never
    imported, and an existing run directory left as it was."""
    import subprocess
    import sys

    one = write(tmp_path, "a,c\n1,x\n2,x\n3,x\n", "one.csv")
    flt = write(tmp_path, "a,c\n1,0\n2,0.5\n3,1\n", "float.csv")
    many = write(tmp_path, "a,c\n1,p\n2,q\n", "many.csv")
    noy = _npz(tmp_path, "noy.npz", x=np.zeros((4, 8, 8, 1)))
    short = _npz(tmp_path, "short.npz", x=np.zeros((4, 8, 8, 1)), y=np.arange(3))
    rank = _npz(tmp_path, "rank.npz", x=np.zeros((4, 8, 8)), y=np.arange(4) % 2)
    small = _npz(tmp_path, "small.npz", x=np.zeros((4, 4, 4, 1)), y=np.arange(4) % 2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}", encoding="utf-8")
    cases = [
        (["--data", str(one), "--task", "classify"], f"{one}: column 'c' holds one class ('x')"),
        (["--data", str(flt), "--task", "classify"], f"{flt}: row 3, column 'c': 0.5 is not a class label"),
        (["--data", str(many), "--task", "classify"], f"{many}: column 'c' has 2 classes in 2 rows"),
        (["--data", str(noy), "--task", "classify"], f"{noy}: no array 'y'"),
        (["--data", str(short), "--task", "classify"], f"{short}: x has 4 rows but y has 3"),
        (["--data", str(rank), "--task", "classify"], f"{rank}: x has shape (4, 8, 8); images need rank 4"),
        (["--data", str(small), "--task", "classify", "--net", "conv:4x3:valid,conv:4x3:valid,flatten,dense"],
         "net: layer 2 'conv:4x3:valid': on a 2x2 input gives a 0x0 output (below 1)"),
        (["--task", "classify", "--net", "conv:4x3,bogus,dense"], "net: layer 2 'bogus': unknown layer"),
        (["--task", "classify", "--loss", "mse"], "loss: mse does not fit task classify"),
        (["--val-fraction", "1.5"], "val fraction: must be in [0, 1), got 1.5"),
    ]
    code = f"""
import sys, contextlib, io
from tfscope.cli import main
for args, want in {[(a, w) for a, w in cases]!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = main(["train", "--out", {str(run)!r}, "--force", *args])
        except SystemExit as e:
            status = e.code
    lines = err.getvalue().strip().splitlines()
    assert status == 2, (args, status, lines)
    assert len(lines) == 1 and want in lines[0], (want, lines)
assert 'tensorflow' not in sys.modules, 'tensorflow imported'
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert [p.name for p in run.iterdir()] == ["config.json"]  # --force replaced nothing
    assert (run / "config.json").read_text(encoding="utf-8") == "{}"
