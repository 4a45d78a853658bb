"""Errors before work: every input of an AOI run is checked before any inference, and refused in
one line naming it and the cause; a refusal is not retried; files keep the user's permissions.

The command line's checks are tested with a flow that fails the test if it is ever started.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
import torch
from prefect import flow
from prefect.states import Failed
from records import run_record
from writer import CRS, aoi_of, buildings_of

import footprints.flows.aoi
from footprints.cli import main
from footprints.geo.aoi import read_aoi
from footprints.geo.errors import InputError, StoreError
from footprints.geo.files import atomic_file
from footprints.geo.geopackage import COLUMNS, write_buildings
from footprints.geo.layouts import TileSet, find_tiles
from footprints.geo.stores import S3Options, TileStore, open_store
from footprints.geo.synth import write_scene
from footprints.models.registry import WEIGHTS
from footprints.tasks.inference import plan_run
from footprints.tasks.preflight import check_run_inputs, retry_unless_input_error

# The synthetic scene's one tile, seed 1: its lower half, in longitude and latitude.
BBOX = "-115.2,36.1483,-115.1979,36.15"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic tile."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(open_store(root).write_bytes, 1, 1)
    return root


@pytest.fixture
def no_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AOI flow, replaced by one that fails the test: a refusal must come before it starts."""

    def started(**_: object) -> None:
        raise AssertionError("the flow started although an input is bad")

    monkeypatch.setattr(footprints.flows.aoi, "aoi_flow", started)


def run_cli(scene: Path, out: Path | str, *extra: str) -> int:
    """``footprints run`` over the scene; its exit code."""
    return main(["-q", "run", f"--aoi={BBOX}", "--source", str(scene), "--out", str(out), *extra])


def refused(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """The one line of a refusal, checked to be one line, without a traceback or torch's advice."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("footprints: error: ")
    assert "Traceback" not in err
    assert "weights_only" not in err
    return lines[0].removeprefix("footprints: error: ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--chip-size", "0"], "chip size 0: must be from 32 to 4096 pixels"),
        (["--chip-size", "-64"], "chip size -64: must be from 32 to 4096 pixels"),
        (["--chip-size", "100000"], "chip size 100000: must be from 32 to 4096 pixels"),
        (
            ["--chip-size", "4096", "--batch-size", "4"],
            "batch size 4 of 4096 px chips: 64 Mpx per model call, over the 16 Mpx",
        ),
        (["--batch-size", "1000"], "batch size 1000 of 1024 px chips: 1000 Mpx per model call"),
        (["--batch-size", "0"], "batch size 0: must be at least 1 chip per model call"),
        (["--overlap", "1024"], "overlap 1024: must be at least 0 and less than the chip size (1024)"),
        (["--overlap", "-1"], "overlap -1: must be at least 0 and less than the chip size"),
        (["--min-area", "-1"], "minimum area -1.0: must be a finite number, 0 or more"),
        (["--min-area", "nan"], "minimum area nan: must be a finite number, 0 or more"),
        (["--simplify", "inf"], "simplification tolerance inf: must be a finite number"),
        (["--workers", "0"], "workers 0: must be at least 1"),
        (["--crs", "EPSG:99999"], "output CRS 'EPSG:99999': not a CRS pyproj knows"),
        (["--crs", "EPSG:5703"], "output CRS 'EPSG:5703': is neither geographic nor projected"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_the_flow(
    scene: Path,
    tmp_path: Path,
    no_flow: None,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    assert refused(capsys, run_cli(scene, tmp_path / "out.gpkg", *options)).startswith(message)
    assert not (tmp_path / "out.gpkg").exists()


OURS: dict[str, list[object]] = {c: [1] for c in COLUMNS}


def _other_tools_gpkg(
    path: Path,
    layer: str = "buildings",
    geometry: shapely.Geometry | None = None,
    columns: dict[str, list[object]] | None = None,
) -> Path:
    """A GeoPackage written by another tool (pyogrio here), appended to when ``path`` exists."""
    frame = gpd.GeoDataFrame(
        columns or {"name": ["a"]}, geometry=[geometry or shapely.box(0, 0, 1, 1)], crs=4326
    )
    pyogrio.write_dataframe(frame, path, layer=layer, driver="GPKG", append=path.exists())
    return path


def test_outputs_that_cannot_be_written_or_are_not_ours_are_refused(
    scene: Path, tmp_path: Path, no_flow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a folder"
    folder.mkdir()
    a_file = tmp_path / "a file"
    a_file.write_text("x")
    text = tmp_path / "text.gpkg"
    text.write_text("hello")
    read_only = _other_tools_gpkg(tmp_path / "read-only.gpkg", columns=OURS)
    read_only.chmod(0o444)
    with_roads = _other_tools_gpkg(tmp_path / "with-roads.gpkg", columns=OURS)
    _other_tools_gpkg(with_roads, layer="roads")
    utm = tmp_path / "utm.gpkg"
    pyogrio.write_dataframe(
        gpd.GeoDataFrame(OURS, geometry=[shapely.box(0, 0, 1, 1)], crs=32611), utm, layer="buildings"
    )
    cases = {
        folder: "is a folder; name the GeoPackage to write in it",
        tmp_path / "buildings.geojson": "the output is a GeoPackage: give it the .gpkg extension",
        a_file / "out.gpkg": f"cannot be created: {a_file} is a file, not a folder",
        "s3://bucket/": "an S3 output is a GeoPackage object: s3://bucket/key.gpkg",
        "s3://bucket/out.geojson": "an S3 output is a GeoPackage object: s3://bucket/key.gpkg",
        "gs://bucket/out.gpkg": "the output must be a GeoPackage file or an s3://bucket/key.gpkg object",
        text: "exists but is not a readable GeoPackage (",
        read_only: "is read-only; make it writable (chmod u+w) or name another output",
        _other_tools_gpkg(tmp_path / "columns.gpkg"): (
            "has a 'buildings' layer of another tool (Polygon geometries, without the columns id, score,"
        ),
        _other_tools_gpkg(tmp_path / "points.gpkg", geometry=shapely.Point(0, 0), columns=OURS): (
            "has a 'buildings' layer of another tool (Point geometries); refusing to overwrite it"
        ),
        _other_tools_gpkg(tmp_path / "roads.gpkg", layer="roads"): (
            "exists but has no 'buildings' layer; refusing to overwrite it"
        ),
        with_roads: "holds layers of another tool (roads) that a run would drop; refusing to overwrite it",
        utm: "holds buildings in EPSG:32611, this run writes EPSG:4326",
    }
    for out, cause in cases.items():
        before = Path(out).read_bytes() if Path(out).is_file() else None
        assert refused(capsys, run_cli(scene, out)).startswith(f"{out}: {cause}")
        assert (Path(out).read_bytes() if Path(out).is_file() else None) == before


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` made one this process cannot create files in (immutable, for root), or a skip."""
    folder.chmod(0o555)
    immutable = False
    try:
        if _can_create_in(folder):  # root: the mode bits do not stop it, an immutable folder does
            chattr = subprocess.run(["chattr", "+i", str(folder)], check=False, capture_output=True)
            if chattr.returncode or _can_create_in(folder):
                pytest.skip("cannot make a folder unwritable here")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_an_output_in_a_folder_nobody_may_write_to_is_refused(
    scene: Path, tmp_path: Path, no_flow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with unwritable(folder):
        line = refused(capsys, run_cli(scene, folder / "new" / "out.gpkg"))
        synth = refused(capsys, main(["-q", "synth", "--out", str(folder / "scene")]))
    assert synth.startswith(f"{folder / 'scene'}: cannot be written: creating a file in {folder} fails (")
    assert line.startswith(
        f"{folder / 'new' / 'out.gpkg'}: cannot be written: creating a file in {folder} fails ("
    )


class Payload:
    """A pickle that would leave a file behind if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_checkpoints_that_are_not_ones_are_refused_by_path_before_the_flow(
    scene: Path, tmp_path: Path, no_flow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = WEIGHTS / "vec2instance-default.pt"
    marker = tmp_path / "the pickle ran"
    files: dict[str, bytes | object] = {
        "text.pt": b"hello world\n",
        "empty.pt": b"",
        "truncated.pt": shipped.read_bytes()[:100_000],
        "pickle.pt": pickle.dumps({"method": "vec2instance", "config": {}, "state_dict": Payload(marker)}),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)  # type: ignore[arg-type]
    torch.save(
        {"method": "vec2instance", "config": {}, "state_dict": {"w": torch.zeros(3)}}, tmp_path / "w.pt"
    )
    torch.save({"method": "threshold", "config": {}, "state_dict": {}}, tmp_path / "threshold.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    cases = {
        ("text.pt",): "not a readable footprints checkpoint (12 bytes that are neither a torch archive nor",
        ("empty.pt",): "not a readable footprints checkpoint (an empty file)",
        (
            "truncated.pt",
        ): "not a readable footprints checkpoint (a torch archive of 100000 bytes that cannot be read",
        (
            "pickle.pt",
        ): "not a readable footprints checkpoint (it holds Python objects, not only tensors and plain",
        ("w.pt",): "weights do not fit the vec2instance model's 124 tensors: 124 missing (e.g. ",
        ("threshold.pt", "vec2instance"): "is a threshold checkpoint, not vec2instance",
        ("list.pt",): "not a footprints checkpoint (it holds a list, not a dict)",
        ("missing.pt",): "no such checkpoint file",
        (".",): "is a folder, not a checkpoint file",
    }
    for (name, *method), cause in cases.items():
        path = tmp_path / name
        extra = ["--method", method[0]] if method else []
        code = run_cli(scene, tmp_path / "out.gpkg", "--model", str(path), *extra)
        assert refused(capsys, code).startswith(f"{path}: {cause}")
    assert not marker.exists()


def test_a_missing_source_or_bad_aoi_is_refused_before_the_flow(
    scene: Path, tmp_path: Path, no_flow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["-q", "run", f"--aoi={BBOX}", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o.gpkg")]
    )
    assert refused(capsys, code) == f"{tmp_path / 'none'}: no such folder of tiles"
    code = main(["-q", "run", "--aoi=1,2,3", "--source", str(scene), "--out", str(tmp_path / "o.gpkg")])
    assert refused(capsys, code).startswith("1,2,3: neither a bbox")


def test_a_dask_scheduler_that_does_not_answer_is_refused_before_the_flow(
    scene: Path, tmp_path: Path, no_flow: None, capsys: pytest.CaptureFixture[str], free_port: int
) -> None:
    out = tmp_path / "out.gpkg"
    code = run_cli(scene, out, "--dask-address", f"tcp://127.0.0.1:{free_port}")
    assert refused(capsys, code).startswith(
        f"Dask scheduler tcp://127.0.0.1:{free_port}: cannot be reached ("
    )
    code = run_cli(scene, out, "--dask-address", "tcp://127.0.0.1:port")
    assert refused(capsys, code).startswith("Dask scheduler tcp://127.0.0.1:port: not a scheduler address")


def test_good_inputs_pass(scene: Path, tmp_path: Path) -> None:
    check_run_inputs(BBOX, str(scene), tmp_path / "new" / "out.gpkg")
    check_run_inputs(BBOX, str(scene), tmp_path / "out.gpkg", method="threshold", chip_size=32, overlap=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the folder probe leaves nothing


def test_bad_input_is_not_retried_other_failures_are() -> None:
    assert not retry_unless_input_error(None, None, Failed(data=InputError("x.tif", "no CRS")))  # type: ignore[arg-type]
    assert retry_unless_input_error(None, None, Failed(data=StoreError("s3://b", "cannot reach")))  # type: ignore[arg-type]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_synth_writes_files_with_the_users_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for mask, expected in ((0o022, 0o644), (0o027, 0o640)):
        out = tmp_path / f"umask-{mask:o}"
        with umask(mask):
            assert main(["-q", "synth", "--out", str(out), "--tiles", "1"]) == 0
        modes = {_mode(p) for p in out.rglob("*") if p.is_file()}
        assert modes == {expected}
    for options, message in (
        (["--tiles", "0"], "--tiles 0: a scene has 1 to 10000 tiles"),
        (["--tiles", "100000000"], "--tiles 100000000: a scene has 1 to 10000 tiles"),
        (["--seed", "-1"], "--seed -1: must be 0 or more"),
    ):
        assert refused(capsys, main(["-q", "synth", "--out", str(tmp_path / "none"), *options])) == message
    a_file = tmp_path / "a file"
    a_file.write_text("x")
    for out, message in (
        (a_file, f"{a_file}: exists and is not a folder"),
        (a_file / "sub", f"{a_file / 'sub'}: cannot be created: {a_file} is a file, not a folder"),
    ):
        assert refused(capsys, main(["-q", "synth", "--out", str(out)])) == message
    assert not (tmp_path / "none").exists()


def test_replacing_a_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "tile.tif"
    target.write_bytes(b"old")
    target.chmod(0o664)
    with umask(0o077), atomic_file(target) as f:
        f.write(b"new")
    assert (target.read_bytes(), _mode(target)) == (b"new", 0o664)

    gpkg = tmp_path / "buildings.gpkg"
    for run in range(2):
        aoi = aoi_of(0.0, run)
        with umask(0o022):
            write_buildings(gpkg, buildings_of(aoi, f"r{run}"), aoi, run_record(gpkg, f"r{run}", CRS))
        assert _mode(gpkg) == (0o644 if run == 0 else 0o660)
        gpkg.chmod(0o660)


@pytest.mark.slow
def test_the_flow_refuses_bad_input_before_any_task(
    prefect_api: str, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment's run (the flow called without the command line) is refused up front too."""

    def started(*_: object, **__: object) -> None:
        raise AssertionError("a task started although an input is bad")

    monkeypatch.setattr(footprints.flows.aoi, "load_aoi", started)
    points = _other_tools_gpkg(tmp_path / "points.gpkg", geometry=shapely.Point(0, 0), columns=OURS)
    with pytest.raises(InputError, match=r"chip size 0: must be from 32 to 4096 pixels"):
        footprints.flows.aoi.aoi_flow(
            BBOX, str(scene), str(tmp_path / "out.gpkg"), chip_size=0, progress=False
        )
    with pytest.raises(InputError, match=rf"{points}: has a 'buildings' layer of another tool \(Point"):
        footprints.flows.aoi.aoi_flow(BBOX, str(scene), str(points), progress=False)


@pytest.mark.slow
def test_planning_is_not_retried_on_bad_input(
    prefect_api: str, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AOI no tile covers fails the same on every try: planning gives up at once."""
    tries: list[TileStore] = []

    def counted(store: TileStore) -> TileSet:
        tries.append(store)
        return find_tiles(store)

    monkeypatch.setattr("footprints.tasks.inference.find_tiles", counted)

    @flow
    def plan_only() -> None:
        plan_run(read_aoi("10,10,10.01,10.01"), str(scene), S3Options(), 512, 128)

    with pytest.raises(InputError, match=r"no tile of the source covers the AOI"):
        plan_only()
    assert len(tries) == 1
